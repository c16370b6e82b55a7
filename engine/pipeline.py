"""The ingest pipeline: validated events → store → Sigma rule engine → alerts → outbox.

Crash safety: events are committed (marked unevaluated) before they are evaluated, alert ids are
deterministic, and an event is marked evaluated once its alerts are stored. After a restart the
pipeline evaluates whatever a crash left unevaluated, however old, and rebuilds its correlation
state by replaying the stored events of the last max-timespan window. An alert whose chain was
complete before the crash but not yet stored is raised then (not lost); one already stored is
recognised by its id (not raised twice).

Event time is attacker-controlled: :class:`TimeBounds` quarantines events dated beyond the host
clock plus a maximum skew, or before a floor, so no single event can move the correlation
watermark into the future (which would blind every correlation rule). Backfill — events older than
the open correlation windows — is evaluated against the stored events around it, not dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .events import MAX_EVENT_TIME, MIN_EVENT_TIME, Alert, DetectionEvent, EventValidationError
from .sigma import RuleSet, results_to_alerts
from .store import IngestResult, Store

#: default tolerance for event clocks ahead of this host's clock
DEFAULT_MAX_SKEW = timedelta(minutes=5)
#: default earliest event time accepted
DEFAULT_TIME_FLOOR = datetime(2000, 1, 1, tzinfo=UTC)


def max_timespan(ruleset: RuleSet) -> timedelta:
    """The longest correlation timespan in ``ruleset`` (zero when it has no correlation)."""
    from sigma.correlations import SigmaCorrelationRule

    spans = [r.timespan.seconds for r in ruleset.collection.rules if isinstance(r, SigmaCorrelationRule)]
    return timedelta(seconds=max(spans, default=0))


@dataclass(frozen=True)
class TimeBounds:
    """Which event times a pipeline accepts: not later than the host clock plus ``max_skew``, not
    earlier than ``floor``. ``clock`` is the host clock (a test may fix it)."""

    max_skew: timedelta = DEFAULT_MAX_SKEW
    floor: datetime = DEFAULT_TIME_FLOOR
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), compare=False)

    def ceiling(self) -> datetime:
        return _clamp(self.clock(), self.max_skew)

    def reject_reason(self, t: datetime, ceiling: datetime) -> str | None:
        if t > ceiling:
            return (f"time {t.isoformat()} is more than {self.max_skew} ahead of this host's clock "
                    f"(max clock skew; refusing to move the correlation watermark)")
        if t < self.floor:
            return f"time {t.isoformat()} is before the floor {self.floor.isoformat()}"
        return None


def _clamp(t: datetime, delta: timedelta) -> datetime:
    """``t + delta`` kept inside the event model's time range (never an OverflowError)."""
    lo, hi = MIN_EVENT_TIME, MAX_EVENT_TIME - timedelta(days=1)
    t = min(max(t, lo), hi)
    try:
        return min(max(t + delta, lo), hi)
    except OverflowError:
        return hi if delta > timedelta(0) else lo


@dataclass
class PipelineResult(IngestResult):
    alerts: list[Alert] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        d = super().summary()
        d["alerts"] = len(self.alerts)
        return d


