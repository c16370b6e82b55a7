"""MicroBatchEvaluator: the stream evaluator fed in micro-batches, detection rules tested column-wise.

Events are buffered until ``max_events`` are in or ``max_ms`` have passed since the first one
(whichever comes first; checked when an event arrives, and by :meth:`MicroBatchEvaluator.poll`).
A batch is then seen column by column (:class:`ColumnView`): each field a rule reads is one column,
factorised once, every value test runs once per *distinct* value (the detection plan's
:meth:`~.conditions.CompiledDetection.mask`, the batch evaluator's code path) and numpy broadcasts
the answers back; event times are converted as one column (:func:`.normalise.event_timestamps`).
The batch then enters the :class:`~.stream.StreamEvaluator` in arrival order through its
:meth:`~.stream.StreamEvaluator.admit_many`, the step its per-event ``push`` ends in too: results,
their order, lateness handling and snapshots are the stream evaluator's, only later by at most one
batch period.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from itertools import chain, islice, repeat
from types import NoneType
from typing import TYPE_CHECKING, Any

import numpy as np

from .normalise import event_timestamps, normalise_event
from .results import RuleResult
from .stream import StreamEvaluator

if TYPE_CHECKING:
    from .collection import RuleSet

DEFAULT_MAX_EVENTS = 1024
DEFAULT_MAX_MS = 100.0


class ColumnView:
    """Flat events (dicts) seen column by column, with :class:`~.conditions.FrameView`'s interface
    (``n``, ``columns``, ``column``, ``apply``) so the detection plans' ``mask`` runs on it unchanged.

    A column is factorised by a dict keyed on (type, value) -- ``True``, ``1`` and ``1.0`` hash alike
    but Sigma reads them differently -- with lists as tuples; a value test then runs once per key.
    """

    def __init__(self, rows: Sequence[dict[str, Any]]):
        self.rows = rows
        self.n = len(rows)
        self._factors: dict[str, tuple[np.ndarray, list[Any]]] = {}
        self._columns: list[str] | None = None

    @property
    def columns(self) -> list[str]:
        if self._columns is None:
            self._columns = list(dict.fromkeys(k for row in self.rows for k in row))
        return self._columns

    def column(self, name: str) -> list[Any]:
        return list(map(dict.get, self.rows, repeat(name)))

    def factor(self, name: str) -> tuple[np.ndarray, list[Any]]:
        found = self._factors.get(name)
        if found is None:
            found = self._factors[name] = factorise(self.column(name))
        return found

    def apply(self, name: str, test: Callable[[Any], bool]) -> np.ndarray:
        codes, uniques = self.factor(name)
        answers = np.fromiter((bool(test(u)) for u in uniques), dtype=bool, count=len(uniques))
        return answers[codes]


def factorise(values: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """``values`` -> (codes, distinct values): ``values[i] == uniques[codes[i]]``, equal only if the
    same type (lists become tuples, which the value tests read as lists). A column of one type that
    cannot collide with another (text, missing, lists of text) is hashed by the dict in C."""
    kinds = set(map(type, values))
    if len(kinds) == 1 and (str in kinds or NoneType in kinds):
        return _codes(values, list(dict.fromkeys(values)))
    if kinds == {list} and set(map(type, chain.from_iterable(values))) <= {str}:  # e.g. ATLAS technique lists
        keys = list(map(tuple, values))
        return _codes(keys, list(dict.fromkeys(keys)))
    index: dict[Any, int] = {}
    uniques: list[Any] = []
    codes: list[int] = []
    for v in values:
        t = type(v)
        key = v if t is str else (t, v) if t is float or t is int or v is None else _key(v)
        code = index.get(key)
        if code is None:
            code = index[key] = len(uniques)
            uniques.append(tuple(v) if t is list else v)
        codes.append(code)
    return np.fromiter(codes, dtype=np.int64, count=len(codes)), uniques


def _codes(keys: list[Any], uniques: list[Any]) -> tuple[np.ndarray, list[Any]]:
    index = {u: i for i, u in enumerate(uniques)}
    return np.fromiter(map(index.__getitem__, keys), dtype=np.int64, count=len(keys)), uniques


def _key(value: Any) -> Any:
    if isinstance(value, list | tuple):
        if all(type(v) is str for v in value):  # the common case (e.g. ATLAS technique lists)
            return (list, tuple(value))
        return (list, tuple(_key(v) for v in value))
    if isinstance(value, dict):
        return (dict, id(value))  # a nested object never matches a value: no need to share answers
    return (type(value), value)


class MicroBatchEvaluator:
    """Push events one by one (or many at once); results come out per micro-batch, equal to the
    :class:`~.stream.StreamEvaluator`'s in content and order."""

    def __init__(
        self,
        ruleset: RuleSet,
        *,
        lateness: timedelta = timedelta(0),
        id_field: str = "id",
        time_field: str = "time",
        max_events: int = DEFAULT_MAX_EVENTS,
        max_ms: float = DEFAULT_MAX_MS,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        if max_ms < 0:
            raise ValueError("max_ms must not be negative")
        self.stream = StreamEvaluator(ruleset, lateness=lateness, id_field=id_field, time_field=time_field)
        self.ruleset = ruleset
        self.max_events = max_events
        self.max_ms = max_ms
        self.clock = clock
        self.buffer: list[dict[str, Any]] = []
        self.opened: float | None = None  # clock reading when the first buffered event arrived

    @property
    def stats(self) -> dict[str, int]:
        return self.stream.stats

    def push(self, event: Any) -> list[RuleResult]:
        """Buffer one event; evaluate the batch when it is full or its period is over."""
        flat = normalise_event(event)
        if not self.buffer:
            self.opened = self.clock()
        self.buffer.append(flat)
        if len(self.buffer) >= self.max_events:
            return self.drain()
        return self.poll()

    def poll(self) -> list[RuleResult]:
        """Evaluate the buffered events if the batch period is over (call it from an idle loop)."""
        if self.buffer and (self.clock() - self.opened) * 1e3 >= self.max_ms:
            return self.drain()
        return []

    def push_many(self, events: Iterable[Any]) -> list[RuleResult]:
        """Push every event of ``events`` (results of the batches completed meanwhile): what
        :meth:`push` gives for each in turn, with the buffer filled a batch's room at a time and the
        batch period checked once per fill, not once per event. For events already at hand (a file
        read in chunks); a source that blocks between events should :meth:`push` each one."""
        results: list[RuleResult] = []
        it = iter(events)
        while chunk := list(map(normalise_event, islice(it, self.max_events - len(self.buffer)))):
            if not self.buffer:
                self.opened = self.clock()
            self.buffer.extend(chunk)
            results.extend(self.drain() if len(self.buffer) >= self.max_events else self.poll())
        return results

    def drain(self) -> list[RuleResult]:
        """Evaluate the buffered events now."""
        rows, self.buffer, self.opened = self.buffer, [], None
        return self._evaluate(rows) if rows else []

    def flush(self) -> list[RuleResult]:
        """End of input: evaluate what is buffered, then release everything held back for lateness."""
        return self.drain() + self.stream.flush()

    def state_size(self) -> int:
        return self.stream.state_size() + len(self.buffer)

    def snapshot(self) -> bytes:
        """The stream evaluator's snapshot; buffered events are evaluated into it first, so call
        :meth:`drain` (and keep its results) before taking one."""
        if self.buffer:
            raise RuntimeError("drain() the buffered events before taking a snapshot")
        return self.stream.snapshot()

    def restore(self, data: bytes) -> None:
        self.buffer, self.opened = [], None
        self.stream.restore(data)

    # -- one batch -----------------------------------------------------------------------------
    def _evaluate(self, rows: list[dict[str, Any]]) -> list[RuleResult]:
        return _admit_rows(self.stream, rows)


def admit_batch(stream: StreamEvaluator, events: Sequence[Any]) -> list[RuleResult]:
    """``events`` through ``stream`` as its :meth:`~.stream.StreamEvaluator.push` would take them one
    by one (same results, same order), the detection rules tested column-wise over the whole batch."""
    return _admit_rows(stream, [normalise_event(e) for e in events])


def _admit_rows(stream: StreamEvaluator, rows: list[dict[str, Any]]) -> list[RuleResult]:
    if not rows:
        return []
    view = ColumnView(rows)
    patterns = _patterns(list(stream.ruleset.detections.items()), view)
    eids = _event_ids(stream, view)
    return stream.admit_many(rows, eids, _times(view, stream.time_field), patterns)


def _event_ids(stream: StreamEvaluator, view: ColumnView) -> list[str]:
    """Each row's id as :meth:`~.stream.StreamEvaluator.event_id` reads it (text ids as they are)."""
    ids = view.column(stream.id_field)
    if set(map(type, ids)) == {str} and "" not in ids:
        return ids
    return [stream.event_id(flat) for flat in view.rows]


def _patterns(detections: list[tuple[str, Any]], view: ColumnView) -> list[tuple[str, ...]]:
    """Per row, the keys of the detection rules it matches (in rule-set order): one vectorised mask
    per rule, rows grouped by the pattern of rules they match."""
    masks = np.stack([det.mask(view) for _key, det in detections], axis=1) if detections else (
        np.zeros((view.n, 0), dtype=bool))
    keys = [k for k, _det in detections]
    if len(keys) <= 62:  # the pattern as the bits of one integer
        codes = (masks.astype(np.int64) << np.arange(len(keys), dtype=np.int64)).sum(axis=1)
        distinct, inverse = np.unique(codes, return_inverse=True)
        matched = [tuple(k for bit, k in enumerate(keys) if int(c) >> bit & 1) for c in distinct]
    else:
        distinct, inverse = np.unique(masks, axis=0, return_inverse=True)
        matched = [tuple(k for k, hit in zip(keys, row, strict=True) if hit) for row in distinct]
    return [matched[i] for i in inverse.reshape(-1).tolist()]


def _times(view: ColumnView, time_field: str) -> list[float | None]:
    """Each row's time (epoch seconds, as :func:`.normalise.event_timestamp`)."""
    return event_timestamps(view.column(time_field))
