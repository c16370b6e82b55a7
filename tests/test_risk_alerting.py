"""Observations vs alerts, entity risk, suppression and the alert lifecycle (issue 18), on real stores
(SQLite and PostgreSQL) through the real pipeline, sinks and formatters."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from helpers_events import ev
from kizashi.connectors.files import FileSink
from kizashi.connectors.outbox import deliver
from kizashi.engine.alerting import AlertingConfig, RiskThreshold
from kizashi.engine.pipeline import Pipeline
from kizashi.engine.risk import RiskEngine, risk_rules_yaml
from kizashi.engine.sigma import RuleSet
from kizashi.engine.store import SCHEMA_VERSION, Store
from sqlalchemy import text

PROBE = """title: probe
name: t_probe
logsource: {product: kizashi}
detection:
  selection: {stage: precursor, attack: evasion}
  condition: selection
level: medium
"""
ADV = """title: adversarial input
name: t_adv
logsource: {product: kizashi}
detection:
  selection: {stage: symptom, attack: evasion}
  condition: selection
level: high
"""


def chain_rule(generate: bool) -> str:
    return f"""title: probe then adversarial
name: t_chain
correlation:
  type: temporal_ordered
  rules: [t_probe, t_adv]
  group-by: [account.id]
  timespan: 1h
  generate: {str(generate).lower()}
