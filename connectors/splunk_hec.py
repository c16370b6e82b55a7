"""Splunk HTTP Event Collector (``/services/collector/event``).

``Authorization: Splunk <token>``, a batch of concatenated JSON event objects (one per alert, with
its chain's events); with ``ack=True`` an ``X-Splunk-Request-Channel`` header and
``/services/collector/ack`` polling until the batch is indexed. 5xx, 429, HEC's "server busy"
(code 9) and an unacknowledged batch are retryable; token (2, 4), format (6) and channel (10)
errors are not.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from kizashi.engine.events import Alert, DetectionEvent

from .alertview import AlertView, epoch_ms, views
from .base import DeliveryError
from .http_delivery import check, json_object, post, retryable_status

MAX_CHAIN_EVENTS = 50  # events of an alert's chain carried in its HEC event


class HecSink:
    """Splunk HTTP Event Collector (event endpoint), optional indexer acknowledgement."""

    def __init__(self, url: str, token: str, *, index: str | None = None, sourcetype: str = "kizashi:alert",
                 source: str = "kizashi", ack: bool = False, channel: str | None = None,
                 ack_timeout: float = 30.0, timeout: float = 10.0, name: str = "splunk",
                 verify: bool | str = True):
        self.url = url.rstrip("/")
        self.index, self.sourcetype, self.source = index, sourcetype, source
        self.ack = ack
        self.channel = channel or str(uuid.uuid4())
        self.ack_timeout = ack_timeout
        self.name = name
        headers = {"Authorization": f"Splunk {token}"}
        if ack:
            headers["X-Splunk-Request-Channel"] = self.channel
        self.client = httpx.Client(headers=headers, timeout=timeout, verify=verify)

    def event(self, v: AlertView) -> dict[str, Any]:
        """One HEC event object for an alert."""
        a = v.alert
        ev: dict[str, Any] = {"time": epoch_ms(a.last_seen) / 1000, "host": "kizashi",
                              "source": self.source, "sourcetype": self.sourcetype,
                              "event": {**a.to_dict(), "events": [e.flat() for e in v.events[:MAX_CHAIN_EVENTS]]},
                              "fields": {"atlas_technique": list(a.atlas.techniques), "level": a.level,
                                         "kizashi_alert_id": a.id}}
        if self.index:
            ev["index"] = self.index
        return ev

    def body(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> str:
        # HEC batches are concatenated JSON objects
        return "".join(json.dumps(self.event(v), ensure_ascii=False, default=str) for v in views(alerts, events))

    def send(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> None:
        if not alerts:
            return
        resp = post(self.client, self.name, f"{self.url}/services/collector/event",
                    content=self.body(alerts, events).encode())
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if resp.status_code >= 300:
            code = data.get("code")
            retry = retryable_status(resp.status_code) or code == 9
            raise DeliveryError(f"{self.name}: HTTP {resp.status_code} code {code}: {data.get('text', resp.text[:200])}",
                                retryable=retry)
        if self.ack:
            ack_id = json_object(self.name, resp).get("ackId")
            if not isinstance(ack_id, int):
                raise DeliveryError(f"{self.name}: indexer acknowledgement asked for, but no ackId in "
                                    f"{resp.text[:200]!r}", retryable=True)
            self._wait_ack(ack_id)

    def __repr__(self) -> str:  # never shows the token
        return f"HecSink(name={self.name!r}, url={self.url!r}, ack={self.ack})"

    def _wait_ack(self, ack_id: int) -> None:
        deadline = time.monotonic() + self.ack_timeout
        delay = 0.05
        while time.monotonic() < deadline:
            resp = post(self.client, self.name, f"{self.url}/services/collector/ack", json={"acks": [ack_id]})
            check(self.name, resp)
            acks = json_object(self.name, resp).get("acks")
            if isinstance(acks, dict) and acks.get(str(ack_id)):
                return
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise DeliveryError(f"{self.name}: no indexer acknowledgement for ackId {ack_id}", retryable=True)

    def close(self) -> None:
        self.client.close()
