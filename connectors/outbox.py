"""The delivery worker: drains the store's outbox into sinks with retries and exponential backoff.

At-least-once: an outbox row is marked delivered only after its sink accepted the batch; a failed
batch is retried after ``base * 2**attempts`` seconds (capped, with jitter). Sinks dedupe by alert
id where their receiver can (STIX ids, Elastic ``_id``, webhook ``Idempotency-Key``), so a retry
after a lost acknowledgement does not duplicate an alert there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from kizashi.engine.events import Alert, DetectionEvent
from kizashi.engine.store import Store

from .base import DeliveryError, Sink


@dataclass
class Backoff:
    base: float = 1.0
    cap: float = 300.0
    jitter: float = 0.2

    def delay(self, attempts: int, rng: random.Random | None = None) -> timedelta:
        d = min(self.cap, self.base * (2 ** max(0, attempts)))
        r = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return timedelta(seconds=d * r)


@dataclass
class DeliveryReport:
    delivered: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "failed": self.failed, "errors": self.errors}


def deliver(store: Store, sinks: list[Sink], *, batch_size: int = 100, backoff: Backoff | None = None,
            max_batches: int = 1000) -> DeliveryReport:
    """One pass over the outbox: every due row of every sink, in batches; each batch lists its alerts
    in the store's order (first seen, id), so what a sink writes does not depend on when rows were
    queued. Alerts and events read for one sink are reused for the next (up to a bound)."""
    backoff = backoff or Backoff()
    report = DeliveryReport()
    queued = store.outbox_status()
    total = store.count_alerts()
    alerts_read: dict[str, Alert] = {}
    events_read: dict[str, DetectionEvent] = {}
    keep = max(10_000, batch_size)
    for sink in sinks:
        if sum(queued.get(sink.name, {}).values()) < total:  # alerts raised before this sink was configured
            store.enqueue(sorted(store.alert_ids()), sink.name)
        for _ in range(max_batches):
            items = store.pending(sink.name, limit=batch_size)
            if not items:
                break
            if len(alerts_read) > keep:
                alerts_read.clear()
                events_read.clear()
            alerts_read.update((i.alert_id, store.get_alert(i.alert_id)) for i in items if i.alert_id not in alerts_read)
            alerts = sorted((a for a in (alerts_read[i.alert_id] for i in items) if a is not None),
                            key=lambda a: (a.first_seen, a.id))
            events_read.update(store.get_events({e for a in alerts for e in a.event_ids if e not in events_read}))
            events = {e: events_read[e] for a in alerts for e in a.event_ids if e in events_read}
            try:
                sink.send(alerts, events)
            except Exception as exc:  # noqa: BLE001 - one broken sink must not stop the others
                if not isinstance(exc, DeliveryError):  # a sink bug or an answer it did not expect
                    exc = DeliveryError(f"{sink.name}: {type(exc).__name__}: {exc}", retryable=True)
                attempts = max(i.attempts for i in items)
                delay = backoff.delay(attempts) if exc.retryable else timedelta(days=3650)
                store.mark_failed([i.id for i in items], str(exc), retry_in=delay)
                report.failed[sink.name] = report.failed.get(sink.name, 0) + len(items)
                report.errors[sink.name] = str(exc)
                break
            store.mark_delivered([i.id for i in items])
            report.delivered[sink.name] = report.delivered.get(sink.name, 0) + len(items)
    return report