level: critical
"""


def rules(*docs: str) -> RuleSet:
    return RuleSet.from_yaml("---\n".join(docs))


def probe(i: int, minutes: float, account: str = "acct-a"):
    return ev(f"p{i}", "precursor", "evasion", ["AML.T0043.001"], account=account, minutes=minutes,
              detector="stateful_knn")


def adv(i: int, minutes: float, account: str = "acct-a"):
    return ev(f"v{i}", "symptom", "evasion", ["AML.T0015"], account=account, minutes=minutes, detector="gong_binary")


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'k.db'}")
    yield s
    s.close()


def test_generate_decides_whether_base_matches_alert(store, tmp_path):
    # generate: false -> the base rules' matches are observations, only the correlation alerts
    pipe = Pipeline(store, rules(PROBE, ADV, chain_rule(False)), event_clock=True)
    out = pipe.ingest([probe(1, 0), adv(1, 5)])
    assert [a.rule.name for a in out.alerts] == ["t_chain"]
    obs = store.list_observations()
    assert sorted(o["name"] for o in obs) == ["t_adv", "t_probe"]  # every per-event match kept
    assert {o["event_id"] for o in obs} == {"p1", "v1"}
    # generate: true -> the base matches alert too
    s2 = Store(f"sqlite:///{tmp_path / 'g.db'}")
    out = Pipeline(s2, rules(PROBE, ADV, chain_rule(True)), event_clock=True).ingest([probe(1, 0), adv(1, 5)])
    assert sorted(a.rule.name for a in out.alerts) == ["t_adv", "t_chain", "t_probe"]
    assert s2.count_observations() == 2  # matches are observations whether or not they alert


def test_configuration_overrides_and_default(store):
    cfg = AlertingConfig(default="observe", alert=["t_adv"], observe=["t_chain"])
    out = Pipeline(store, rules(PROBE, ADV, chain_rule(True)), alerting=cfg).ingest([probe(1, 0), adv(1, 5)])
    # t_probe is a base of a generate: true correlation -> alerts; t_adv listed; t_chain observed
    assert sorted(a.rule.name for a in out.alerts) == ["t_adv", "t_probe"]
    assert [o["name"] for o in store.list_observations() if o["type"] == "correlation"] == ["t_chain"]
    # a standalone rule follows `default`
    s = Store(store.url.replace("k.db", "d.db"))
    assert Pipeline(s, rules(PROBE), alerting=AlertingConfig(default="observe")).ingest([probe(1, 0)]).alerts == []
    assert len(Pipeline(s, rules(PROBE), recover=False).ingest([probe(2, 1)]).alerts) == 1  # plain Sigma: alerts


def test_suppression_updates_one_incident_and_redelivers_it(store, tmp_path):
    cfg = AlertingConfig(suppression_window=timedelta(hours=1))
    pipe = Pipeline(store, rules(PROBE), sinks=["file"], alerting=cfg, event_clock=True)
    first = pipe.ingest([probe(1, 0)]).alerts
    assert len(first) == 1 and first[0].group == {"account.id": "acct-a", "model.id": "digits"}
    sink = FileSink(tmp_path / "a.jsonl", "alerts", append=True, name="file")
    assert deliver(store, [sink]).delivered == {"file": 1}
    out = pipe.ingest([probe(2, 10), probe(3, 20), probe(4, 20, account="acct-b")])
    assert [a.accounts for a in out.alerts] == [["acct-b"]]  # another group: a new incident
    [a] = [x for x in store.list_alerts() if x.accounts == ["acct-a"]]
    assert a.id == first[0].id and a.event_ids == ["p1", "p2", "p3"] and a.count == 3 and a.occurrences == 3
    assert a.last_seen == probe(3, 20).time and a.updated == a.last_seen and a.created == first[0].created
    # the update is due again for the sink: same id, latest state
    deliver(store, [sink])
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [(x["id"] == a.id, x["count"]) for x in lines if x["accounts"] == ["acct-a"]] == [(True, 1), (True, 3)]
    # outside the window (after last_seen + 1 h): a new incident
    late = pipe.ingest([probe(5, 20 + 61)]).alerts
    assert len(late) == 1 and late[0].id != a.id


def test_update_keeps_ids_in_stix_ecs_and_cef(store):
    from kizashi.connectors.registry import formatter

    pipe = Pipeline(store, rules(PROBE), event_clock=True)
    [a0] = pipe.ingest([probe(1, 0)]).alerts
    pipe.ingest([probe(2, 30)])
    a1 = store.get_alert(a0.id)
    events = store.get_events(a1.event_ids)
    def render(fmt, a):
        return formatter(fmt, ruleset=pipe.ruleset).render([a], events)
    s0, s1 = json.loads(render("stix", a0)), json.loads(render("stix", a1))
    sight0 = next(o for o in s0["objects"] if o["type"] == "sighting")
    sight1 = next(o for o in s1["objects"] if o["type"] == "sighting")
    assert sight0["id"] == sight1["id"] and sight0["modified"] == sight0["created"]
    assert sight1["modified"] > sight1["created"] == sight0["created"] and sight1["count"] == 2
    from kizashi.connectors.elastic import ElasticBulkSink

    e0, e1 = json.loads(render("ecs", a0)), json.loads(render("ecs", a1))
    assert e0["event"]["id"] == e1["event"]["id"] == a0.id and e1["event"]["end"] > e0["event"]["end"]
    assert e1["kizashi"]["alert"]["occurrences"] == 2
    bulk = ElasticBulkSink("http://127.0.0.1:9", index="k").body([a1], events)  # indexed by _id: an update
    assert json.loads(bulk.splitlines()[0]) == {"index": {"_index": "k", "_id": a0.id}}
    c0, c1 = render("cef", a0), render("cef", a1)
    assert f"externalId={a0.id}" in c0 and f"externalId={a0.id}" in c1 and "cnt=2" in c1


def risk_config(**kw) -> AlertingConfig:
    base = dict(default="observe", thresholds=[RiskThreshold("account", score=40)], risk_window=timedelta(hours=1))
    base.update(kw)
    return AlertingConfig(**base)


def test_risk_alert_once_when_an_accounts_risk_crosses_the_threshold(store):
    pipe = Pipeline(store, rules(PROBE), alerting=risk_config(), event_clock=True)
    # medium rule (10 points) x medium severity (1.0): the 4th observation within the hour crosses 40
    out = pipe.ingest([probe(i, 5 * i) for i in range(3)] + [probe(9, 1, account="acct-b")])
    assert out.alerts == []
    out = pipe.ingest([probe(3, 15), probe(4, 20), probe(5, 25)])
    [a] = out.alerts
    assert a.rule.name == "kizashi_risk_account_score" and a.group == {"account.id": "acct-a"}
    assert a.event_ids == ["p0", "p1", "p2", "p3"] and a.value == 40 and a.level == "high"
    assert a.created == probe(3, 15).time  # raised by the observation that crossed it
    assert {o["risk"] for o in store.list_observations()} == {10.0}


def test_risk_decays_out_of_its_window(store):
    pipe = Pipeline(store, rules(PROBE), alerting=risk_config(), event_clock=True)
    # 10 points every 25 min: at most 3 observations inside any 1-hour window -> never 40
    assert pipe.ingest([probe(i, 25 * i) for i in range(12)]).alerts == []
    assert store.count_observations() == 12


def test_risk_by_distinct_techniques_and_level_and_confidence(store):
    cfg = risk_config(thresholds=[RiskThreshold("account", techniques=3)])
    pipe = Pipeline(store, rules(PROBE, ADV), alerting=cfg, event_clock=True)
    e1 = probe(1, 0)
    e2 = ev("x2", "symptom", "evasion", ["AML.T0015", "AML.T0043.004"], minutes=5, detector="gong_binary")
    [a] = pipe.ingest([e1, e2]).alerts
    assert a.rule.name == "kizashi_risk_account_techniques" and a.value == 3 and a.event_ids == ["p1", "x2"]
    # points: rule level x the detector's confidence (the event's severity)
    assert cfg.points("high", "high") == 25 * 1.5 and cfg.points("low", "informational") == 5 * 0.25
    assert {o["name"]: o["risk"] for o in store.list_observations()} == {"t_probe": 10.0, "t_adv": 25.0}


def test_risk_rules_are_sigma_the_engine_and_sigma_cli_accept():
    cfg = AlertingConfig(thresholds=[RiskThreshold("account", score=150, techniques=6),
                                     RiskThreshold("source", score=300), RiskThreshold("model")],
                         risk_window=timedelta(hours=24))
    text_ = risk_rules_yaml(cfg)
    rs = RuleSet.from_yaml(text_)
    kinds = {rs.rule(n).type.name.lower() for n in ("kizashi_risk_account_score", "kizashi_risk_account_techniques",
                                                     "kizashi_risk_source_score")}
    assert kinds == {"value_sum", "value_count"}
    assert "timespan: 1d" in text_ and "kizashi_risk_model" not in text_
    engine = RiskEngine(cfg)
    points, records = engine.records(ev("e", "symptom", "evasion", ["AML.T0015"], detector="gong_binary"),
                                     "medium", ["atlas.aml.t0043"])
    assert points == 10.0
    assert sorted((r["risk.object_type"], r["risk.kind"], r.get("atlas.technique")) for r in records) == [
        ("account", "score", None), ("account", "technique", "AML.T0015"), ("account", "technique", "AML.T0043")]


def test_cli_prints_the_bundled_risk_rules_and_reads_an_alerting_file(tmp_path):
    from kizashi.cli.main import app
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["alerts", "risk-rules"])
    assert r.exit_code == 0, r.output
    rs = RuleSet.from_yaml(r.output)  # the bundled thresholds, as Sigma the engine loads
    assert rs.rule("kizashi_risk_account_score").type.name.lower() == "value_sum"
    cfg = tmp_path / "a.toml"
    cfg.write_text("[risk.entities.source]\nscore = 40\ntechniques = 4\n")
    r = CliRunner().invoke(app, ["alerts", "risk-rules", "--alerting", str(cfg)])
    assert "kizashi_risk_source_techniques" in r.output and "kizashi_risk_account" not in r.output
    cfg.write_text("[risk]\nwindow = 3\n")
    r = CliRunner().invoke(app, ["alerts", "risk-rules", "--alerting", str(cfg)])
    assert r.exit_code == 2 and "unknown risk settings ['window']" in r.output


def test_a_risk_alert_for_an_entity_an_open_incident_names_is_not_a_second_incident(store):
    cfg = risk_config(thresholds=[RiskThreshold("account", score=20)])
    pipe = Pipeline(store, rules(PROBE, ADV, chain_rule(False)), alerting=cfg, event_clock=True)
    out = pipe.ingest([probe(1, 0), adv(1, 1), adv(2, 2)])
    assert [a.rule.name for a in out.alerts] == ["t_chain"]  # the account's risk crossed 20 after it


def test_bundled_defaults_hand_the_soc_campaigns_not_per_event_matches(store):
    cfg = AlertingConfig.bundled()
    assert cfg.default == "observe" and "kizashi_poisoning_precursor" in cfg.alert
    pipe = Pipeline(store, event_clock=True)  # the bundled pack -> its SOC defaults
    single = [probe(1, 0, account="user-1")]
    assert pipe.ingest(single).alerts == [] and store.count_observations() == 1


def test_migration_from_a_v2_store_adds_the_suppression_key(tmp_path):
    url = f"sqlite:///{tmp_path / 'v2.db'}"
    s = Store(url)
    Pipeline(s, rules(PROBE)).ingest([probe(1, 0)])
    with s.engine.begin() as c:  # make it the v2 schema: no group_key, no observations table
        c.execute(text("DROP TABLE observations"))
        c.execute(text("DROP INDEX IF EXISTS ix_alerts_rule_last_seen"))
        c.execute(text("ALTER TABLE alerts DROP COLUMN group_key"))
        c.execute(text("DELETE FROM kizashi_schema"))
        c.execute(text("INSERT INTO kizashi_schema VALUES (2, '2026-01-01')"))
    s.close()
    s2 = Store(url)
    assert s2.schema_version() == SCHEMA_VERSION == 5
    pipe = Pipeline(s2, rules(PROBE), recover=False)
    pipe.ingest([probe(2, 1)])  # an old alert has no group key: the new match starts an incident
    assert s2.count_alerts() == 2 and s2.count_observations() == 1


def test_incident_update_on_postgresql(postgresql_url):
    s = Store(postgresql_url)
    with s.engine.begin() as c:
        for t in ("outbox", "alert_events", "alerts", "observations", "events"):
            c.execute(text(f"DELETE FROM {t}"))
    pipe = Pipeline(s, rules(PROBE), sinks=["x"], event_clock=True)
    [a0] = pipe.ingest([probe(1, 0)]).alerts
    pipe.ingest([probe(2, 5)])
    a = s.get_alert(a0.id)
    assert a.event_ids == ["p1", "p2"] and a.occurrences == 2 and s.count_alerts() == 1
    assert s.outbox_status() == {"x": {"pending": 1, "delivered": 0}}
    s.close()
