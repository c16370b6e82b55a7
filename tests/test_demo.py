"""`kizashi demo` end to end: campaigns caught and correlated, benign accounts spared, outputs valid,
deterministic, and the report renders in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from kizashi.cli.demo_run import CAMPAIGNS, DEMO_DB_FILE, run_demo
from stix2validator import validate_string

pytestmark = pytest.mark.slow  # the module's demo run and its checks take about a minute together


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = run_demo(out, seed=0, n_benign=40)
    return out, summary


def test_every_campaign_correlated_with_precursor_and_symptom(demo_out):
    out, summary = demo_out
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    events = {json.loads(line)["id"]: json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()}
    for key in CAMPAIGNS:
        c = summary["campaigns"][key]
        assert c["detected"], (key, c)
        assert c["all_expected_techniques_tagged"], (key, c["techniques_in_alert"])
        for aid in c["correlated_alert_ids"]:
            a = next(x for x in alerts if x["id"] == aid)
            chain = [events[i] for i in a["event_ids"]]
            assert a["rule"]["type"] == "correlation" and len(chain) >= 2
            assert {e["stage"] for e in chain} & {"precursor", "symptom"}
    # the poisoning campaign's chain: training-time finding, then a runtime trigger on the same model
    c = summary["campaigns"]["C"]
    a = next(x for x in alerts if x["id"] == c["correlated_alert_ids"][0])
    stages = [events[i]["stage"] for i in a["event_ids"]]
    assert stages[0] == "precursor" and "symptom" in stages
    assert {events[i]["target"]["model"] for i in a["event_ids"]} == {"digits-mlp-retrained"}
    # both pre-deployment scans found the backdoor: spectre on the data, b3d on the retrained model
    scan = summary["training_data_scan"]
    assert scan["recall"] >= 0.9 and scan["target_class"] == 0 and scan["false_flags"] < 0.05 * 808
    assert scan["model_scan"]["suspicious"] and scan["model_scan"]["target_class"] == 0
    b3d = [e for e in events.values() if e["detector"]["name"] == "b3d"]
    assert len(b3d) == 1 and b3d[0]["stage"] == "precursor" and b3d[0]["target"]["model"] == "digits-mlp-retrained"


def test_no_benign_account_in_a_correlated_alert(demo_out):
    out, summary = demo_out
    assert summary["benign"]["accounts_in_correlated_alerts"] == []
    for line in (out / "alerts.jsonl").read_text().splitlines():
        a = json.loads(line)
        if a["rule"]["type"] == "correlation":
            assert not [x for x in a["accounts"] if x.startswith("user-")], a


def test_soc_is_handed_incidents_and_keeps_every_observation(demo_out):
    """Issue 18: at most two delivered alerts per campaign, the first before the campaign's first
    successful attack input, no benign account in a delivered alert; every per-event observation is
    still in the store, in observations.jsonl and in `kizashi alerts list --observations`."""
    out, summary = demo_out
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    assert len({a["id"] for a in alerts}) == len(alerts) == summary["soc"]["delivered_alerts"]  # each once
    assert summary["soc"]["benign_accounts_in_delivered_alerts"] == 0
    for key, c in summary["campaigns"].items():
        assert 1 <= c["delivered_alerts"] <= 2, (key, c["delivered_alert_rules"])
        assert c["first_delivered_alert_time"] < c["first_successful_attack_input_time"], (key, c)
        assert c["first_delivered_alert_before_first_success"]
    # the campaign types raised are the campaigns run (docs/rules.md, campaign precision)
    raised = {a["rule"]["name"] for a in alerts if "acct-B" in a["accounts"] and a["rule"]["type"] == "correlation"}
    assert raised == {"kizashi_campaign_probing_then_evasion"}
    # latest state: an updated alert is delivered once, with its merged chain
    assert all(a["count"] == len(a["event_ids"]) for a in alerts)
    # every rule match on an event is an observation: re-evaluate the events with the pack
    from kizashi.engine.events import DetectionEvent
    from kizashi.engine.sigma import RuleSet

    events = [DetectionEvent.parse(line) for line in (out / "events.jsonl").read_text().splitlines()]
    matches = {(r.rule_id, r.event_ids[0]) for r in RuleSet.bundled().observing().evaluate_batch(events)
               if r.type == "match"}
    observed = [json.loads(line) for line in (out / "observations.jsonl").read_text().splitlines()]
    assert {(o["rule"], o["event_id"]) for o in observed if o["type"] == "match"} == matches
    assert len(observed) == summary["observations"]
    r = subprocess.run([sys.executable, "-m", "kizashi.cli.main", "alerts", "list", "--observations", "--format",
                        "json", "--db", f"sqlite:///{out / DEMO_DB_FILE}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [json.loads(x) for x in r.stdout.splitlines()] == observed
    # the STIX bundle holds one grouping per delivered alert
    bundle = json.loads((out / "stix-bundle.json").read_text())
    assert len([o for o in bundle["objects"] if o["type"] == "grouping"]) == len(alerts)


def test_outputs_valid(demo_out, tmp_path):
    out, summary = demo_out
    for name in ("events.jsonl", "alerts.jsonl", "stix-bundle.json", "navigator-layer.json", "alerts.cef",
                 "summary.json", "report.html", "observations.jsonl"):
        assert (out / name).stat().st_size > 0, name
    result = validate_string((out / "stix-bundle.json").read_text())
    assert result.is_valid and not result.errors
    layer = json.loads((out / "navigator-layer.json").read_text())
    scored = {t["techniqueID"] for t in layer["techniques"] if "score" in t}
    assert {"AML.T0024.002", "AML.T0043.001", "AML.T0043.004", "AML.T0015"} <= scored
    cef = (out / "alerts.cef").read_text().splitlines()
    assert len(cef) == summary["alerts"] and all(line.startswith("CEF:0|kizashi|") for line in cef)
    # events.jsonl is ingestible by `kizashi ingest` and raises the same correlations
    db = f"sqlite:///{tmp_path / 'again.db'}"
    r = subprocess.run([sys.executable, "-m", "kizashi.cli.main", "ingest", str(out / "events.jsonl"), "--db", db],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stored"] == summary["events"]


def test_deterministic_for_a_seed(demo_out, tmp_path):
    out, summary = demo_out
    again = run_demo(tmp_path, seed=0, n_benign=40)
    for key in ("queries", "events", "alerts", "campaigns", "benign", "events_by_detector", "alerts_by_rule",
                "soc", "observations"):
        assert again[key] == summary[key], key
    assert (tmp_path / "events.jsonl").read_text() == (out / "events.jsonl").read_text()
    assert (tmp_path / "alerts.jsonl").read_text() == (out / "alerts.jsonl").read_text()
    assert (tmp_path / "observations.jsonl").read_text() == (out / "observations.jsonl").read_text()


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium is needed for the report test (Debian package chromium; scripts/provision.sh installs it)")
    return path


def test_report_renders_in_headless_chromium(demo_out, tmp_path):
    out, summary = demo_out
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}"]
    url = (out / "report.html").as_uri()
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for img in ("timeline", "heatmap", "scores"):
        assert f'id="{img}"' in html
    assert html.count("data:image/png;base64,") == 3
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # offline
    assert "campaigns detected: 3" in html
    assert f"alerts delivered to the SOC: {summary['soc']['delivered_alerts']}" in html
    assert "benign accounts in delivered alerts:" in html
    shot = tmp_path / "report.png"
    r = subprocess.run(base + ["--window-size=1280,2400", f"--screenshot={shot}", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.stat().st_size > 50_000, r.stderr[-2000:]
