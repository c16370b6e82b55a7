"""The ingest pipeline: validated events → store → Sigma rule engine → alerts → outbox.

Crash safety: events are committed before they are evaluated, and alert ids are deterministic, so
after a restart the pipeline rebuilds its correlation state by replaying the stored events of the
last max-timespan window through a fresh evaluator. An alert whose chain was complete before the
crash but not yet stored is raised then (not lost); one already stored is recognised by its id (not
raised twice).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .events import Alert, DetectionEvent, EventValidationError
from .sigma import RuleSet, results_to_alerts
from .store import IngestResult, Store


def max_timespan(ruleset: RuleSet) -> timedelta:
    """The longest correlation timespan in ``ruleset`` (zero when it has no correlation)."""
    from sigma.correlations import SigmaCorrelationRule

    spans = [r.timespan.seconds for r in ruleset.collection.rules if isinstance(r, SigmaCorrelationRule)]
    return timedelta(seconds=max(spans, default=0))


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
    its outputs are reproducible."""

    def __init__(self, store: Store, ruleset: RuleSet | None = None, *, sinks: Sequence[str] = (),
                 lateness: timedelta = timedelta(0), recover: bool = True, event_clock: bool = False):
        self.store = store
        self.event_clock = event_clock
        self.ruleset = ruleset or RuleSet.bundled()
        self.sinks = list(sinks)
        self.lateness = lateness
        self.evaluator = self.ruleset.stream(lateness=lateness)
        self.recovered_alerts: list[Alert] = []
        if recover:
            self.recovered_alerts = self._recover()

    def _recover(self) -> list[Alert]:
        latest = self.store.latest_event_time()
        if latest is None:
            return []
        since = latest - max_timespan(self.ruleset) - self.lateness
        results = []
        for e in self.store.iter_events(since=since):
            results.extend(self.evaluator.push(e))
        results.extend(self.evaluator.flush())
        return self._store_results(results, {})

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

    def ingest(self, events: Iterable[DetectionEvent]) -> PipelineResult:
        """Store ``events`` (duplicates counted) and evaluate the new ones, in time order."""
        stored = self.store.add_events(events)
        out = PipelineResult(stored=stored.stored, duplicates=stored.duplicates, quarantined=stored.quarantined,
                             new_events=stored.new_events)
        results = []
        for e in sorted(stored.new_events, key=lambda e: (e.time, e.id)):
            results.extend(self.evaluator.push(e))
        results.extend(self.evaluator.flush())
        out.alerts = self._store_results(results, {e.id: e for e in stored.new_events})
        return out

    def ingest_lines(self, lines: Iterable[str | bytes], *, source: str = "", batch_size: int = 500) -> PipelineResult:
        """JSON lines → events; bad lines are quarantined with their reason, valid ones kept."""
        total = PipelineResult()
        batch: list[DetectionEvent] = []
        for n, raw in enumerate(lines, start=1):
            text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
            if not text.strip():
                continue
            try:
                batch.append(parse_event_line(text))
            except EventValidationError as exc:
                self.store.quarantine(text, f"line {n}: {exc}", source=source)
                total.quarantined += 1
                continue
            if len(batch) >= batch_size:
                _merge(total, self.ingest(batch))
                batch = []
        if batch:
            _merge(total, self.ingest(batch))
        return total


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
