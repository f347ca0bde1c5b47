"""Card rendering's shortcuts give what the plain way gives: suggestion actions filled from
their pre-split JSON text equal the regex fill parsed back, and a value is escaped or
normalised exactly as before whether or not it takes the fast path."""

from __future__ import annotations

import json
import random
import re

from cds_service.cards import CardTemplates, _plain, escape_markdown, fill_json

VALUES = ["Patient/p-1", 'Oxy "q" \\ é \ud800', "{drug}", "", "  spaced\tout  "]


def _slow_fill(text: str, values: dict[str, str]) -> object:
    """fill_json as it was first written: a regex callback and json.loads."""
    escaped = {k: json.dumps(v)[1:-1] for k, v in values.items()}
    return json.loads(re.sub(r"\{([a-z_]+)\}", lambda m: escaped.get(m[1], m[0]), text))


def test_suggestion_actions_equal_the_filled_json_text() -> None:
    """Every shipped suggestion, with any set of value names and awkward values (quotes,
    backslashes, a lone surrogate, a placeholder as a value), gets the actions the plain way
    (regex fill of its JSON text, json.loads) gives."""
    templates = CardTemplates()
    for key, spec in templates.suggestions.items():
        text = json.dumps(spec["actions"])
        for names in [(), ("patient_id",), ("patient_id", "resource_id", "drug"), ("tbl",)]:
            for value in VALUES:
                values = {name: _plain(value) for name in names}
                built = templates._suggestion(key, values)["actions"]
                assert built == _slow_fill(text, values)
                assert json.dumps(built) == json.dumps(_slow_fill(text, values))
                assert built == fill_json(text, values)


def test_suggestion_actions_never_share_what_a_value_fills() -> None:
    """Two calls with different values give different filled strings; the template itself
    keeps its placeholders."""
    templates = CardTemplates()
    key = next(k for k, s in templates.suggestions.items() if "{patient_id}" in json.dumps(s))
    values = {"resource_id": "x", "drug": "d"}
    first = templates._suggestion(key, {"patient_id": "a", **values})["actions"]
    second = templates._suggestion(key, {"patient_id": "b", **values})["actions"]
    assert json.dumps(first) != json.dumps(second)
    assert "{patient_id}" in json.dumps(templates.suggestions[key]["actions"])


def _slow_escape(value: str) -> str:
    text = " ".join(value.split())
    linkable = "](" in text or "][" in text or "]:" in text
    pattern = r"([\\`*_\[\]<>|~])" if linkable else r"([\\`*_<>|~])"
    return re.sub(pattern, r"\\\1", text)


def test_escaping_and_normalising_match_the_plain_way() -> None:
    """Random texts of plain letters, spaces of every kind and markdown characters are
    escaped and whitespace-normalised as the regex-only way does."""
    alphabet = ["a", "B", " ", "  ", "\t", "\n", "\xa0", "\u2028", "[", "]", "(", ":", "*"]
    alphabet += ["_", "\\", "`", "<", ">", "|", "~", "é", "1"]
    chooser = random.Random(7)  # noqa: S311 - test inputs, not secrets
    for _ in range(20000):
        value = "".join(chooser.choice(alphabet) for _ in range(chooser.randint(0, 9)))
        assert escape_markdown(value) == _slow_escape(value)
        assert _plain(value) == " ".join(value.split())
