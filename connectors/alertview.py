"""What every output needs to know about one alert, computed once: its chain of events, the ATLAS
tactics and techniques with names from the shipped ATLAS data, accounts, source addresses, models.

Formatters read an :class:`AlertView` instead of walking alerts and events themselves, so that every
format names the same things the same way. Names are looked up by ID in :func:`kizashi.mappings.load_atlas`
(never hard-coded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any

from kizashi.engine.events import Alert, DetectionEvent
from kizashi.mappings import load_atlas

#: Alert level -> 0..10 severity, as CEF, LEEF and ECS ``event.severity`` expect.
SEVERITY_NUMBER: dict[str, int] = {"informational": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}

ATLAS_URL = "https://atlas.mitre.org"


@dataclass(frozen=True, slots=True)
class TechniqueInfo:
    id: str
    name: str  # display name, "Parent: Child" for sub-techniques
    short_name: str
    parent: str | None
    tactics: tuple[str, ...]

    @property
    def url(self) -> str:
        return f"{ATLAS_URL}/techniques/{self.id}"


@dataclass(frozen=True, slots=True)
class TacticInfo:
    id: str
    name: str
    shortname: str

    @property
    def url(self) -> str:
        return f"{ATLAS_URL}/tactics/{self.id}"


@dataclass(frozen=True, slots=True)
class AlertView:
    """An alert with its chain resolved and its ATLAS IDs named."""

    alert: Alert
    events: tuple[DetectionEvent, ...]
    missing_event_ids: tuple[str, ...]
    techniques: tuple[TechniqueInfo, ...]
    tactics: tuple[TacticInfo, ...]
    source_ips: tuple[str, ...]
    sessions: tuple[str, ...]
    endpoints: tuple[str, ...]
    detectors: tuple[str, ...]
    max_score: float | None

    @property
    def title(self) -> str:
        r = self.alert.rule
        return r.title or r.name or r.id

    @property
    def severity_number(self) -> int:
        return SEVERITY_NUMBER[self.alert.level]

    def summary(self) -> str:
        """One human sentence: what fired, on what, by whom, which ATLAS techniques."""
        a = self.alert
        parts = [f"{self.title}: {a.count} event(s)"]
        if a.attacks:
            parts.append("attack " + "/".join(a.attacks))
        if a.models:
            parts.append("model " + ", ".join(a.models))
        if a.accounts:
            parts.append("account " + ", ".join(a.accounts))
        if self.source_ips:
            parts.append("from " + ", ".join(self.source_ips))
        if self.techniques:
            parts.append("ATLAS " + ", ".join(f"{t.id} {t.name}" for t in self.techniques))
        return "; ".join(parts)


def view(alert: Alert, events: Mapping[str, DetectionEvent]) -> AlertView:
    """Resolve ``alert``'s chain in ``events`` (missing ids are recorded, not fatal: the alert itself
    carries the unions) and name its ATLAS tactics and techniques."""
    atlas = load_atlas()
    chain = tuple(events[i] for i in alert.event_ids if i in events)
    missing = tuple(i for i in alert.event_ids if i not in events)
    techniques = []
    for tid in alert.atlas.techniques:
        t = atlas.technique(tid)
        techniques.append(TechniqueInfo(t.id, atlas.display_name(t.id), t.name, t.parent, t.tactics))
    tactics = tuple(
        TacticInfo(t.id, t.name, t.shortname) for t in (atlas.tactic(x) for x in alert.atlas.tactics)
    )
    ips = _unique(e.subject.source_ip for e in chain)
    scores = [e.score for e in chain]
    return AlertView(
        alert=alert,
        events=chain,
        missing_event_ids=missing,
        techniques=tuple(techniques),
        tactics=tactics,
        source_ips=ips,
        sessions=_unique(e.subject.session for e in chain),
        endpoints=_unique(e.target.endpoint for e in chain),
        detectors=_unique(e.detector.name for e in chain),
        max_score=max(scores) if scores else None,
    )


def views(alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> list[AlertView]:
    return [view(a, events) for a in alerts]


def _unique(values) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def is_ipv4(value: str) -> bool:
    return ip_address(value).version == 4


def epoch_ms(t: datetime) -> int:
    return int(t.astimezone(UTC).timestamp() * 1000)


def iso_z(t: datetime) -> str:
    """RFC 3339 UTC with millisecond precision and ``Z`` (what STIX and ECS expect)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def alert_document(v: AlertView) -> dict[str, Any]:
    """The alert as a JSON document for HTTP receivers (HEC, webhook): the alert itself, ATLAS names
    and a compact view of each event of its chain (evidence included; it is size-limited)."""
    doc = v.alert.to_dict()
    doc["title"] = v.title
    doc["atlas"] = {
        "tactics": [{"id": t.id, "name": t.name, "shortname": t.shortname} for t in v.tactics],
        "techniques": [{"id": t.id, "name": t.name, "parent": t.parent} for t in v.techniques],
    }
    doc["source_ips"] = list(v.source_ips)
    doc["events"] = [
        {
            "id": e.id,
            "time": iso_z(e.time),
            "detector": e.detector.name,
            "stage": e.stage,
            "attack": e.attack,
            "account": e.subject.account,
            "source_ip": e.subject.source_ip,
            "session": e.subject.session,
            "model": e.target.model,
            "score": e.score,
            "threshold": e.threshold,
            "severity": e.severity,
            "evidence": e.evidence,
        }
        for e in v.events
    ]
    if v.missing_event_ids:
        doc["missing_event_ids"] = list(v.missing_event_ids)
    return doc
