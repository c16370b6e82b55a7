"""Generic JSON webhook: HMAC signature, idempotency key, retry decisions."""

from __future__ import annotations

import pytest
from helpers_alerts import all_alerts, hostile_alert
from kizashi.connectors.base import DeliveryError
from kizashi.connectors.webhook import WebhookSink
from kizashi.scenarios.receivers import WebhookReceiver


def test_signed_post_is_verified_and_resend_has_same_idempotency_key():
    r = WebhookReceiver(secret="hook-secret")
    try:
        alerts, events = all_alerts()
        h, hev = hostile_alert()
        sink = WebhookSink(r.url, secret="hook-secret")
        sink.send(alerts + [h], {**events, **hev})
        sink.send(alerts + [h], {**events, **hev})
        assert len(r.requests) == 2 and len(r.deliveries) == 1
        (payload,) = r.deliveries.values()
        assert [a["id"] for a in payload["alerts"]] == [a.id for a in alerts] + [h.id]
        assert payload["alerts"][-1]["rule"]["title"] == h.rule.title
        assert set(payload["events"]) == {i for a in alerts + [h] for i in a.event_ids}
    finally:
        r.stop()


def test_wrong_secret_is_not_retryable_and_5xx_is():
    r = WebhookReceiver(secret="right", fail=1)
    try:
        alerts, events = all_alerts()
        with pytest.raises(DeliveryError) as err:
            WebhookSink(r.url, secret="wrong").send(alerts, events)
        assert err.value.retryable is False and "401" in str(err.value)
        with pytest.raises(DeliveryError) as err:
            WebhookSink(r.url, secret="right").send(alerts, events)
        assert err.value.retryable is True and "502" in str(err.value)
        WebhookSink(r.url, secret="right").send(alerts, events)
        assert len(r.deliveries) == 1
    finally:
        r.stop()


def test_webhook_signature_covers_a_timestamp_and_replays_outside_the_window_are_refused():
    import time

    import httpx
    from kizashi.connectors.webhook import sign, verify_signature

    body = b'{"alerts": []}'
    now = time.time()
    header = sign("s", body, int(now))
    assert verify_signature("s", body, header, now=now)
    assert not verify_signature("s", body, header, now=now + 301)  # replayed after the window
    assert not verify_signature("s", body + b" ", header, now=now)  # body changed
    forged = header.replace(f"t={int(now)}", f"t={int(now) + 600}")  # timestamp moved: MAC no longer matches
    assert not verify_signature("s", body, forged, now=now + 600)
    assert not verify_signature("s", body, "sha256=" + "0" * 64, now=now)  # the old unsigned-time form
    r = WebhookReceiver(secret="s")
    try:
        alerts, events = all_alerts()
        WebhookSink(r.url, secret="s").send(alerts, events)
        assert len(r.deliveries) == 1
        old = sign("s", body, int(now) - 3600)  # a captured request, replayed an hour later
        resp = httpx.post(r.url, content=body, headers={"Content-Type": "application/json", "Idempotency-Key": "k",
                                                        "X-Kizashi-Signature": old})
        assert resp.status_code == 401 and "replay window" in resp.json()["error"]
    finally:
        r.stop()
