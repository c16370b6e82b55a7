"""Sigma correlation rules evaluated over sliding windows anchored at events.

Implements the correlation types of the Sigma correlation specification (v2.1): ``event_count``,
``value_count``, ``temporal``, ``temporal_ordered``, ``value_sum``, ``value_avg``, ``value_median``
and ``value_percentile``, with ``group-by``, ``aliases``, chaining (a correlation over correlations)
and every condition operator.

Window semantics (the same as the pySigma SQLite backend's relational plan): every matching event
of a group at time *t* anchors the window ``[t - timespan, t]`` (both ends included); the condition
is evaluated once per distinct (group, *t*) after all entries with that timestamp are in. A group
that fired is quiet until a window no longer contains its last firing anchor (at most one result
per group and timespan), so a campaign produces one alert, not one per event.

Two plain classes, no I/O and no rule-set internals: :class:`CompiledCorrelation` is one rule's
state machine (``push`` entries at a time, ``advance`` to that time, ``snapshot``/``restore`` its
state as JSON-able data), and :class:`Correlator` drives all of a rule set's correlations in
dependency order, feeding each one's firings to the correlations over it. The stream and batch
evaluators feed the driver the same records in the same order, so both give the same results.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import numpy as np
from sigma.correlations import (
    SigmaCorrelationConditionOperator,
    SigmaCorrelationRule,
    SigmaCorrelationType,
    SigmaExtendedCorrelationCondition,
)

from .exceptions import RuleLoadError, UnsupportedRuleError
from .normalise import as_number, is_missing
from .rule import rule_key, rule_references

_OPS = {
    SigmaCorrelationConditionOperator.LT: lambda a, b: a < b,
    SigmaCorrelationConditionOperator.LTE: lambda a, b: a <= b,
    SigmaCorrelationConditionOperator.GT: lambda a, b: a > b,
    SigmaCorrelationConditionOperator.GTE: lambda a, b: a >= b,
    SigmaCorrelationConditionOperator.EQ: lambda a, b: a == b,
    SigmaCorrelationConditionOperator.NEQ: lambda a, b: a != b,
}

SUPPORTED_TYPES = {
    SigmaCorrelationType.EVENT_COUNT,
    SigmaCorrelationType.VALUE_COUNT,
    SigmaCorrelationType.TEMPORAL,
    SigmaCorrelationType.TEMPORAL_ORDERED,
    SigmaCorrelationType.VALUE_SUM,
    SigmaCorrelationType.VALUE_AVG,
    SigmaCorrelationType.VALUE_MEDIAN,
    SigmaCorrelationType.VALUE_PERCENTILE,
}


def group_key(value: Any) -> Any:
    """Group keys compare like Sigma strings: case-insensitively; lists become tuples."""
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, list | tuple):
        return tuple(group_key(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _display(value: Any) -> Any:
    """Group values as reported: integral floats as ints (a DataFrame column with gaps is float)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if hasattr(value, "item") and not isinstance(value, list | tuple):
        return _display(value.item())
    return value


@dataclass(slots=True, init=False)
class Entry:
    """One item in a correlation window: a base event, or an earlier correlation's result."""

    ts: float
    seq: str  # order among simultaneous entries: the event id (the last one for a correlation result)
    chain: list[tuple[float, str]]  # underlying events (time, id), time-ordered
    slots: frozenset[int]
    value: Any
    norm: Any  # value as compared (case-folded); computed once

    def __init__(self, ts: float, seq: str, chain: list[tuple[float, str]], slots: frozenset[int],
                 value: Any = None, norm: Any = None):
        self.ts, self.seq, self.chain, self.slots, self.value = ts, seq, chain, slots, value
        self.norm = group_key(value) if norm is None and value is not None and not is_missing(value) else norm


_entry_ts = attrgetter("ts")  # an Entry's time (the windows' sort key), in C
_entry_order = attrgetter("ts", "seq")  # an Entry's place among simultaneous entries


