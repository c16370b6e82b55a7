"""What every output needs to know about one alert, computed once: its chain of events, the ATLAS
tactics and techniques with names from the shipped ATLAS data, accounts, source addresses, models.

Formatters read an :class:`AlertView` instead of walking alerts and events themselves, so that every
format names the same things the same way: titles, severities per receiver, ATLAS names and URLs,
times (:func:`iso_z`, :func:`epoch_ms`). Names are looked up by ID in
:func:`kizashi.mappings.load_atlas` (never hard-coded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import ip_address

from kizashi.engine.events import Alert, DetectionEvent
from kizashi.mappings import AtlasCatalog, load_atlas

ATLAS_URL = "https://atlas.mitre.org"


@dataclass(frozen=True, slots=True)
class Severity:
    """An alert level as each receiver numbers it."""

    number: int  # 0..10: CEF ``Severity``, LEEF ``sev``
    syslog: int  # RFC 5424 severity (2 critical .. 6 informational)
    score: int  # 0..100: ECS ``event.severity`` (risk-score style)


SEVERITY: dict[str, Severity] = {
    "informational": Severity(1, 6, 1),
    "low": Severity(3, 5, 21),
    "medium": Severity(5, 4, 47),
    "high": Severity(8, 3, 73),
    "critical": Severity(10, 2, 99),
}


@dataclass(frozen=True, slots=True)
class TacticInfo:
    id: str
    name: str
    shortname: str

    @property
    def url(self) -> str:
        return f"{ATLAS_URL}/tactics/{self.id}"


@dataclass(frozen=True, slots=True)
class TechniqueInfo:
    id: str
    name: str  # display name, "Parent: Child" for sub-techniques
    short_name: str
    parent: str | None
    tactics: tuple[TacticInfo, ...]

    @property
    def url(self) -> str:
        return f"{ATLAS_URL}/techniques/{self.id}"


def technique_info(technique_id: str, atlas: AtlasCatalog | None = None) -> TechniqueInfo:
    """An ATLAS technique (retired IDs resolved) with its names and tactics; ``KeyError`` if unknown."""
    atlas = atlas or load_atlas()
    t = atlas.technique(technique_id)
    return TechniqueInfo(t.id, atlas.display_name(t.id), t.name, t.parent,
                         tuple(tactic_info(x, atlas) for x in t.tactics))


def tactic_info(tactic_id: str, atlas: AtlasCatalog | None = None) -> TacticInfo:
    t = (atlas or load_atlas()).tactic(tactic_id)
    return TacticInfo(t.id, t.name, t.shortname)


@dataclass(frozen=True, slots=True)
class AlertView:
    """An alert with its chain resolved and its ATLAS IDs named."""

    alert: Alert
    events: tuple[DetectionEvent, ...]
    missing_event_ids: tuple[str, ...]
    techniques: tuple[TechniqueInfo, ...]
    tactics: tuple[TacticInfo, ...]
    source_ips: tuple[str, ...]  # in chain order
    sessions: tuple[str, ...]
    endpoints: tuple[str, ...]
    detectors: tuple[str, ...]
    max_score: float | None

    @property
    def title(self) -> str:
        r = self.alert.rule
        return r.title or r.name or r.id

    @property
    def rule_name(self) -> str:
        r = self.alert.rule
        return r.name or r.id

    @property
    def severity(self) -> Severity:
        return SEVERITY[self.alert.level]

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


def view(alert: Alert, events: Mapping[str, DetectionEvent], atlas: AtlasCatalog | None = None) -> AlertView:
    """Resolve ``alert``'s chain in ``events`` (missing ids are recorded, not fatal: the alert itself
    carries the unions) and name its ATLAS tactics and techniques (``atlas`` defaults to
    :func:`kizashi.mappings.load_atlas`; the alert's IDs were checked against it when parsed)."""
    atlas = atlas or load_atlas()
    chain = tuple(events[i] for i in alert.event_ids if i in events)
    scores = [e.score for e in chain]
    return AlertView(
        alert=alert,
        events=chain,
        missing_event_ids=tuple(i for i in alert.event_ids if i not in events),
        techniques=tuple(technique_info(t, atlas) for t in alert.atlas.techniques),
        tactics=tuple(tactic_info(t, atlas) for t in alert.atlas.tactics),
        source_ips=_unique(e.subject.source_ip for e in chain),
        sessions=_unique(e.subject.session for e in chain),
        endpoints=_unique(e.target.endpoint for e in chain),
        detectors=_unique(e.detector.name for e in chain),
        max_score=max(scores) if scores else None,
    )


def views(alerts: Sequence[Alert], events: Mapping[str, DetectionEvent],
          atlas: AtlasCatalog | None = None) -> list[AlertView]:
    return [view(a, events, atlas) for a in alerts]


def _unique(values) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def is_ipv4(value: str) -> bool:
    return ip_address(value).version == 4


def epoch_ms(t: datetime) -> int:
    return int(t.astimezone(UTC).timestamp() * 1000)


def iso_z(t: datetime) -> str:
    """RFC 3339 UTC with millisecond precision and ``Z`` (what STIX and ECS expect)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
