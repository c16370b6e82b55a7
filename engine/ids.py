"""Deterministic alert ids: the same rule, group and chain of events give the same id, so a replay
never duplicates an alert. Its own module (hashlib and json only) so the rule engine names its results
without importing the pydantic event model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any


def deterministic_alert_id(rule_id: str, group: Mapping[str, Any], event_ids: Iterable[str]) -> str:
    """Same rule, group and chain -> same id, so replays never duplicate an alert."""
    h = hashlib.sha256()
    h.update(rule_id.encode())
    h.update(b"\x00")
    h.update(json.dumps(dict(group), sort_keys=True, default=str).encode())
    h.update("".join(["\x00" + str(eid) for eid in event_ids]).encode())  # one update: the same bytes
    return "alert-" + h.hexdigest()[:32]
