"""Sinks from one YAML file: secrets from environment variables, clear errors, working sinks."""

from __future__ import annotations

import json

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


def test_registry_keeps_every_contract_name_and_each_format_renders():
    from kizashi.connectors.registry import FORMATTERS, SINKS, formatter

    assert {"stix", "navigator", "cef", "leef", "ecs", "alerts"} <= set(FORMATTERS)
    assert {"webhook", "splunk_hec", "elastic", "syslog", "stix_file", "taxii"} <= set(SINKS)
    alerts, events = all_alerts()
    for name in FORMATTERS:
        f = formatter(name)
        assert f.name == name
        text = f.render(alerts, events)
        if f.document:  # one JSON document for the batch
            assert isinstance(json.loads(text), dict), name
        else:  # one line per alert, each naming its alert
            lines = text.splitlines()
            assert len(lines) == len(alerts) and text.endswith("\n"), name
            assert all(a.id in line for a, line in zip(alerts, lines, strict=True)), name
    with pytest.raises(ValueError, match="unknown format 'pdf'"):
        formatter("pdf")
    with pytest.raises(ValueError, match="format navigator: .*colour"):
        formatter("navigator", colour="red")


def test_one_severity_table_for_every_receiver():
    from kizashi.connectors.alertview import SEVERITY, view
    from kizashi.connectors.elastic import ecs_document
    from kizashi.connectors.syslog import CefFormatter, Rfc5424Formatter

    alerts, events = all_alerts()
    assert {a.level for a in alerts} >= {"high", "medium"}
    for a in alerts:
        s = SEVERITY[a.level]
        assert CefFormatter().line(a, events).split("|")[6] == str(s.number)
        assert Rfc5424Formatter().line(a, events).startswith(f"<{13 * 8 + s.syslog}>1 ")
        assert ecs_document(view(a, events))["event"]["severity"] == s.score


def test_file_sinks_from_yaml_append_lines_and_replace_documents(tmp_path):
    from kizashi.connectors.files import FileSink

    cfg = tmp_path / "sinks.yaml"
    cfg.write_text(f"""
sinks:
  - {{name: cef-log, type: file, path: "{tmp_path / 'out' / 'alerts.cef'}", format: cef}}
  - {{name: layer, type: file, path: "{tmp_path / 'out' / 'layer.json'}", format: navigator,
     options: {{layer_name: soc}}}}
""")
    cef, layer = load_sinks(cfg)
    assert isinstance(cef, FileSink) and cef.append and not layer.append
    alerts, events = all_alerts()
    cef.send(alerts[:2], events)
    layer.send(alerts[:2], events)
    cef.send(alerts[2:], events)
    layer.send(alerts[2:], events)
    lines = (tmp_path / "out" / "alerts.cef").read_text().splitlines()
    assert [line.split("externalId=")[1].split(" ")[0] for line in lines] == [a.id for a in alerts]
    doc = json.loads((tmp_path / "out" / "layer.json").read_text())
    assert doc["name"] == "soc" and doc["description"].startswith(f"{len(alerts) - 2} kizashi alert(s)")
    assert not list((tmp_path / "out").glob(".tmp-*"))  # the replace left no temporary file
    cfg.write_text(f'sinks:\n  - {{name: s, type: file, path: "{tmp_path / "b.json"}", format: stix, append: true}}\n')
    with pytest.raises(ValueError, match="cannot be appended"):
        load_sinks(cfg)
    cfg.write_text(f'sinks:\n  - {{name: s, type: file, path: "{tmp_path / "b.x"}", format: pdf}}\n')
    with pytest.raises(ValueError, match="unknown format 'pdf'"):
        load_sinks(cfg)
