"""The one protocol every output sink implements, and the error it raises.

A sink receives batches of alerts together with the events their chains name. The outbox (engine
store) calls ``send`` with retries and exponential backoff; a sink must be idempotent per alert id
where its receiver can dedupe (STIX ids derived from alert ids, HEC/Elastic ``_id``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from kizashi.engine.events import Alert, DetectionEvent


class DeliveryError(RuntimeError):
    """Delivery failed. ``retryable`` says whether trying again later may succeed."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


@runtime_checkable
class Sink(Protocol):
    """An alert destination (STIX file, TAXII collection, syslog, Splunk HEC, Elastic, webhook ...)."""

    name: str

    def send(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> None:
        """Deliver ``alerts`` (``events`` maps event id -> event for their chains); raise
        :class:`DeliveryError` on failure."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class Formatter(Protocol):
    """Renders alerts (and their events) as one document or line stream, for files and stdout."""

    name: str

    def render(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> str:
        ...