def _drop_before(entries: list[Entry], horizon: float) -> None:
    """Drop the entries of a time-sorted, non-empty window that are older than ``horizon``."""
    if entries[0].ts < horizon:
        del entries[:bisect.bisect_left(entries, horizon, key=_entry_ts)]


@dataclass(slots=True)
class GroupWindow:
    entries: list[Entry] = field(default_factory=list)  # sorted by (ts, seq)
    display: dict[str, Any] = field(default_factory=dict)
    last_fired: float | None = None


@dataclass(slots=True)
class Firing:
    """A correlation whose condition held at an anchor."""

    correlation: CompiledCorrelation
    group: dict[str, Any]
    ts: float
    chain: list[tuple[float, str]]
    value: float
    first_ts: float


class CompiledCorrelation:
    """One correlation rule: per-group windows, the metric and the condition."""

    def __init__(self, rule: SigmaCorrelationRule, *, dedup: bool = True):
        where = f"correlation {rule.title!r}"
        if rule.type not in SUPPORTED_TYPES:
            raise UnsupportedRuleError(f"{where}: correlation type {rule.type} is not supported")
        if isinstance(rule.condition, SigmaExtendedCorrelationCondition):
            raise UnsupportedRuleError(
                f"{where}: extended (boolean expression) correlation conditions are not supported"
            )
        self.rule = rule
        self.key = rule_key(rule)
        self.type = str(rule.type).lower() if not hasattr(rule.type, "name") else rule.type.name.lower()
        self.ref_keys = [rule_key(ref.rule) for ref in rule.rules]  # slot i -> rule key
        self.span = float(rule.timespan.seconds)
        if self.span <= 0:
            raise UnsupportedRuleError(f"{where}: timespan must be positive")
        self.group_by = list(rule.group_by or [])
        self.condition = rule.condition
        self.op = _OPS[rule.condition.op]
        self.count = rule.condition.count
        self.value_field: str | None = _value_field(rule, where)
        if self.type == "value_percentile":
            p = rule.condition.percentile
            if p is None or not 0 <= p <= 100:
                raise UnsupportedRuleError(f"{where}: value_percentile needs a percentile between 0 and 100")
            self.percentile = float(p)
        elif self.type == "value_median":
            self.percentile = 50.0
        self.aliases = _aliases(rule)
        # per slot: the field names holding the group-by values and the condition value
        self.slot_group_fields: list[list[str]] = []
        self.slot_value_field: list[str | None] = []
        for ref in rule.rules:
            keys = {ref.reference, *rule_references(ref.rule)}
            self.slot_group_fields.append([self._resolve(g, keys) for g in self.group_by])
            self.slot_value_field.append(self._resolve(self.value_field, keys) if self.value_field else None)
        self._slot_specs = [
            (slot, ref_key, self.slot_group_fields[slot], self.slot_value_field[slot])
            for slot, ref_key in enumerate(self.ref_keys)
        ]
        self.dedup = dedup
        self.windows: dict[tuple, GroupWindow] = {}
        self._sweep_keys: list[tuple] = []
        self._sweep_pos = 0
        self._sweep_started: float | None = None  # watermark when the current round of sweeping began
        self.pending: list[tuple[tuple, Entry, dict[str, Any]]] = []
        self._specs_for: dict[tuple[str, ...], list] = {}
        self._slot_sets = [frozenset((slot,)) for slot in range(len(self.ref_keys))]

    def _resolve(self, name: str, keys: set[str]) -> str:
        mapping = self.aliases.get(name)
        if mapping is None:
            return name
        for k in keys:
            if k in mapping:
                return mapping[k]
        return name

    def needed_fields(self) -> set[str]:
        out: set[str] = set()
        for fields in self.slot_group_fields:
            out.update(fields)
        out.update(f for f in self.slot_value_field if f)
        return out

    # -- feeding ---------------------------------------------------------------------------
    def push(self, ts: float, seq: str, chain: list, matched_keys: Iterable[str], values: Mapping[str, Any]) -> None:
        """Queue one matched item (base event or inner result) at ``ts``; ``values`` holds its fields."""
        matched_keys = tuple(matched_keys)
        specs = self._specs_for.get(matched_keys)
        if specs is None:  # the slots these rules fill, worked out once per combination of rules
            specs = self._specs_for[matched_keys] = [s for s in self._slot_specs if s[1] in matched_keys]
        if len(specs) == 1 and len(self.group_by) == 1:  # the common case: one slot, one group-by field
            item = self._one_slot_item(specs[0], ts, seq, chain, values)
            if item is not None:
                self.pending.append(item)
            return
        by_group: dict[tuple, tuple[set[int], dict[str, Any], Any]] = {}
        for slot, _ref_key, fields, vfield in specs:
            raw = [values.get(f) for f in fields]
            key = []
            for v in raw:
                if v is None or (type(v) is float and v != v):
                    break
                key.append(v.lower() if type(v) is str else group_key(v))
            else:
                key = tuple(key)
                group = by_group.get(key)
                if group is None:
                    display = {g: v if type(v) is str else _display(v)
                               for g, v in zip(self.group_by, raw, strict=True)}
                    group = by_group[key] = (set(), display, values.get(vfield) if vfield else None)
                group[0].add(slot)
        for key, (slots, display, value) in by_group.items():
            self.pending.append((key, Entry(ts, seq, chain, frozenset(slots), value), display))

    def step(self, ts: float, seq: str, chain: list, matched_keys: tuple[str, ...],
             values: Mapping[str, Any]) -> Firing | None:
        """:meth:`push` then :meth:`advance` for the only item at ``ts``: the same window, state and
        firing. An item that fills one slot of a one-field group and comes in time order (nearly
        every item) is appended and its window evaluated in place: the window is then the whole
        list, ``[ts - timespan, ts]``, so neither the pending list nor a bisect is needed."""
        specs = self._specs_for.get(matched_keys)
        if specs is None or len(specs) != 1 or len(self.group_by) != 1:
            self.push(ts, seq, chain, matched_keys, values)
            firings = self.advance(ts) if self.pending else ()
            return firings[0] if firings else None
        item = self._one_slot_item(specs[0], ts, seq, chain, values)
        if item is None:
            return None
        key, entry, display = item
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = GroupWindow()
        window.display = display
        entries = window.entries
        if entries and (entries[-1].ts > ts or (entries[-1].ts == ts and entries[-1].seq > seq)):
            bisect.insort(entries, entry, key=_entry_order)  # a late item: the general evaluation
            _drop_before(entries, ts - self.span)
            return self._evaluate(window, ts)
        entries.append(entry)
        _drop_before(entries, ts - self.span)
        if self.dedup and window.last_fired is not None and ts - self.span <= window.last_fired:
            return None  # still inside the previous firing's window: quiet whatever the metric
        metric = len(entries) if self.type == "event_count" else self.metric(entries)
        if metric is None or not self.op(metric, self.count):
            return None
        window.last_fired = ts
        return Firing(self, dict(display), ts, sorted({c for e in entries for c in e.chain}), float(metric),
                      entries[0].ts)

    def _one_slot_item(self, spec: tuple, ts: float, seq: str, chain: list,
                       values: Mapping[str, Any]) -> tuple[tuple, Entry, dict[str, Any]] | None:
        """(group key, entry, group as reported) of an item filling one slot of a one-field group;
        None when the item has no value for the field."""
        slot, _ref_key, (gfield,), vfield = spec
        v = values.get(gfield)
        if v is None or (type(v) is float and v != v):
            return None
        if type(v) is str:
            key, display = (v.lower(),), {self.group_by[0]: v}
        else:
            key, display = (group_key(v),), {self.group_by[0]: _display(v)}
        return key, Entry(ts, seq, chain, self._slot_sets[slot], values.get(vfield) if vfield else None), display

    def advance(self, ts: float) -> list[Firing]:
        """All entries at ``ts`` are in: insert them, evaluate each touched group's window at ``ts``."""
        touched: dict[tuple, GroupWindow] = {}
        windows = self.windows
        for key, entry, display in self.pending:
            window = windows.get(key)
            if window is None:
                window = windows[key] = GroupWindow()
            entries = window.entries
            if entries:
                last = entries[-1]
                if last.ts < entry.ts or (last.ts == entry.ts and last.seq <= entry.seq):
                    entries.append(entry)
                else:  # a late item: keep the window sorted
                    bisect.insort(entries, entry, key=_entry_order)
            else:
                entries.append(entry)
            window.display = display
            touched[key] = window
        self.pending.clear()
        firings: list[Firing] = []
        horizon = ts - self.span
        for window in touched.values():
            _drop_before(window.entries, horizon)  # what no window at or after ts can hold
            firing = self._evaluate(window, ts)
            if firing is not None:
                firings.append(firing)
        return firings

    def _evaluate(self, window: GroupWindow, ts: float) -> Firing | None:
        entries = window.entries
        if not entries:
            return None
        lo = 0 if entries[0].ts >= ts - self.span else bisect.bisect_left(entries, ts - self.span, key=_entry_ts)
        hi = len(entries) if entries[-1].ts <= ts else bisect.bisect_right(entries, ts, key=_entry_ts)
        if hi <= lo:
            return None
        if self.dedup and window.last_fired is not None and ts - self.span <= window.last_fired:
            return None  # still inside the previous firing's window: quiet whatever the metric
        in_window = entries[lo:hi] if self.type != "event_count" else None
        metric = hi - lo if in_window is None else self.metric(in_window)
        if metric is None or not self.op(metric, self.count):
            return None
        window.last_fired = ts
        in_window = entries[lo:hi]
        chain = sorted({c for e in in_window for c in e.chain})
        return Firing(self, dict(window.display), ts, chain, float(metric), in_window[0].ts)

    def metric(self, entries: list[Entry]) -> float | None:
        kind = self.type
        if kind == "event_count":
            return len(entries)
        if kind == "value_count":
            return len({e.norm for e in entries if e.norm is not None})
        if kind == "temporal":
            return len(set().union(*(e.slots for e in entries)))
        if kind == "temporal_ordered":
            # earliest first step, then the earliest second step strictly later, ... (one pass)
            steps = len(self.ref_keys)
            step, last = 0, -math.inf
            for e in entries:
                if step in e.slots and e.ts > last:
                    last = e.ts
                    step += 1
                    if step == steps:
                        return len(set().union(*(e.slots for e in entries)))
            return None
        numbers = [n for n in (as_number(e.value) for e in entries) if n is not None]
        if not numbers:
            return None
        if kind == "value_sum":
            return math.fsum(numbers)
        if kind == "value_avg":
            return math.fsum(numbers) / len(numbers)
        return float(np.percentile(np.asarray(numbers, dtype=float), self.percentile))

    # -- bounded state -------------------------------------------------------------------------
    def evict(self, watermark: float, keys: Iterable[tuple] | None = None) -> None:
        """Drop entries no future window (anchored at or after ``watermark``) can contain, and groups
        left with nothing; ``keys`` limits the sweep to some groups (incremental sweeping)."""
        horizon = watermark - self.span
        windows = self.windows
        dead = []
        for key in list(windows) if keys is None else keys:
            window = windows.get(key)
            if window is None:
                continue
            entries = window.entries
            if entries:
                if entries[0].ts >= horizon:
                    continue  # nothing to drop, and the group is alive
                del entries[:bisect.bisect_left(entries, horizon, key=_entry_ts)]
                if entries:
                    continue
            if window.last_fired is None or window.last_fired < horizon:
                dead.append(key)
        for key in dead:
            del windows[key]

    #: a sweep of every group starts at most once per this fraction of the timespan (of event time):
    #: an idle group's entries outlive their last window by at most about that much
    SWEEP_CYCLE = 0.25

    def evict_some(self, watermark: float, budget: int) -> None:
        """Sweep the next ``budget`` groups (round robin): bounded state without long pauses. A new
        round starts only once a quarter of the timespan has passed since the last one started:
        before that, nothing a round would find has aged enough to matter."""
        if self._sweep_pos >= len(self._sweep_keys):
            if self._sweep_started is not None and watermark - self._sweep_started < self.span * self.SWEEP_CYCLE:
                return
            self._sweep_keys = list(self.windows)
            self._sweep_pos = 0
            self._sweep_started = watermark
        keys = self._sweep_keys[self._sweep_pos:self._sweep_pos + budget]
        self._sweep_pos += budget
        self.evict(watermark, keys)

    def state_size(self) -> int:
        return sum(len(w.entries) for w in self.windows.values())

    # -- snapshot ------------------------------------------------------------------------------
    def snapshot(self) -> list:
        """The windows as JSON-able data (for :meth:`restore` after a restart)."""
        return [
            [list(key), w.display, w.last_fired,
             [[e.ts, e.seq, [list(c) for c in e.chain], sorted(e.slots), e.value] for e in w.entries]]
            for key, w in self.windows.items()
        ]

    def restore(self, data: list) -> None:
        self.windows = {}
        for key, display, last_fired, entries in data:
            self.windows[_tuplify(key)] = GroupWindow(
                [Entry(ts, seq, [tuple(c) for c in chain], frozenset(slots), value)
                 for ts, seq, chain, slots, value in entries],
                display,
                last_fired,
            )


