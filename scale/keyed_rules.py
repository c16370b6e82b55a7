"""A Sigma rule set split for a keyed stream engine: a stateless step per event and a stateful
step per (correlation rule, group) key.

The single-process :class:`~kizashi.engine.sigma.StreamEvaluator` keeps every correlation group
in one process. A partitioned engine (Flink) keys the matched events by each correlation's
``group-by`` instead: groups never interact, so each key can run the engine's own correlation
state machine (:class:`~kizashi.engine.sigma.correlations.CompiledCorrelation`) over its one window,
fed the same entries in the same order as the single process feeds it. Chained correlations
(a correlation over correlations) sit one *level* above the rules they consume; a firing becomes
a record keyed by the outer correlation's group and goes to the next level.

Order within one timestamp is the single process's: base events by (event id, arrival), then
firings by (inner correlation's position in dependency order, its first entry's order), so even
the reported group spelling (the last entry's) is the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from kizashi.engine.sigma import CompiledCorrelation, Correlator, RuleSet
from kizashi.engine.sigma.correlations import Entry
from kizashi.engine.sigma.normalise import content_id, event_timestamp, normalise_event
from kizashi.engine.sigma.results import correlation_result, match_result

__all__ = ["KeyedRecord", "KeyedRulePlan", "decode_key", "rules_text"]


def rules_text(paths: list[str]) -> str:
    """All rule files under ``paths`` as one multi-document YAML text (the broadcast payload)."""
    docs = []
    for p in map(Path, paths):
        files = sorted([*p.rglob("*.yml"), *p.rglob("*.yaml")]) if p.is_dir() else [p]
        for f in files:
            text = f.read_text(encoding="utf-8").strip()
            text = text[3:].lstrip() if text.startswith("---") else text
            if text:
                docs.append(text)
    return "\n---\n".join(docs)


@dataclass(slots=True)
class KeyedRecord:
    """One matched item on its way to a correlation group: a base event or an inner firing."""

    level: int  # 1 = consumes detection rules only; n = consumes correlations of level < n
    key: str  # JSON [correlation rule key, group key]: the partitioning key
    ts: float  # event time, seconds
    order: tuple  # order among items with the same ts (see module docstring)
    seq: str  # the window entry's tie-breaker: the event id (the chain's last one for a firing)
    chain: list  # underlying events [(ts, id)], time-ordered
    slots: tuple  # which of the correlation's rules this item matched (slot indices)
    value: Any  # the condition field's value, if the correlation has one
    display: dict  # group values as reported

    def as_tuple(self) -> tuple:
        return (self.level, self.key, self.ts, self.order, self.seq, self.chain, self.slots, self.value,
                self.display)

    @classmethod
    def from_tuple(cls, t: tuple) -> KeyedRecord:
        return cls(*t)


def _plain_key(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain_key(v) for v in value]
    return value


def _tuple_key(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuple_key(v) for v in value)
    return value


def encode_key(corr_key: str, group: tuple) -> str:
    return json.dumps([corr_key, _plain_key(group)], separators=(",", ":"), ensure_ascii=False)


def decode_key(key: str) -> tuple[str, tuple]:
    corr_key, group = json.loads(key)
    return corr_key, _tuple_key(group)


class KeyedRulePlan:
    """The rule set as a per-event step (:meth:`detect`) and a per-key step (:meth:`correlate`),
    with per-key window state as plain data (the correlation's own ``snapshot`` format)."""

    def __init__(self, rules_yaml: str, *, id_field: str = "id", time_field: str = "time"):
        self.rules_yaml = rules_yaml
        self.id_field = id_field
        self.time_field = time_field
        self.ruleset = RuleSet.from_yaml(rules_yaml)
        correlator = Correlator(self.ruleset.compile_correlations())
        ordered = correlator.correlations  # dependency order: inner before outer
        self.correlations: dict[str, CompiledCorrelation] = {c.key: c for c in ordered}
        self.position = {c.key: i for i, c in enumerate(ordered)}
        self.consumers = correlator.consumers
        self.needed_fields = correlator.needed_fields
        self.level: dict[str, int] = {}
        for c in ordered:
            self.level[c.key] = 1 + max((self.level.get(k, 0) for k in c.ref_keys), default=0)
        self.depth = max(self.level.values(), default=0)
        self._detections = list(self.ruleset.detections.items())
        self._users: dict[tuple, list[CompiledCorrelation]] = {}

    # -- per event ---------------------------------------------------------------------------
    def detect(self, event: Mapping[str, Any], arrival: int) -> tuple[list[str], list[KeyedRecord]]:
        """One event: its detection results (JSON lines, as ``kizashi rules eval`` prints them)
        and the records it contributes to correlation groups (none without a time)."""
        flat = normalise_event(event)
        eid = flat.get(self.id_field)
        eid = content_id(flat) if eid is None or eid == "" else str(eid)
        ts = event_timestamp(flat.get(self.time_field))
        results: list[str] = []
        matched = []
        info = self.ruleset.info
        correlated = self.ruleset.correlated_keys
        for key, det in self._detections:
            if det.match(flat):
                if info[key].emits:
                    results.append(match_result(info[key], eid, ts).to_json())
                if key in correlated:
                    matched.append(key)
        if ts is None or not matched:
            return results, []
        values = {f: flat.get(f) for f in self.needed_fields}
        return results, self._route(ts, (0, eid, arrival), eid, [(ts, eid)], tuple(matched), values)

    def _route(self, ts: float, order: tuple, seq: str, chain: list, matched: tuple,
               values: Mapping[str, Any]) -> list[KeyedRecord]:
        users = self._users.get(matched)
        if users is None:  # the correlations consuming any of these rules, each once
            users = self._users[matched] = list(
                {id(c): c for k in matched for c in self.consumers.get(k, ())}.values()
            )
        out = []
        for corr in users:
            corr.push(ts, seq, chain, matched, values)  # the engine's own grouping (aliases, missing fields)
            for group, entry, display in corr.pending:
                out.append(KeyedRecord(self.level[corr.key], encode_key(corr.key, group), ts, order,
                                       entry.seq, entry.chain, tuple(sorted(entry.slots)), entry.value, display))
            corr.pending.clear()
        return out

    # -- per key -------------------------------------------------------------------------------
    def correlate(self, key: str, state: list | None, records: Iterable[KeyedRecord]
                  ) -> tuple[list | None, list[str], list[KeyedRecord]]:
        """Feed one group's records (any number of timestamps, all complete) to its correlation:
        -> (new state or None when empty, result JSON lines, records for outer correlations)."""
        corr_key, group = decode_key(key)
        corr = self.correlations[corr_key]
        corr.windows = {}
        if state is not None:
            corr.restore([state])
        results: list[str] = []
        out: list[KeyedRecord] = []
        emits = self.ruleset.info[corr_key].emits
        ordered = sorted(records, key=lambda r: (r.ts, r.order))
        for ts, batch in groupby(ordered, key=lambda r: r.ts):
            batch = list(batch)
            for r in batch:
                corr.pending.append((group, Entry(r.ts, r.seq, [tuple(c) for c in r.chain], frozenset(r.slots),
                                                  r.value), r.display))
            for firing in corr.advance(ts):
                if emits:
                    results.append(correlation_result(self.ruleset.info[corr_key], firing).to_json())
                if corr_key in self.consumers:
                    last = firing.chain[-1][1] if firing.chain else ""
                    order = (1 + self.position[corr_key], batch[0].order)
                    out += self._route(firing.ts, order, last, firing.chain, (corr_key,), firing.group)
        return self._dump(corr), results, out

    def expire(self, key: str, state: list | None, watermark: float) -> list | None:
        """Drop what no window anchored after ``watermark`` (seconds) can hold; None once empty."""
        if state is None:
            return None
        corr = self.correlations[decode_key(key)[0]]
        corr.windows = {}
        corr.restore([state])
        corr.evict(watermark)
        return self._dump(corr)

    def state_until(self, key: str, state: list | None) -> float | None:
        """Event time (seconds) after which :meth:`expire` empties this state, if nothing new comes."""
        if state is None:
            return None
        _, _, last_fired, entries = state
        corr = self.correlations[decode_key(key)[0]]
        latest = max([e[0] for e in entries] + ([last_fired] if last_fired is not None else []), default=-math.inf)
        return latest + corr.span

    @staticmethod
    def _dump(corr: CompiledCorrelation) -> list | None:
        dumped = corr.snapshot()
        corr.windows = {}
        return dumped[0] if dumped else None