class Pipeline:
    """Feeds events through the store and the rule engine; stores new alerts with outbox rows.

    ``event_clock=True`` stamps each alert ``created`` = its last event's time instead of the wall
    clock: a simulated or replayed day then raises its alerts when they would have been raised, and
    its outputs are reproducible. ``time_bounds`` decides which event times are accepted."""

    def __init__(self, store: Store, ruleset: RuleSet | None = None, *, sinks: Sequence[str] = (),
                 lateness: timedelta = timedelta(0), recover: bool = True, event_clock: bool = False,
                 time_bounds: TimeBounds | None = None):
        self.store = store
        self.event_clock = event_clock
        self.ruleset = ruleset or RuleSet.bundled()
        self.sinks = list(sinks)
        self.lateness = lateness
        self.time_bounds = time_bounds or TimeBounds()
        self.span = max_timespan(self.ruleset)
        self.evaluator = self.ruleset.stream(lateness=lateness)
        self.recovered_alerts: list[Alert] = []
        if recover:
            self.recovered_alerts = self._recover()

    # -- recovery and backfill -----------------------------------------------------------------
    def _recover(self) -> list[Alert]:
        alerts: list[Alert] = []
        pending = self.store.unevaluated_span()
        if pending is not None:  # a crash between storing events and their alerts
            first, last, ids = pending
            alerts += self._evaluate_backfill(first, last, set(ids))
            self.store.mark_evaluated(ids)
        latest = self.store.latest_event_time()
        if latest is None:
            return alerts
        # a stored event dated far ahead (from before time bounds existed) must not blind recovery
        latest = min(latest, self.time_bounds.ceiling())
        since = _clamp(latest, -(self.span + self.lateness))
        results = []
        for e in self.store.iter_events(since=since, until=latest):
            results.extend(self.evaluator.push(e))
        results.extend(self.evaluator.flush())
        return alerts + self._store_results(results, {})

    def _evaluate_backfill(self, first: datetime, last: datetime, ids: set[str]) -> list[Alert]:
        """Evaluate events ``ids`` (times ``first``..``last``) with the stored events around them in
        a fresh evaluator; keep the results that involve one of them."""
        reach = self.span + self.lateness
        evaluator = self.ruleset.stream(lateness=self.lateness)
        results = []
        for e in self.store.iter_events(since=_clamp(first, -reach), until=_clamp(last, reach)):
            results.extend(evaluator.push(e))
        results.extend(evaluator.flush())
        return self._store_results([r for r in results if ids.intersection(r.event_ids)], {})

    def _open_horizon(self) -> datetime | None:
        """Events older than this are older than every open correlation window (backfill)."""
        if self.evaluator.max_ts is None:
            return None
        try:
            return datetime.fromtimestamp(self.evaluator.max_ts, UTC) - self.span - self.lateness
        except (OverflowError, ValueError, OSError):
            return None

    def _store_results(self, results: list, known: dict[str, DetectionEvent]) -> list[Alert]:
        if not results:
            return []
        needed = {eid for r in results for eid in r.event_ids if eid not in known}
        events = dict(known)
        events.update(self.store.get_events(needed))
        alerts = results_to_alerts(results, events)
        if self.event_clock:
            for a in alerts:
                a.created = a.last_seen
        return self.store.add_alerts(alerts, sinks=self.sinks)

    # -- ingest --------------------------------------------------------------------------------
    def ingest(self, events: Iterable[DetectionEvent], *, source: str = "") -> PipelineResult:
        """Store ``events`` (duplicates counted; times outside :attr:`time_bounds` quarantined with
        the reason) and evaluate the new ones, in time order."""
        ceiling = self.time_bounds.ceiling()
        accepted, refused = [], []
        for e in events:
            reason = self.time_bounds.reject_reason(e.time, ceiling)
            if reason is None:
                accepted.append(e)
            else:
                refused.append((e.to_json(), f"event {e.id!r}: {reason}"))
        if refused:
            self.store.quarantine_many(refused, source=source)
        stored = self.store.add_events(accepted)
        out = PipelineResult(stored=stored.stored, duplicates=stored.duplicates,
                             quarantined=stored.quarantined + len(refused), new_events=stored.new_events)
        horizon = self._open_horizon()
        live = sorted((e for e in stored.new_events if horizon is None or e.time >= horizon),
                      key=lambda e: (e.time, e.id))
        backfill = [e for e in stored.new_events if horizon is not None and e.time < horizon]
        results = []
        for e in live:
            results.extend(self.evaluator.push(e))
        results.extend(self.evaluator.flush())
        out.alerts = self._store_results(results, {e.id: e for e in stored.new_events})
        if backfill:
            out.alerts += self._evaluate_backfill(min(e.time for e in backfill), max(e.time for e in backfill),
                                                  {e.id for e in backfill})
        if stored.new_events:
            self.store.mark_evaluated(e.id for e in stored.new_events)
        return out

    def ingest_lines(self, lines: Iterable[str | bytes], *, source: str = "", batch_size: int = 500) -> PipelineResult:
        """JSON lines → events; bad lines are quarantined with their reason, valid ones kept. Only
        ``\\n`` ends a line (``\\r\\n`` too): U+2028 and other Unicode line breaks are data."""
        total = PipelineResult()
        batch: list[DetectionEvent] = []
        bad: list[tuple[str, str]] = []
        for n, raw in enumerate(lines, start=1):
            text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
            if not text.strip():
                continue
            try:
                batch.append(parse_event_line(text))
            except EventValidationError as exc:
                bad.append((text.rstrip("\r\n"), f"line {n}: {exc}"))
            if len(batch) >= batch_size or len(bad) >= batch_size:
                self._flush(total, batch, bad, source)
                batch, bad = [], []
        self._flush(total, batch, bad, source)
        return total

    def _flush(self, total: PipelineResult, batch: list[DetectionEvent], bad: list[tuple[str, str]],
               source: str) -> None:
        if bad:
            self.store.quarantine_many(bad, source=source)
            total.quarantined += len(bad)
        if batch:
            _merge(total, self.ingest(batch, source=source))


def _merge(total: PipelineResult, part: PipelineResult) -> None:
    total.add(part)
    total.alerts.extend(part.alerts)


def parse_event_line(text: str) -> DetectionEvent:
    """One JSON line → a DetectionEvent; raises EventValidationError naming the problem."""
    try:
        data: Any = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise EventValidationError([{"loc": (), "msg": f"not valid JSON: {exc}"}]) from None
    return DetectionEvent.parse(data)

