"""``kizashi rules check|eval|export`` end to end, and the exported queries checked by running
(SQLite) or parsing (EQL with Elastic's ``eql`` parser) them."""

from __future__ import annotations

import json
import re
import sqlite3

import eql
import pytest
from helpers_campaigns import EXPECTED, campaign_events
from kizashi.cli.main import app
from kizashi.engine.sigma import RuleSet
from kizashi.engine.sigma.export import export
from kizashi.rules import bundled_rules_path
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [p.read_text() for p in sorted(bundled_rules_path().rglob("*.yml"))]


@pytest.fixture(scope="module")
def events_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ev") / "events.jsonl"
    path.write_text("".join(json.dumps(e.flat()) + "\n" for e in campaign_events()))
    return path


def test_check_bundled_pack_offline():
    r = runner.invoke(app, ["rules", "check"])
    assert r.exit_code == 0, r.output
    assert "10 detection rules, 5 correlation rules" in r.output


def test_check_reports_bad_atlas_tag_and_unparsable_rule(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("title: t\nname: t\nlevel: low\nfalsepositives: [x]\ntags: [atlas.aml.t9999]\n"
                   "logsource: {product: kizashi}\ndetection: {sel: {stage: symptom}, condition: sel}\n")
    r = runner.invoke(app, ["rules", "check", str(bad)])
    assert r.exit_code == 1 and "unknown technique AML.T9999" in r.output
    broken = tmp_path / "broken.yml"
    broken.write_text("title: t\nlogsource: {product: kizashi}\ndetection: {sel: {a|nosuchmod: 1}, condition: sel}\n")
    r = runner.invoke(app, ["rules", "check", str(broken)])
    assert r.exit_code == 2 and "nosuchmod" in r.output


@pytest.mark.parametrize("mode", ["stream", "batch"])
def test_eval_prints_json_lines(events_file, mode):
    r = runner.invoke(app, ["rules", "eval", "--events", str(events_file), "--mode", mode])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.output.splitlines()]
    corr = {x["name"]: x for x in lines if x["type"] == "correlation"}
    assert set(corr) == set(EXPECTED)
    x = corr["kizashi_campaign_extraction_then_evasion"]
    assert x["group"] == {"account.id": "acct-A"} and x["event_ids"] == ["a1", "a2", "a3", "a4"]
    assert x["first_seen"].endswith("Z") and x["value"] == 2.0
    assert all({"type", "rule", "event_id"} <= set(m) for m in lines if m["type"] == "match")


def test_eval_accepts_foreign_flat_events_with_other_id_and_time_fields(tmp_path):
    rules = tmp_path / "r.yml"
    rules.write_text("title: t\nname: login_fail\nlogsource: {product: x}\n"
                     "detection: {sel: {outcome: failure}, condition: sel}\n---\n"
                     "title: c\nname: brute\ncorrelation: {type: event_count, rules: [login_fail], "
                     "group-by: [user], timespan: 1m, condition: {gte: 3}}\n")
    ev = tmp_path / "e.jsonl"
    ev.write_text("".join(json.dumps({"uid": f"x{i}", "ts": 1700000000 + i * 10, "outcome": "FAILURE",
                                      "user": "root"}) + "\n" for i in range(4)))
    r = runner.invoke(app, ["rules", "eval", "--rules", str(rules), "--events", str(ev),
                            "--id-field", "uid", "--time-field", "ts"])
    assert r.exit_code == 0, r.output
    out = [json.loads(x) for x in r.output.splitlines()]
    assert out == [out[0]] and out[0]["event_ids"] == ["x0", "x1", "x2"] and out[0]["rule"] == "brute"


def test_eval_rejects_bad_json(tmp_path):
    ev = tmp_path / "e.jsonl"
    ev.write_text('{"id": 1}\nnot json\n')
    r = runner.invoke(app, ["rules", "eval", "--events", str(ev)])
    assert r.exit_code == 2 and ":2: not valid JSON" in r.output


