"""Render the cards a demo patient gets as an EHR would show them, and screenshot them.

    .venv/bin/python scripts/card_screenshot.py [--out docs/card.png] [--demo demo-1-...json]

The cards come from the service itself (create_app + the engine, offline, dates relative to
today); their markdown (paragraphs, **bold**, "- " lists, the only markdown cards use) is
turned into HTML here, and Playwright drives Debian's Chromium (/usr/bin/chromium, as the
browser tests do; no browser is downloaded) to take the picture used in README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "fixtures" / "fhir" / "demo"
CHROMIUM = "/usr/bin/chromium"
COLOURS = {"critical": "#b3261e", "warning": "#c77700", "info": "#1d5fa8"}


def cards_for(demo: str) -> list[dict[str, Any]]:
    from cds_service import create_app
    from cds_service.config import Config
    from cds_service.hooks.bundle_request import request_from_bundle, resolve_relative_dates

    hook = json.loads((DEMO / "expected.json").read_text("utf-8"))[demo]["hook"]
    bundle = json.loads((DEMO / demo).read_text("utf-8"))
    today = dt.datetime.now(dt.UTC).date()
    body = request_from_bundle(resolve_relative_dates(bundle, today), hook)
    app = create_app(
        Config(today=today.isoformat(), database_url="sqlite://", card_log=False),
    )
    result = app.extensions["cds_engine"].evaluate(f"opioid-lbp-{hook}", body)
    app.extensions["cds_engine"].close()
    cards: list[dict[str, Any]] = result.body["cards"]
    return cards


def markdown_html(text: str) -> str:
    """The card markdown subset as HTML: paragraphs, bullet lists, **bold**."""
    out = []
    for block in text.split("\n\n"):
        lines = block.split("\n")
        if all(line.startswith("- ") for line in lines):
            items = "".join(f"<li>{_inline(line[2:])}</li>" for line in lines)
            out.append(f"<ul>{items}</ul>")
        else:
            out.append(f"<p>{'<br>'.join(_inline(line) for line in lines)}</p>")
    return "".join(out)


def _inline(text: str) -> str:
    escaped = html.escape(text.replace("\\", ""))
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)


def page(cards: list[dict[str, Any]]) -> str:
    parts = []
    for card in cards:
        colour = COLOURS.get(card["indicator"], "#555")
        buttons = "".join(
            f"<button>{html.escape(s['label'])}</button>" for s in card.get("suggestions", [])
        )
        parts.append(
            f'<section style="border-left:6px solid {colour}">'
            f'<div class="ind" style="color:{colour}">{html.escape(card["indicator"])}</div>'
            f"<h2>{html.escape(card['summary'])}</h2>"
            f"{markdown_html(card.get('detail', ''))}"
            f'<div class="buttons">{buttons}</div>'
            f'<div class="src">Source: {html.escape(card["source"]["label"])}</div>'
            "</section>"
        )
    style = (
        "body{font:14px/1.45 system-ui,sans-serif;background:#f3f4f6;margin:0;padding:16px;"
        "width:860px}section{background:#fff;margin:0 0 14px;padding:12px 16px;"
        "border-radius:4px;box-shadow:0 1px 3px #0002}h2{font-size:16px;margin:2px 0 8px}"
        ".ind{font-size:11px;text-transform:uppercase;font-weight:700;letter-spacing:.05em}"
        "ul{margin:4px 0 8px;padding-left:20px}p{margin:6px 0}button{margin:6px 8px 0 0;"
        "padding:5px 10px;border:1px solid #1d5fa8;background:#eef4fb;color:#1d5fa8;"
        "border-radius:3px;font:inherit}.src{color:#666;font-size:12px;margin-top:8px}"
    )
    return f"<!doctype html><html><head><style>{style}</style></head><body>{''.join(parts)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "card.png"))
    parser.add_argument("--demo", default="demo-1-chronic-lbp-oxycodone-with-alprazolam.json")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    document = page(cards_for(args.demo))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        tab = browser.new_page(viewport={"width": 892, "height": 400})
        tab.set_content(document)
        tab.screenshot(path=args.out, full_page=True)
        browser.close()
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
