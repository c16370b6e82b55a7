"""Sinks from one YAML file: secrets from environment variables, clear errors, working sinks."""

from __future__ import annotations

import pytest
from helpers_alerts import all_alerts
from kizashi.connectors.config import load_sinks
from kizashi.connectors.splunk_hec import HecSink
from kizashi.connectors.stix import StixFileSink
from kizashi.connectors.syslog import SyslogSink
from kizashi.connectors.taxii import TaxiiSink
from kizashi.connectors.webhook import WebhookSink
from kizashi.scenarios.receivers import HecReceiver, WebhookReceiver


def test_sinks_built_from_yaml_with_env_secrets_deliver(tmp_path, monkeypatch):
    hec, hook = HecReceiver("hec-tok-9f"), WebhookReceiver(secret="hook-sec-77")
    try:
        monkeypatch.setenv("KZ_HEC_TOKEN", "hec-tok-9f")
        monkeypatch.setenv("KZ_HOOK_SECRET", "hook-sec-77")
        monkeypatch.setenv("KZ_TAXII_PW", "taxii-pw-55")
        cfg = tmp_path / "sinks.yaml"
        cfg.write_text(f"""
sinks:
  - {{name: splunk, type: splunk_hec, url: "{hec.url}", token: "${{KZ_HEC_TOKEN}}"}}
  - {{name: hook, type: webhook, url: "{hook.url}/in", secret: "${{KZ_HOOK_SECRET}}"}}
  - {{name: siem, type: syslog, host: 127.0.0.1, port: 5514, protocol: tcp, format: leef}}
  - {{name: drop, type: stix_file, directory: "{tmp_path / 'stix'}"}}
  - {{name: cti, type: taxii, url: "http://127.0.0.1:9/api1/", collection: c1, user: kz, password: "${{KZ_TAXII_PW}}"}}
""")
        sinks = load_sinks(cfg)
        assert [type(s) for s in sinks] == [HecSink, WebhookSink, SyslogSink, StixFileSink, TaxiiSink]
        assert [s.name for s in sinks] == ["splunk", "hook", "siem", "drop", "cti"]
        for s in sinks:  # secrets never appear in a sink's printed form
            assert not any(x in repr(s) for x in ("hec-tok-9f", "hook-sec-77", "taxii-pw-55"))
        assert sinks[4].collection_url == "http://127.0.0.1:9/api1/collections/c1/"
        alerts, events = all_alerts()
        sinks[0].send(alerts, events)
        sinks[1].send(alerts, events)
        sinks[3].send(alerts, events)
        assert len(hec.events) == len(alerts) and len(hook.deliveries) == 1
        assert len(list((tmp_path / "stix").glob("bundle--*.json"))) == 1
    finally:
        hec.stop()
        hook.stop()


def test_missing_env_var_is_named_and_its_neighbours_not_leaked(tmp_path, monkeypatch):
    monkeypatch.delenv("KZ_ABSENT", raising=False)
    cfg = tmp_path / "sinks.yaml"
    cfg.write_text('sinks:\n  - {name: s, type: splunk_hec, url: "http://127.0.0.1:1", token: "${KZ_ABSENT}"}\n')
    with pytest.raises(ValueError, match="KZ_ABSENT"):
        load_sinks(cfg)


@pytest.mark.parametrize("body, message", [
    ("sinks:\n  - {name: x, type: carrier_pigeon}\n", "unknown type 'carrier_pigeon'"),
    ("sinks:\n  - {type: webhook, url: 'http://127.0.0.1:1'}\n", "needs name and type"),
    ("sinks: {}\n", "'sinks:' list"),
    ("sinks:\n  - {name: a, type: webhook, url: 'http://127.0.0.1:1', colour: red}\n", "colour"),
    ("sinks:\n  - {name: a, type: stix_file, directory: /tmp/a}\n  - {name: a, type: stix_file, directory: /tmp/b}\n",
     "unique"),
])
def test_bad_config_errors_name_the_problem(tmp_path, body, message):
    cfg = tmp_path / "sinks.yaml"
    cfg.write_text(body)
    with pytest.raises(ValueError, match=message):
        load_sinks(cfg)
