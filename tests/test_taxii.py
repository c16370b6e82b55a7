"""TAXII 2.1 push against a real medallion 3.0.0 server (memory backend) on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
import requests
from helpers_alerts import RULE_TEXTS, all_alerts, hostile_alert
from kizashi.connectors.base import DeliveryError
from kizashi.connectors.stix import StixFormatter
from kizashi.connectors.taxii import TaxiiSink
from taxii2client.v21 import Collection

COLLECTION = "365fed99-08fa-fdcd-a1b3-fb247eb41d01"
READONLY = "472c94ae-3113-4e3e-a4dd-a9f4ac7471d4"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _collection(cid: str, write: bool) -> dict:
    return {"id": cid, "title": cid, "can_read": True, "can_write": write,
            "media_types": ["application/stix+json;version=2.1"], "objects": [], "manifest": []}


@pytest.fixture(scope="module")
def medallion(tmp_path_factory):
    d = tmp_path_factory.mktemp("medallion")
    data = {
        "/discovery": {"title": "kizashi test", "default": "http://127.0.0.1/api1/", "api_roots": []},
        "api1": {
            "information": {"title": "api1", "versions": ["application/taxii+json;version=2.1"],
                            "max_content_length": 9765625},
            "status": [],
            "collections": [_collection(COLLECTION, True), _collection(READONLY, False)],
        },
    }
    (d / "data.json").write_text(json.dumps(data))
    config = {"backend": {"module": "medallion.backends.memory_backend", "module_class": "MemoryBackend", "filename": str(d / "data.json")},
              "users": {"soc": "s3cret"}, "taxii": {"max_page_size": 100}}
    (d / "config.json").write_text(json.dumps(config))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "medallion.scripts.run", "--host", "127.0.0.1", "--port", str(port),
         str(d / "config.json")],
        stdout=subprocess.DEVNULL, stderr=open(d / "log.txt", "w"),
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        if proc.poll() is not None:
            break
        try:
            requests.get(base + "/taxii2/", timeout=0.5)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("medallion did not start: " + (d / "log.txt").read_text())
    yield base
    proc.terminate()
    proc.wait(10)


def _read_all(base: str, cid: str) -> list[dict]:
    c = Collection(f"{base}/api1/collections/{cid}/", user="soc", password="s3cret")
    return c.get_objects().get("objects", [])


def test_push_then_read_back_and_resend_does_not_duplicate(medallion):
    alerts, events = all_alerts()
    sink = TaxiiSink(medallion + "/api1/", collection=COLLECTION, user="soc", password="s3cret",
                     formatter=StixFormatter(RULE_TEXTS))
    sink.send(alerts, events)
    stored = _read_all(medallion, COLLECTION)
    bundle = StixFormatter(RULE_TEXTS).bundle(alerts, events)
    expected = {o["id"] for o in bundle["objects"] if o["type"] != "extension-definition"}
    assert {o["id"] for o in stored} == expected
    sightings = [o for o in stored if o["type"] == "sighting"]
    assert len(sightings) == len(alerts)
    sink.send(alerts, events)  # a retry after a lost acknowledgement
    again = _read_all(medallion, COLLECTION)
    assert len(again) == len(stored)
    # a new alert adds its own objects, shared ones (identity, attack-patterns) are not repeated
    h, hev = hostile_alert()
    sink.send([h], hev)
    after = _read_all(medallion, COLLECTION)
    assert len({o["id"] for o in after}) == len(after)
    assert sum(o["type"] == "sighting" for o in after) == len(alerts) + 1
    sink.close()


def test_bad_credentials_are_not_retryable(medallion):
    alerts, events = all_alerts()
    sink = TaxiiSink(f"{medallion}/api1/collections/{COLLECTION}/", user="soc", password="wrong")
    with pytest.raises(DeliveryError) as err:
        sink.send(alerts[:1], events)
    assert err.value.retryable is False and "401" in str(err.value)


def test_read_only_collection_is_refused(medallion):
    alerts, events = all_alerts()
    sink = TaxiiSink(medallion + "/api1/", collection=READONLY, user="soc", password="s3cret")
    with pytest.raises(DeliveryError) as err:
        sink.send(alerts[:1], events)
    assert err.value.retryable is False and "does not allow writing" in str(err.value)
    assert repr(sink).count("s3cret") == 0


def test_server_down_is_retryable():
    alerts, events = all_alerts()
    sink = TaxiiSink(f"http://127.0.0.1:{_free_port()}/api1/", collection=COLLECTION, user="soc", password="x")
    with pytest.raises(DeliveryError) as err:
        sink.send(alerts[:1], events)
    assert err.value.retryable is True
