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
