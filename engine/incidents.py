"""An alert is one incident: suppression and the alert lifecycle.

A result of the same rule and group within the suppression window of an alert's ``last_seen``
updates that alert (``last_seen``, ``count``, chain, ``occurrences``, ``updated``) instead of raising
a new one, as Elastic's alert suppression does; the update keeps the alert's id, so sinks receive it
as an update of the same object (STIX ``modified``, ECS by ``_id``, syslog with the same external id).
A detection rule's alert is grouped by the ``suppress_by`` fields of its event; a correlation's by its
group-by values. A risk alert about an entity already named by an open incident is not a second
incident for it: the SOC already has that entity in front of it (the risk stays an observation).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from .events import ATTACKS, STAGES, Alert, AtlasTags, DetectionEvent


def group_key(group: Mapping[str, Any]) -> str:
    """A stable text key of a group (stored with the alert: the suppression look-up key)."""
    return json.dumps(dict(group), sort_keys=True, default=str, separators=(",", ":"))


def suppression_group(event: DetectionEvent, fields: Iterable[str]) -> dict[str, Any]:
    """The ``fields`` values of a detection rule's event (those it has)."""
    flat = event.flat()
    return {f: flat[f] for f in fields if flat.get(f) not in (None, "", [])}


def merge(incident: Alert, new: Alert, *, now: datetime) -> Alert | None:
    """``incident`` updated with a later result ``new`` of its rule and group; None if ``new`` adds no
    event to it (a replay)."""
    added = [e for e in new.event_ids if e not in set(incident.event_ids)]
    if not added:
        return None
    out = incident.model_copy(deep=True)
    out.event_ids = incident.event_ids + added
    out.count = len(out.event_ids)
    out.occurrences = incident.occurrences + new.occurrences
    out.first_seen = min(incident.first_seen, new.first_seen)
    out.last_seen = max(incident.last_seen, new.last_seen)
    out.updated = now
    out.atlas = AtlasTags(tactics=_union(incident.atlas.tactics, new.atlas.tactics),
                          techniques=_union(incident.atlas.techniques, new.atlas.techniques))
    out.stages = [s for s in STAGES if s in incident.stages or s in new.stages]
    out.attacks = [a for a in ATTACKS if a in incident.attacks or a in new.attacks]
    out.accounts = sorted(set(incident.accounts) | set(new.accounts))
    out.models = sorted(set(incident.models) | set(new.models))
    if new.value is not None:
        out.value = new.value if incident.value is None else max(incident.value, new.value)
    return out


def _union(a: list[str], b: list[str]) -> list[str]:
    return a + [x for x in b if x not in a]
