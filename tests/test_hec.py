"""Splunk HEC sink against a local receiver that enforces HEC's contract (auth, framing, channel, ack, busy)."""

from __future__ import annotations

import pytest
from helpers_alerts import all_alerts, hostile_alert
from kizashi.connectors.base import DeliveryError
from kizashi.connectors.splunk_hec import HecSink
from kizashi.scenarios.receivers import HecReceiver


@pytest.fixture
def receiver():
    r = HecReceiver("tok-123")
    yield r
    r.stop()


def test_batch_is_concatenated_json_with_auth_and_fields(receiver):
    alerts, events = all_alerts()
    sink = HecSink(receiver.url, "tok-123", index="ml_security")
    sink.send(alerts, events)
    assert len(receiver.requests) == 1
    req = receiver.requests[0]
    assert req["headers"]["Authorization"] == "Splunk tok-123"
    body = req["body"].decode()
    assert body.count('{"time"') == len(alerts)  # one object per alert, no array, no separators needed
    got = {e["event"]["id"]: e for e in receiver.events}
    assert set(got) == {a.id for a in alerts}
    first = got[alerts[0].id]
    assert first["index"] == "ml_security" and first["sourcetype"] == "kizashi:alert"
    assert first["fields"]["atlas_technique"] == alerts[0].atlas.techniques
    assert first["time"] == pytest.approx(alerts[0].last_seen.timestamp(), abs=0.001)
    assert [e["id"] for e in first["event"]["events"]] == alerts[0].event_ids
    sink.close()


def test_wrong_or_missing_token_is_not_retryable(receiver):
    alerts, events = all_alerts()
    with pytest.raises(DeliveryError) as err:
        HecSink(receiver.url, "nope").send(alerts, events)
    assert err.value.retryable is False and "code 4" in str(err.value)
    assert receiver.events == []


def test_busy_server_code_9_is_retryable_then_delivers():
    r = HecReceiver("t", busy=1)
    try:
        alerts, events = all_alerts()
        sink = HecSink(r.url, "t")
        with pytest.raises(DeliveryError) as err:
            sink.send(alerts, events)
        assert err.value.retryable is True and "code 9" in str(err.value)
        sink.send(alerts, events)
        assert len(r.events) == len(alerts)
    finally:
        r.stop()


def test_indexer_acknowledgement_polls_until_indexed():
    r = HecReceiver("t", require_ack=True, ack_after_polls=2)
    try:
        h, hev = hostile_alert()
        sink = HecSink(r.url, "t", ack=True, channel="0aeeac95-ac74-4aa9-b30d-6c4c0ac581ba")
        sink.send([h], hev)
        polls = [q for q in r.requests if q["path"].startswith("/services/collector/ack")]
        assert len(polls) == 3  # not yet, not yet, indexed
        assert all(q["headers"]["X-Splunk-Request-Channel"] == sink.channel for q in r.requests)
        assert r.events[0]["event"]["rule"]["title"] == h.rule.title  # hostile text survives JSON intact
        # without a channel the receiver refuses: HEC code 10 is a configuration error
        with pytest.raises(DeliveryError) as err:
            HecSink(r.url, "t", ack=False).send([h], hev)
        assert err.value.retryable is False and "code 10" in str(err.value)
    finally:
        r.stop()


def test_receiver_down_is_retryable():
    r = HecReceiver("t")
    url = r.url
    r.stop()
    alerts, events = all_alerts()
    with pytest.raises(DeliveryError) as err:
        HecSink(url, "t", timeout=2).send(alerts, events)
    assert err.value.retryable is True