def _value_field(rule: SigmaCorrelationRule, where: str) -> str | None:
    """The one field a value_* condition reads (``condition.field``), or None."""
    field_ = rule.condition.fieldref
    if isinstance(field_, list):
        if len(field_) != 1:
            raise UnsupportedRuleError(f"{where}: a condition over several fields is not supported")
        field_ = field_[0]
    return field_


def _aliases(rule: SigmaCorrelationRule) -> dict[str, dict[str, str]]:
    """alias -> {reference of a rule (id or name) -> that rule's field name}."""
    aliases: dict[str, dict[str, str]] = {}
    for alias in rule.aliases:
        aliases[alias.alias] = {}
        for ref, fname in alias.mapping.items():
            target = getattr(ref, "rule", None)  # pySigma may leave alias references unresolved
            for k in rule_references(target):
                aliases[alias.alias][k] = fname
            aliases[alias.alias][ref.reference] = fname
    return aliases


def _tuplify(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def dependency_order(rules: Iterable[SigmaCorrelationRule]) -> list[SigmaCorrelationRule]:
    """Correlation rules with every correlation after the correlations it references (inner first);
    a correlation that references itself, directly or not, raises :class:`RuleLoadError`."""
    order: list[SigmaCorrelationRule] = []
    seen: set[str] = set()

    def visit(rule: SigmaCorrelationRule, stack: tuple[str, ...]) -> None:
        key = rule_key(rule)
        if key in seen:
            return
        if key in stack:
            raise RuleLoadError(f"correlation {rule.title!r} references itself through {stack}")
        for ref in rule.rules or []:
            if isinstance(ref.rule, SigmaCorrelationRule):
                visit(ref.rule, (*stack, key))
        seen.add(key)
        order.append(rule)

    for rule in rules:
        visit(rule, ())
    return order


# -- the driver ------------------------------------------------------------------------------------

#: a matched event as the driver sees it: (time, event id, arrival, matched rule keys, field values)
Record = tuple[float, str, int, tuple[str, ...], dict[str, Any]]


class Correlator:
    """Feeds matched records to correlations in time order; a correlation's firings feed the
    correlations over it (chaining).

    A record is ``(ts, event_id, arrival, matched rule keys, field values)``: records are ordered by
    time, then event id (so the arrival order of simultaneous events does not matter), then arrival.
    """

    SWEEP_BUDGET = 1  # groups swept per correlation and released timestamp, on average ...
    SWEEP_EVERY = 64  # ... in one sweep every so many released timestamps (fewer, longer calls)

    def __init__(self, correlations: Iterable[CompiledCorrelation]):
        """``correlations`` in :func:`dependency_order`, each a fresh state machine."""
        self.correlations = list(correlations)
        self.consumers: dict[str, list[CompiledCorrelation]] = {}
        for corr in self.correlations:
            for key in set(corr.ref_keys):
                self.consumers.setdefault(key, []).append(corr)
        self.needed_fields = sorted({f for c in self.correlations for f in c.needed_fields()})
        self.released_ts: float | None = None
        self._releases = 0
        self._users: dict[tuple, list[CompiledCorrelation]] = {}
        self._ordered_users: dict[tuple, list[CompiledCorrelation]] = {}
        self._chained = any(c.key in self.consumers for c in self.correlations)

    def release(self, ts: float, records: list[Record]) -> list[Firing]:
        """Process all records at one timestamp (sorted by event id, then arrival): every firing, in
        dependency order (also those of correlations that only feed others)."""
        if len(records) == 1 and not self._chained:  # nearly always: one record, no correlation of correlations
            rts, eid, _arrival, keys, values = records[0]
            users = self._ordered_users.get(keys)
            if users is None:  # the correlations consuming any of these rules, in dependency order
                users = self._ordered_users[keys] = [c for c in self.correlations if not set(c.ref_keys).isdisjoint(keys)]
            chain = [(rts, eid)]
            firings = [f for f in (corr.step(ts, eid, chain, keys, values) for corr in users) if f is not None]
            self._released(ts)
            return firings
        for rts, eid, _arrival, keys, values in records:
            users = self._users.get(keys)
            if users is None:  # the correlations consuming any of these rules, each once
                users = self._users[keys] = list(
                    {id(c): c for k in keys for c in self.consumers.get(k, ())}.values()
                )
            chain = [(rts, eid)]
            for corr in users:
                corr.push(rts, eid, chain, keys, values)
        firings: list[Firing] = []
        for corr in self.correlations:
            if not corr.pending:
                continue
            for firing in corr.advance(ts):
                firings.append(firing)
                order = firing.chain[-1][1] if firing.chain else ""
                for outer in self.consumers.get(corr.key, ()):
                    outer.push(firing.ts, order, firing.chain, [corr.key], firing.group)
        self._released(ts)
        return firings

    def _released(self, ts: float) -> None:
        if self.released_ts is None or ts > self.released_ts:
            self.released_ts = ts
        self._releases += 1
        if self._releases % self.SWEEP_EVERY == 0:  # a few idle groups at a time: bounded state, no long pauses
            for corr in self.correlations:
                corr.evict_some(self.released_ts, self.SWEEP_BUDGET * self.SWEEP_EVERY)

    def evict(self) -> None:
        """Drop everything no window after the last released time can hold."""
        if self.released_ts is not None:
            for corr in self.correlations:
                corr.evict(self.released_ts)

    def state_size(self) -> int:
        return sum(c.state_size() for c in self.correlations)

    def snapshot(self) -> dict[str, Any]:
        """The driver's state as JSON-able data: the released time and each correlation's windows."""
        return {"released_ts": self.released_ts,
                "correlations": {c.key: c.snapshot() for c in self.correlations}}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.released_ts = state["released_ts"]
        for corr in self.correlations:
            corr.restore(state["correlations"].get(corr.key, []))
