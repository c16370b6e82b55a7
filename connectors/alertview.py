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
from functools import cached_property
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
    named = _named(atlas)
    if technique_id not in named:
        t = atlas.technique(technique_id)
        named[technique_id] = TechniqueInfo(t.id, atlas.display_name(t.id), t.name, t.parent,
                                            tuple(tactic_info(x, atlas) for x in t.tactics))
    return named[technique_id]


def tactic_info(tactic_id: str, atlas: AtlasCatalog | None = None) -> TacticInfo:
    atlas = atlas or load_atlas()
    named = _named(atlas)
    key = f"tactic:{tactic_id}"
    if key not in named:
        t = atlas.tactic(tactic_id)
        named[key] = TacticInfo(t.id, t.name, t.shortname)
    return named[key]


# what has been named, per catalogue (catalogues are neither hashable nor weak-referenceable)
_NAMED: dict[int, tuple[AtlasCatalog, dict]] = {}


def _named(atlas: AtlasCatalog) -> dict:
    entry = _NAMED.get(id(atlas))
    if entry is None or entry[0] is not atlas:
        entry = _NAMED[id(atlas)] = (atlas, {})
    return entry[1]


class AlertView:
    """An alert with its chain resolved and its ATLAS IDs named. Each derivation is computed on first
    use and kept, so a format pays only for what it reads."""

    def __init__(self, alert: Alert, events: Mapping[str, DetectionEvent], atlas: AtlasCatalog | None = None):
        self.alert = alert
        self._all_events = events
        self._atlas = atlas

    @cached_property
    def events(self) -> tuple[DetectionEvent, ...]:
        """The chain's events found in ``events``, in chain order."""
        return tuple(self._all_events[i] for i in self.alert.event_ids if i in self._all_events)

    @cached_property
    def missing_event_ids(self) -> tuple[str, ...]:
        return tuple(i for i in self.alert.event_ids if i not in self._all_events)

    @cached_property
    def techniques(self) -> tuple[TechniqueInfo, ...]:
        return tuple(technique_info(t, self._atlas) for t in self.alert.atlas.techniques)

    @cached_property
    def tactics(self) -> tuple[TacticInfo, ...]:
        return tuple(tactic_info(t, self._atlas) for t in self.alert.atlas.tactics)

    @cached_property
    def source_ips(self) -> tuple[str, ...]:
        """In chain order."""
        return _unique(e.subject.source_ip for e in self.events)

    @cached_property
    def sessions(self) -> tuple[str, ...]:
        return _unique(e.subject.session for e in self.events)

    @cached_property
    def endpoints(self) -> tuple[str, ...]:
        return _unique(e.target.endpoint for e in self.events)

    @cached_property
    def detectors(self) -> tuple[str, ...]:
        return _unique(e.detector.name for e in self.events)

    @cached_property
    def max_score(self) -> float | None:
        return max((e.score for e in self.events), default=None)

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
    """``alert`` with its chain looked up in ``events`` (missing ids are recorded, not fatal: the alert
    itself carries the unions) and its ATLAS IDs named from ``atlas`` (default
    :func:`kizashi.mappings.load_atlas`; the alert's IDs were checked against it when parsed)."""
    return AlertView(alert, events, atlas)


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
