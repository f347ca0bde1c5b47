"""The card gallery (docs/card-gallery.md) is generated from the templates and fixtures and
kept up to date; in the CDS Hooks sandbox flow the first card's first suggestion is the safer
alternative, and rendered as the sandbox renders cards (markdown to HTML) on a 1366x768 screen
the first card's summary, its first two evidence lines and its first suggestion button are
above the fold."""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path
from typing import Any

from conftest import ROOT

WIDTH, HEIGHT = 1366, 768


def _gallery_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "card_gallery", ROOT / "scripts" / "card_gallery.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GALLERY = _gallery_module()


def _sandbox_cards() -> list[dict[str, Any]]:
    engine = GALLERY._engine()
    try:
        shown, _ = GALLERY.evaluate(engine, "order-sign", GALLERY.sandbox_flow_request())
    finally:
        engine.close()
    cards: list[dict[str, Any]] = shown
    return cards


def test_the_gallery_page_is_up_to_date() -> None:
    """docs/card-gallery.md is exactly what `python scripts/card_gallery.py` generates now."""
    committed = (ROOT / "docs" / "card-gallery.md").read_text("utf-8")
    assert committed == GALLERY.gallery(), (
        "run: python scripts/card_gallery.py > docs/card-gallery.md"
    )


def test_sandbox_flow_first_suggestion_is_the_safer_alternative() -> None:
    """Oxycodone for chronic low back pain with alprazolam current: two cards, the
    co-prescription first; its first button replaces the opioid with naproxen and removing the
    draft comes last; the start card does not repeat the alternative."""
    cards = _sandbox_cards()
    assert [c["source"]["topic"]["code"] for c in cards] == [
        "opioid-benzodiazepine",
        "opioid-start-chronic-lbp",
    ]
    labels = [s["label"] for s in cards[0]["suggestions"]]
    assert labels[0] == "Replace oxycodone with naproxen 500 mg twice daily as needed"
    assert labels[-1] == "Remove the draft oxycodone order"
    assert not any("naproxen" in s["label"] for s in cards[1].get("suggestions", []))


# --- the browser test: the cards as the sandbox shows them, at 1366x768 ---------------------

PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; font: 14px/1.43 "Helvetica Neue", Helvetica, Arial, sans-serif; }}
header {{ height: 50px; background: #2b5f8a; color: #fff; padding: 0 16px; line-height: 50px; }}
.banner {{ height: 40px; border-bottom: 1px solid #ccc; padding: 0 16px; line-height: 40px; }}
main {{ display: flex; }}
.ehr {{ width: 50%; padding: 16px; box-sizing: border-box; }}
.cards {{ width: 50%; padding: 16px; box-sizing: border-box; }}
.card {{ border: 1px solid #ccc; border-left: 5px solid #e8a500; border-radius: 4px;
  padding: 12px 16px; margin-bottom: 12px; }}
.summary {{ font-size: 16px; font-weight: bold; margin-bottom: 8px; }}
.detail p {{ margin: 0 0 8px; }} .detail ul {{ margin: 0 0 8px; padding-left: 20px; }}
.source {{ color: #666; font-size: 12px; margin-bottom: 8px; }}
button {{ font: inherit; padding: 6px 12px; margin: 0 8px 8px 0; border: 1px solid #2b5f8a;
  background: #fff; color: #2b5f8a; border-radius: 4px; }}
</style></head><body>
<header>CDS Hooks Sandbox</header>
<div class="banner">Patient: Example, pt-1</div>
<main><section class="ehr"><h3>Rx View</h3><p>Medication: oxycodone 5 mg tablet</p></section>
<section class="cards">{cards}</section></main></body></html>"""


def _card_html(card: dict[str, Any], render: Any) -> str:
    buttons = "".join(
        f"<button>{html.escape(s['label'])}</button>" for s in card.get("suggestions", [])
    )
    links = "".join(
        f'<a href="#">{html.escape(link["label"])}</a> ' for link in card.get("links", [])
    )
    return (
        f'<div class="card"><div class="summary">{html.escape(card["summary"])}</div>'
        f'<div class="source">Source: {html.escape(card["source"]["label"])}</div>'
        f'<div class="detail">{render(card.get("detail", ""))}</div>'
        f"<div>{buttons}</div><div>{links}</div></div>"
    )


def test_first_card_essentials_are_above_the_fold(browser: Any, tmp_path: Path) -> None:
    """At 1366x768, the sandbox flow's first card shows its summary, its first two evidence
    lines and its first suggestion button without scrolling."""
    from markdown_it import MarkdownIt

    markdown = MarkdownIt("commonmark")
    cards = _sandbox_cards()
    page_html = PAGE.format(cards="".join(_card_html(c, markdown.render) for c in cards))
    (tmp_path / "cards.html").write_text(page_html, "utf-8")
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    page.goto((tmp_path / "cards.html").as_uri())
    first = page.locator(".card").first
    targets = {
        "summary": first.locator(".summary"),
        "evidence 1": first.locator(".detail li").nth(0),
        "evidence 2": first.locator(".detail li").nth(1),
        "first button": first.locator("button").first,
    }
    for name, locator in targets.items():
        box = locator.bounding_box()
        assert box is not None, name
        assert box["y"] >= 0 and box["y"] + box["height"] <= HEIGHT, (name, box)
    assert first.locator("button").first.inner_text().startswith("Replace oxycodone")
    page.screenshot(path=str(tmp_path / "cards.png"))
    context.close()
