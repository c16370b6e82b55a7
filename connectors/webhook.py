"""A generic JSON webhook: one POST per batch of ``{"alerts": [...], "events": {id: event}}`` (the
events of the alerts' chains), with an ``Idempotency-Key`` header (sha256 of the batch's alert ids and their ``occurrences``:
a re-send has the same key, an update of an alert a new one).

When a secret is set the request is signed the way common webhook schemes do it (Stripe, Slack):
``X-Kizashi-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``. The timestamp is
inside the MAC, so a receiver that checks it (:func:`verify_signature`, default window 5 minutes)
refuses a captured request replayed later, and the idempotency key refuses one replayed within the
window."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence

import httpx
from kizashi.engine.events import Alert, DetectionEvent

from .alertview import views
from .http_delivery import check, post

SIGNATURE_HEADER = "X-Kizashi-Signature"
REPLAY_WINDOW_SECONDS = 300


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value for ``body`` at ``timestamp`` (default now)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(secret: str, body: bytes, header: str | None, *, tolerance: float = REPLAY_WINDOW_SECONDS,
                     now: float | None = None) -> bool:
    """Receiver side: the MAC matches and the signed timestamp is within ``tolerance`` seconds of
    ``now`` (pair with the ``Idempotency-Key`` to refuse replays inside the window too)."""
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts.get("t", ""))
    except ValueError:
        return False
    want = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(parts.get("v1", ""), want):
        return False
    return abs((time.time() if now is None else now) - t) <= tolerance


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
                   "Idempotency-Key": hashlib.sha256(",".join(f"{a.id}@{a.occurrences}" for a in alerts).encode()).hexdigest()}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        check(self.name, post(self.client, self.name, self.url, content=body, headers=headers))

    def close(self) -> None:
        self.client.close()
