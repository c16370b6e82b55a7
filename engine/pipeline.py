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
from itertools import islice
from typing import Any

from .alerting import AlertingConfig
from .events import MAX_EVENT_TIME, MIN_EVENT_TIME, Alert, DetectionEvent, EventValidationError
from .incidents import group_key, merge, suppression_group
from .jsontext import loads_checked
from .risk import RISK_RULE_PREFIX, RiskEngine, entities
from .sigma import RuleResult, RuleSet, results_to_alerts
from .sigma.microbatch import admit_batch
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
    alerts: list[Alert] = field(default_factory=list)  # new alerts
    updated: list[Alert] = field(default_factory=list)  # alerts updated by a later result (suppression)
    observations: int = 0

    def summary(self) -> dict[str, int]:
        d = super().summary()
        d["alerts"] = len(self.alerts)
        d["alerts_updated"] = len(self.updated)
        d["observations"] = self.observations
        return d


class Pipeline:
    """Feeds events through the store and the rule engine; rule results become alerts (stored with
    outbox rows, one incident per rule and group per suppression window) or risk observations
    (stored with their event), and observations add entity risk (:mod:`.risk`), as ``alerting``
    says (default: the bundled pack's SOC defaults with the bundled pack, plain Sigma otherwise).

    ``event_clock=True`` stamps each alert ``created`` = its last event's time instead of the wall
    clock: a simulated or replayed day then raises its alerts when they would have been raised, and
    its outputs are reproducible. ``time_bounds`` decides which event times are accepted."""

    def __init__(self, store: Store, ruleset: RuleSet | None = None, *, sinks: Sequence[str] = (),
                 lateness: timedelta = timedelta(0), recover: bool = True, event_clock: bool = False,
                 time_bounds: TimeBounds | None = None, alerting: AlertingConfig | None = None):
        self.store = store
        self.event_clock = event_clock
        if alerting is None:
            alerting = AlertingConfig.bundled() if ruleset is None else AlertingConfig()
        self.alerting = alerting
        self.ruleset = ruleset or RuleSet.bundled()
        self.sinks = list(sinks)
        self.lateness = lateness
        self.time_bounds = time_bounds or TimeBounds()
        self.span = max_timespan(self.ruleset)
        self.evaluator = self.ruleset.observing().stream(lateness=lateness)
        self.risk = RiskEngine(alerting, lateness=lateness) if alerting.risk_enabled else None
        self.updated_alerts: list[Alert] = []
        self.observation_count = 0
        self._named: dict[tuple[str, str], Any] = {}  # (field, entity) -> last_seen of an open non-risk incident
        latest = store.latest_event_time()
        if latest is not None:
            for a in store.list_alerts(since=_clamp(latest, -alerting.suppression_window)):
                self._note_incident(a)
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
        known: dict[str, DetectionEvent] = {}
        results = _admit_stored(self.evaluator, self.store.iter_events(since=since, until=latest), known)
        results.extend(self.evaluator.flush())
        return alerts + self._store_results(results, known)

    def _evaluate_backfill(self, first: datetime, last: datetime, ids: set[str]) -> list[Alert]:
        """Evaluate events ``ids`` (times ``first``..``last``) with the stored events around them in
        a fresh evaluator; keep the results that involve one of them."""
        reach = self.span + self.lateness
        evaluator = self.ruleset.observing().stream(lateness=self.lateness)
        results = _admit_stored(evaluator, self.store.iter_events(since=_clamp(first, -reach),
                                                                  until=_clamp(last, reach)))
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

    def _store_results(self, results: list[RuleResult], known: dict[str, DetectionEvent]) -> list[Alert]:
        """Results -> observations (with entity risk) and alerts (new incidents or updates)."""
        if not results:
            return []
        info, correlated = self.ruleset.info, self.ruleset.correlated_keys
        alerting = [self.alerting.delivers(r.type, info[r.rule_id], correlated=r.rule_id in correlated)
                    for r in results]
        # an observation (every match, every result that does not alert) needs its last event; an
        # alert its whole chain, of which it reads only what an EventSummary holds
        events: dict[str, Any] = dict(known)
        events.update(self.store.get_events({r.event_ids[-1] for r, alert in zip(results, alerting, strict=True)
                                             if (r.type == "match" or not alert) and r.event_ids[-1] not in known}))
        events.update(self.store.get_event_summaries({eid for r, alert in zip(results, alerting, strict=True)
                                                      if alert for eid in r.event_ids if eid not in events}))
        delivered, observations, records = [], [], []
        for r, alert in zip(results, alerting, strict=True):  # every detection match is an observation
            if alert:
                delivered.append(r)
            risk = 0.0
            if r.type == "match":
                event = events[r.event_ids[0]]
                risk = self.alerting.points(r.level, event.severity)
                if self.risk is not None:
                    records += self.risk.records(event, r.level, r.tags)[1]
            if r.type == "match" or not alert:
                observations.append(self._observation(r, events, risk))
        self.observation_count += self.store.add_observations(observations)
        if self.risk is not None and records:
            risk_results = self.risk.push(records) + self.risk.flush()
            events.update(self.store.get_event_summaries(
                {eid for r in risk_results for eid in r.event_ids if eid not in events}))
            delivered += risk_results
        alerts = results_to_alerts(delivered, events)
        by_id = {r.id: r for r in delivered}
        for a in alerts:
            if self.event_clock:
                a.created = a.last_seen
            if by_id[a.id].type == "match":
                a.group = suppression_group(events[a.event_ids[0]], self.alerting.suppress_by)
        alerts.sort(key=lambda a: (a.last_seen, a.rule.id.startswith(RISK_RULE_PREFIX), a.id))
        return self._raise(alerts)

    def _observation(self, r: RuleResult, events: dict[str, DetectionEvent], risk: float) -> dict:
        last = events[r.event_ids[-1]]
        body = r.to_dict()
        body.update(event_ids=r.event_ids, risk=round(risk, 6), entities=entities(last))
        return {"id": r.id, "event_id": last.id, "rule_id": r.rule_id, "kind": r.type,
                "time": r.last_seen or last.time, "risk": risk, "body": body}

    def _raise(self, alerts: list[Alert]) -> list[Alert]:
        """Each alert: a new incident, an update of an open one (same rule and group within the
        suppression window), or, for a risk alert about an entity an open incident names, nothing.

        The batch's stored ids and open incidents are read in two queries; new incidents are written
        together, before any later alert of the batch updates one of them."""
        if not alerts:
            return []
        window = self.alerting.suppression_window
        stored = self.store.stored_alert_ids(a.id for a in alerts)  # a replay after a restart
        fresh = [a for a in alerts if a.id not in stored]
        if not fresh:
            return []
        since = min(a.first_seen for a in fresh) - window
        incidents = self.store.open_alerts({(a.rule.id, group_key(a.group)) for a in fresh}, since=since)
        new: list[Alert] = []
        pending: list[Alert] = []  # new incidents not yet written
        for a in fresh:
            if a.id in stored:
                continue  # raised earlier in this batch
            if a.rule.id.startswith(RISK_RULE_PREFIX) and self._named_by_incident(a.group, a.last_seen - window):
                continue  # an open incident already names this entity
            key = (a.rule.id, group_key(a.group))
            incident = incidents.get(key)
            if incident is not None and incident.last_seen < a.first_seen - window:
                incident = None
            if incident is None:
                pending.append(a)
                stored.add(a.id)
                incidents[key] = a
                self._note_incident(a)
                continue
            if any(p.id == incident.id for p in pending):
                new += self.store.add_alerts(pending, sinks=self.sinks)
                pending = []
            updated = merge(incident, a, now=a.last_seen if self.event_clock else a.created)
            if updated is not None:
                self.store.update_alert(updated, sinks=self.sinks)
                self.updated_alerts.append(updated)
                incidents[key] = updated
                self._note_incident(updated)
        return new + self.store.add_alerts(pending, sinks=self.sinks)

    def _named_by_incident(self, group: dict[str, Any], since: Any) -> bool:
        seen = [self._named.get((f, str(v))) for f, v in group.items()]
        return bool(seen) and all(t is not None and t >= since for t in seen)

    def _note_incident(self, a: Alert) -> None:
        """Remember the entities a non-risk incident names (for :meth:`_raise`)."""
        if a.rule.id.startswith(RISK_RULE_PREFIX):
            return
        for f, values in (("account.id", a.accounts), ("model.id", a.models)):
            for v in values:
                key = (f, v)
                if key not in self._named or self._named[key] < a.last_seen:
                    self._named[key] = a.last_seen

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
        results = admit_batch(self.evaluator, live)
        results.extend(self.evaluator.flush())
        before_updates, before_obs = len(self.updated_alerts), self.observation_count
        out.alerts = self._store_results(results, {e.id: e for e in stored.new_events})
        if backfill:
            out.alerts += self._evaluate_backfill(min(e.time for e in backfill), max(e.time for e in backfill),
                                                  {e.id for e in backfill})
        if stored.new_events:
            self.store.mark_evaluated(e.id for e in stored.new_events)
        out.updated = self.updated_alerts[before_updates:]
        out.observations = self.observation_count - before_obs
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


def _admit_stored(evaluator: Any, events: Iterable[DetectionEvent], known: dict[str, DetectionEvent] | None = None,
                  *, chunk: int = 1024) -> list[RuleResult]:
    """Stored events (time order) through ``evaluator`` in column-wise chunks (bounded memory however
    long the replayed window); ``known`` collects them by id when given."""
    results: list[RuleResult] = []
    it = iter(events)
    while batch := list(islice(it, chunk)):
        if known is not None:
            known.update((e.id, e) for e in batch)
        results.extend(admit_batch(evaluator, batch))
    return results


def _merge(total: PipelineResult, part: PipelineResult) -> None:
    total.add(part)
    total.alerts.extend(part.alerts)
    total.updated.extend(part.updated)
    total.observations += part.observations


def parse_event_line(text: str) -> DetectionEvent:
    """One JSON line → a DetectionEvent; raises EventValidationError naming the problem."""
    try:
        data, checked = loads_checked(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise EventValidationError([{"loc": (), "msg": f"not valid JSON: {exc}"}]) from None
    return DetectionEvent.parse(data, unicode_checked=checked)