@pytest.mark.parametrize("target", ["splunk", "esql", "eql", "lucene", "sqlite"])
def test_export_cli_runs_for_every_target(target):
    r = runner.invoke(app, ["rules", "export", "--target", target, "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.output.splitlines()]
    assert len(rows) == 15  # 10 detection (two campaign steps), 5 correlation
    det = [x for x in rows if x["kind"] == "detection"]
    assert len(det) == 10 and all(x["query"] for x in det)


def test_export_eql_parses_and_uses_ecs(texts):
    queries = export(texts, "eql")
    seqs = [q for q in queries if q.producer == "kizashi"]
    assert len(seqs) == 3
    for q in queries:
        if not q.query:
            continue
        with eql.parser.elasticsearch_syntax, eql.parser.allow_sample, eql.parser.ignore_missing_functions:
            # a rule no correlation uses comes finalised ("any where ..."); a correlation's step does not
            parsed = eql.parse_query(q.query if q.query.startswith(("sequence", "sample", "any where"))
                                     else f"any where {q.query}")
        assert parsed is not None
    campaign = next(q for q in seqs if q.name == "kizashi_campaign_extraction_then_evasion")
    assert campaign.query.startswith("sequence by user.id with maxspan=1d")
    assert "kizashi.stage" in campaign.query and "account.id" not in campaign.query


def test_export_splunk_temporal_ordered_is_an_ordered_sliding_window(texts):
    q = next(q for q in export(texts, "splunk") if q.name == "kizashi_campaign_probing_then_evasion")
    assert q.producer == "kizashi"
    assert q.query.count("[search ") == 2 and "streamstats time_window=86400s" in q.query
    assert "by account.id" in q.query
    regex = re.search(r'match\(sigma_sequence, "([^"]+)"\)', q.query).group(1)
    assert re.search(regex, ",1,1,2,") and re.search(regex, ",2,1,9,2,")
    assert not re.search(regex, ",2,1,") and not re.search(regex, ",1,12,")


def test_export_esql_temporal_ordered(texts):
    q = next(q for q in export(texts, "esql") if q.name == "kizashi_campaign_poisoning_then_trigger")
    assert q.producer == "kizashi" and "BY kizashi.model.id, sigma_bucket = BUCKET(@timestamp, 604800 seconds)" in q.query
    assert q.query.rstrip().endswith("sigma_first < sigma_last")


def test_export_lucene_skips_correlations_with_a_note(texts):
    skipped = [q for q in export(texts, "lucene") if q.producer == "none"]
    assert len(skipped) == 5 and all("cannot convert" in q.note for q in skipped)


def test_export_sqlite_runs_and_agrees_with_the_engine(texts):
    queries = {q.name: q for q in export(texts, "sqlite")}
    conn = sqlite3.connect(":memory:")
    cols = ["id", "time", "detector.name", "stage", "attack", "atlas.technique", "account.id", "model.id",
            "evidence.classes", "evidence.detections", "severity"]  # read by the campaign steps
    conn.execute("CREATE TABLE logs (" + ", ".join(f"`{c}` TEXT COLLATE NOCASE" for c in cols) + ")")
    events = campaign_events()
    for e in events:
        f = e.flat()
        f["atlas.technique"] = ",".join(f["atlas.technique"])  # a flat table has no lists
        conn.execute(f"INSERT INTO logs VALUES ({','.join('?' * len(cols))})", [f.get(c) for c in cols])
    groups = {}
    for name, q in queries.items():
        if q.kind == "correlation":
            groups[name] = {tuple(json.loads(row[1]).values()) for row in conn.execute(q.query)}
    mine = {}
    for r in RuleSet.bundled(dedup=False).evaluate_batch(events):
        if r.type == "correlation":
            mine.setdefault(r.rule_name, set()).add(tuple(str(v).lower() for v in r.group.values()))
    assert {k: v for k, v in groups.items() if v} == mine
    assert mine["kizashi_campaign_extraction_then_evasion"] == {("acct-a",)}
