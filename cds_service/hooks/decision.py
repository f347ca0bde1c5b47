"""The ordering decision a hook call is about, for governance counting.

A decision is the draft order(s) in one encounter that the advice is about: on order-select
the selected drafts, on order-sign every draft; of those, the opioid drafts when there are
any (so selecting oxycodone and later signing oxycodone with an NSAID is one decision). A
draft is identified by its resource id, or by a digest of its content when the EHR gives no
id (fields that change between select and sign, such as status or meta, left out). These
identities stay in the process: the card log stores keyed HMACs of them (ops.after_hook).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cds_service.knowledge.classifier import OPIOID

ORDER_HOOKS = frozenset({"order-select", "order-sign"})
_VOLATILE = frozenset({"id", "meta", "text", "status", "authoredOn", "extension"})


@dataclass(frozen=True)
class DraftDecision:
    encounter_id: str
    chosen: tuple[str, ...]  # identities of the drafts the decision is about, sorted
    drafts: tuple[str, ...]  # identities of every draft in focus, sorted
    opioid: bool
    classes: tuple[str, ...]  # drug classes of the drafts in focus, sorted


def draft_identity(resource: Mapping[str, Any]) -> str:
    """The draft's id, else a digest of its stable content."""
    draft_id = resource.get("id")
    kind = resource.get("resourceType")
    if isinstance(draft_id, str) and draft_id:
        return f"{kind if isinstance(kind, str) else ''}/{draft_id}"[:200]
    content = {k: v for k, v in resource.items() if k not in _VOLATILE}
    try:
        text = json.dumps(content, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(sorted(content))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def order_decision(
    hook: str, encounter_id: str, focus_orders: Sequence[Any], drafts: Sequence[Any]
) -> DraftDecision | None:
    """The decision of an order hook call (None for other hooks or without drafts).
    `drafts` are the facts' monitored-class drafts (MedicationUse), `focus_orders` the raw
    draft resources the advice is about."""
    if hook not in ORDER_HOOKS:
        return None
    in_focus = [d for d in drafts if d.in_focus]
    opioids = [d for d in in_focus if d.has(OPIOID)]
    every = sorted(
        {draft_identity(o) for o in focus_orders if isinstance(o, dict)}
        | {draft_identity(d.resource) for d in in_focus}
    )
    chosen = sorted({draft_identity(d.resource) for d in opioids}) or every
    if not chosen:
        return None
    classes = sorted({c for d in in_focus for c in d.classification.classes})
    return DraftDecision(encounter_id, tuple(chosen), tuple(every), bool(opioids), tuple(classes))
