"""A generic JSON webhook: one POST per batch of ``{"alerts": [...], "events": {id: event}}`` (the
events of the alerts' chains), with an ``Idempotency-Key`` header (sha256 of the batch's alert ids)
and, when a secret is set, ``X-Kizashi-Signature: sha256=<HMAC-SHA256 of the body>``."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence

import httpx
from kizashi.engine.events import Alert, DetectionEvent

from .alertview import views
from .http_delivery import check, post


class WebhookSink:
    """POST ``{"alerts": [...], "events": {...}}`` as JSON."""

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None, secret: str | None = None,
                 timeout: float = 10.0, name: str = "webhook", verify: bool | str = True):
        self.url = url
        self.secret = secret
        self.name = name
        self.client = httpx.Client(headers=dict(headers or {}), timeout=timeout, verify=verify)

    def __repr__(self) -> str:  # never shows the secret
        return f"WebhookSink(name={self.name!r}, url={self.url!r}, signed={self.secret is not None})"

    def body(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> bytes:
        vs = views(alerts, events)
        return json.dumps({"alerts": [v.alert.to_dict() for v in vs],
                           "events": {e.id: e.to_dict() for v in vs for e in v.events}},
                          ensure_ascii=False).encode()

    def send(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> None:
        if not alerts:
            return
        body = self.body(alerts, events)
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": hashlib.sha256(",".join(a.id for a in alerts).encode()).hexdigest()}
        if self.secret:
            headers["X-Kizashi-Signature"] = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        check(self.name, post(self.client, self.name, self.url, content=body, headers=headers))

    def close(self) -> None:
        self.client.close()
