"""Clinical knowledge as data: drug and condition tables, value sets, MME factors, and the
classifier that reads them. Loaded once at start-up; depends only on fhir.read."""

from __future__ import annotations

from typing import Any

from cds_service.knowledge.valuesets import ValueSets, load_valuesets

_installed: list[str] = []


def install(valuesets_dir: str | None) -> ValueSets:
    """Load the value sets in use (packaged, or replaced from valuesets_dir) and make the
    module-level CLASSIFIER and CONDITIONS use them.

    A bridge until one Knowledge object built in create_app is passed down: the singletons are
    updated in place because facts.py and the rules hold references to them."""
    from cds_service.knowledge import classifier, conditions, products

    valuesets = load_valuesets(valuesets_dir)
    if _installed and _installed[-1] == valuesets.version:
        return valuesets
    if _installed or valuesets_dir:
        _adopt(classifier.CLASSIFIER, products.load_classifier(valuesets=valuesets))
        _adopt(conditions.CONDITIONS, conditions.load_condition_sets(valuesets=valuesets))
    _installed[:] = [valuesets.version]
    return valuesets


def _adopt(target: Any, source: Any) -> None:
    target.__dict__.clear()
    target.__dict__.update(source.__dict__)
