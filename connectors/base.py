"""The protocols every output implements (:class:`Sink`, :class:`Formatter`), the error sinks
raise, and :class:`RecordFormatter`, the base of the one-record-per-alert formats.

A sink receives batches of alerts together with the events their chains name. The outbox (engine
store) calls ``send`` with retries and exponential backoff; a sink must be idempotent per alert id
where its receiver can dedupe (STIX ids derived from alert ids, HEC/Elastic ``_id``, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol, runtime_checkable

from kizashi.engine.events import Alert, DetectionEvent

from .alertview import AlertView, view, views


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
    """Renders alerts (and their events) as one document or line stream, for files and stdout.

    ``document`` says which: ``True`` when ``render`` returns one document for the whole batch (a
    STIX bundle, a Navigator layer), ``False`` when it returns one line per alert (files of such
    formats can be appended to)."""

    name: str
    document: bool

    def render(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> str:
        ...


class RecordFormatter(ABC):
    """A format of one line per alert, written from the alert's :class:`AlertView`; subclasses
    implement :meth:`record`."""

    name: ClassVar[str]
    document: ClassVar[bool] = False

    @abstractmethod
    def record(self, v: AlertView) -> str:
        """The alert as one line (no newline)."""

    def line(self, alert: Alert, events: Mapping[str, DetectionEvent]) -> str:
        return self.record(view(alert, events))

    def render(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> str:
        return "".join(self.record(v) + "\n" for v in views(alerts, events))
