"""Rule results: what ``kizashi rules eval`` prints and what becomes an alert.

A result's id is the alert id (:func:`kizashi.engine.ids.deterministic_alert_id` of the rule key,
the group and the chain of event ids), so re-evaluating the same events gives the same alerts and the
store deduplicates them. The stream and batch evaluators build results only here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..ids import deterministic_alert_id
from .rule import RuleInfo, atlas_ids_from_tags

if TYPE_CHECKING:  # the pydantic event model is imported where alerts are built, not at start-up
    from ..events import Alert
    from .correlations import Firing


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat().replace("+00:00", "Z")


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass(slots=True)
class RuleResult:
    """One rule hit: a detection rule matching one event, or a correlation over a chain of events."""

    type: str  # "match" | "correlation"
    id: str  # deterministic: rule, group and chain
    rule_id: str
    rule_name: str | None
    title: str
    level: str
    tags: list[str]
    event_ids: list[str]  # time-ordered
    group: dict[str, Any] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    value: float | None = None
    correlation_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``kizashi rules eval`` prints for this result."""
        out: dict[str, Any] = {"type": self.type, "rule": self.rule_id, "id": self.id}
        if self.type == "match":
            out["event_id"] = self.event_ids[0]
            out["time"] = _iso(self.last_seen)
        else:
            out.update(
                correlation_type=self.correlation_type,
                group=self.group,
                event_ids=self.event_ids,
                first_seen=_iso(self.first_seen),
                last_seen=_iso(self.last_seen),
                value=self.value,
            )
        out.update(name=self.rule_name, title=self.title, level=self.level, tags=self.tags)
        return out

    def to_json(self) -> str:
        """``to_dict`` as one compact JSON line (``json.dumps``'s bytes): the rule's constant tail is
        encoded once per rule, a match's few variable fields by the encoder's C string function."""
        tail = _rule_tail(self.rule_name, self.title, self.level, tuple(self.tags))
        if self.type == "match":
            when = _iso(self.last_seen)
            return "".join((
                '{"type":"match","rule":', _text(self.rule_id), ',"id":', _text(self.id),
                ',"event_id":', _text(self.event_ids[0]), ',"time":', "null" if when is None else _text(when),
                tail,
            ))
        head = {"type": self.type, "rule": self.rule_id, "id": self.id, "correlation_type": self.correlation_type,
                "group": self.group, "event_ids": self.event_ids, "first_seen": _iso(self.first_seen),
                "last_seen": _iso(self.last_seen), "value": self.value}
        return json.dumps(head, default=str, separators=(",", ":"))[:-1] + tail

    def sort_key(self) -> tuple:
        return (self.last_seen or datetime.min.replace(tzinfo=UTC), self.type, self.rule_id, self.id)


_text = json.encoder.encode_basestring_ascii  # json.dumps of one str (ensure_ascii), in C


@lru_cache(maxsize=4096)
def _rule_tail(name: str | None, title: str, level: str, tags: tuple[str, ...]) -> str:
    """``,"name":…,"title":…,"level":…,"tags":[…]}``: the end of every result line of one rule."""
    return "," + json.dumps({"name": name, "title": title, "level": level, "tags": list(tags)},
                            separators=(",", ":"))[1:]


@lru_cache(maxsize=4096)
def _match_id_prefix(key: str) -> Any:
    """The hash state of ``deterministic_alert_id(key, {}, [event_id])`` before the event id."""
    return hashlib.sha256(key.encode() + b"\x00" + b"{}")


def match_result(info: RuleInfo, event_id: str, ts: float | None) -> RuleResult:
    """A detection rule matching one event (its id is ``deterministic_alert_id(key, {}, [event_id])``)."""
    when = _dt(ts)
    h = _match_id_prefix(info.key).copy()
    h.update(b"\x00" + str(event_id).encode())
    return RuleResult(
        type="match",
        id="alert-" + h.hexdigest()[:32],
        rule_id=info.key,
        rule_name=info.name,
        title=info.title,
        level=info.level,
        tags=list(info.tags),
        event_ids=[event_id],
        first_seen=when,
        last_seen=when,
    )


def correlation_result(info: RuleInfo, firing: Firing) -> RuleResult:
    """A correlation whose condition held: the chain of events behind it, its group and metric."""
    ids = list(dict.fromkeys(c[1] for c in firing.chain))
    return RuleResult(
        type="correlation",
        id=deterministic_alert_id(info.key, firing.group, ids),
        rule_id=info.key,
        rule_name=info.name,
        title=info.title,
        level=info.level,
        tags=list(info.tags),
        event_ids=ids,
        group=dict(firing.group),
        first_seen=_dt(firing.chain[0][0] if firing.chain else firing.first_ts),
        last_seen=_dt(firing.ts),
        value=firing.value,
        correlation_type=info.correlation_type,
    )


def correlation_results(infos: Mapping[str, RuleInfo], firings: Iterable[Firing]) -> list[RuleResult]:
    """The results of ``firings`` whose rule emits (a correlation used only by others stays silent)."""
    out = []
    for firing in firings:
        info = infos[firing.correlation.key]
        if info.emits:
            out.append(correlation_result(info, firing))
    return out


def results_to_alerts(results: Iterable[RuleResult], events_by_id: Mapping[str, Any]) -> list[Alert]:
    """Rule results -> :class:`kizashi.engine.events.Alert` objects carrying the whole chain.

    The alert's level is the rule's; its ATLAS techniques are the union of the chain's events'
    techniques and the rule's ATLAS tags (tactics likewise). A result whose events are not all in
    ``events_by_id`` raises ``KeyError`` naming the missing ids.
    """
    from ..events import Alert, AtlasTags, RuleRef

    alerts = []
    for r in results:
        missing = [i for i in r.event_ids if i not in events_by_id]
        if missing:
            raise KeyError(f"result {r.id} of rule {r.rule_id}: events not given: {missing[:5]}")
        events = [_as_detection_event(events_by_id[i]) for i in r.event_ids]
        alert = Alert.from_events(
            rule=RuleRef(
                id=r.rule_id,
                name=r.rule_name,
                title=r.title,
                type="detection" if r.type == "match" else "correlation",
                correlation_type=r.correlation_type,
            ),
            events=events,
            level=r.level,
            group=r.group,
            value=r.value,
            alert_id=r.id,
            tags=r.tags,
        )
        techniques, tactics = atlas_ids_from_tags(r.tags)
        if techniques or tactics:
            merged_t = list(alert.atlas.techniques) + [t for t in techniques if t not in alert.atlas.techniques]
            alert.atlas = AtlasTags(tactics=list(alert.atlas.tactics) + tactics, techniques=merged_t)
        alerts.append(alert)
    return alerts


def _as_detection_event(value: Any) -> Any:
    """An event of a chain as :meth:`Alert.from_events` takes it: a DetectionEvent or the store's
    EventSummary of one as it is, anything else validated."""
    from ..events import DetectionEvent, EventSummary

    if isinstance(value, DetectionEvent | EventSummary):
        return value
    return DetectionEvent.parse(value)
