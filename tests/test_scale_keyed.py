"""The Flink job's per-event and per-key steps (kizashi.scale.keyed_rules / keyed_detectors) in
plain Python, without Java: the same results as the single-process engine however the keys are
interleaved and expired, and the job's boundary checks."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict

import pytest
from helpers_flink_corpus import write_corpus
from kizashi.cli.main import app
from kizashi.engine.sigma import RuleSet
from kizashi.scale.keyed_detectors import KeyedQueryDetector, check_query
from kizashi.scale.keyed_rules import KeyedRecord, KeyedRulePlan, decode_key, rules_text
from kizashi.scale.launch import read_lines, result_order
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    c = write_corpus(tmp_path_factory.mktemp("keyed-corpus"))
    c["lines"] = [json.loads(line) for line in c["events"].read_text().splitlines()]
    return c


def keyed_run(plan: KeyedRulePlan, events: list[dict], seed: int) -> list[str]:
    """What the job does, one process: per timestamp, every key's held records (keys in random
    order, each record through its level), then expiry of every key at that time."""
    results: list[str] = []
    held: dict[int, dict[float, dict[str, list[KeyedRecord]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for i, e in enumerate(events):
        r, recs = plan.detect(e, i)
        results += r
        for rec in recs:
            held[rec.level][rec.ts][rec.key].append(KeyedRecord.from_tuple(rec.as_tuple()))  # as shipped
    states: dict[str, list | None] = {}
    rng = random.Random(seed)
    times = sorted({ts for level in held.values() for ts in level})
    for ts in times:
        for level in range(1, plan.depth + 1):
            keys = list(held[level].get(ts, {}))
            rng.shuffle(keys)
            for key in keys:
                states[key], res, out = plan.correlate(key, states.get(key), held[level][ts].pop(key))
                results += res
                for o in out:
                    assert o.level > level and o.ts == ts
                    held[o.level][o.ts][o.key].append(o)
        for key in list(states):
            states[key] = plan.expire(key, states[key], ts)
            if states[key] is None:
                del states[key]
    return results


def test_keyed_steps_equal_the_stream_engine_in_any_key_order(corpus):
    rs = RuleSet.from_paths([corpus["rules"]])
    ev = rs.stream()
    want = [r.to_json() for e in corpus["lines"] for r in ev.push(e)] + [r.to_json() for r in ev.flush()]
    plan = KeyedRulePlan(rules_text([str(corpus["rules"])]))
    assert plan.depth == 2 and len(plan.correlations) > 20
    for seed in (0, 1):
        assert Counter(keyed_run(plan, corpus["lines"], seed)) == Counter(want)


def test_keyed_state_expires_to_nothing(corpus):
    plan = KeyedRulePlan(rules_text([str(corpus["rules"])]))
    e = corpus["lines"][0]
    _, recs = plan.detect(e, 0)
    assert recs
    rec = recs[0]
    state, _, _ = plan.correlate(rec.key, None, [rec])
    until = plan.state_until(rec.key, state)
    assert until > rec.ts
    assert plan.expire(rec.key, state, until - 1e-3) is not None  # still inside a future window
    assert plan.expire(rec.key, state, until + 1e-3) is None
    corr_key, group = decode_key(rec.key)
    assert corr_key in plan.correlations and isinstance(group, tuple)


def test_query_records_are_checked_at_the_boundary():
    good = {"account": "a", "x": [0.1, 2], "time": "2026-01-01T00:00:00Z"}
    check_query(good)
    for bad, why in [([], "JSON object"), ({**good, "account": ""}, "account"), ({**good, "x": []}, "x must"),
                     ({**good, "x": [True]}, "x must"), ({**good, "x": ["1"]}, "x must"),
                     ({**good, "time": "yesterday"}, "time")]:
        with pytest.raises(ValueError, match=why):
            check_query(bad)
    with pytest.raises(TypeError, match="not a query-stream detector"):
        KeyedQueryDetector(object())


def test_read_lines_takes_finished_part_files_only(tmp_path):
    (tmp_path / "results-a-0.jsonl").write_text('{"type":"match","time":"2026-01-02T00:00:00Z","rule":"r","id":"2"}\n')
    (tmp_path / ".results-a-1.jsonl.inprogress.123").write_text('{"type":"match","id":"x"}\n')
    (tmp_path / "quarantine").mkdir()
    (tmp_path / "quarantine" / "results-like.jsonl").write_text("{}\n")
    (tmp_path / "results-b-0.jsonl").write_text('{"type":"correlation","last_seen":"2026-01-01T00:00:00Z","rule":"r","id":"1"}\n\n')
    lines = sorted(read_lines(tmp_path), key=result_order)
    assert [json.loads(x)["id"] for x in lines] == ["1", "2"]


def test_flink_run_refuses_bad_input_before_starting_java(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.yml"
    bad.write_text("title: x\ndetection: {condition: nope}\n")
    events = tmp_path / "e.jsonl"
    events.write_text("{}\n")
    r = runner.invoke(app, ["flink", "run", "--rules", str(bad), "--events", str(events)])
    assert r.exit_code == 2 and "error:" in r.output
    r = runner.invoke(app, ["flink", "run", "--events", str(tmp_path / "missing.jsonl")])
    assert r.exit_code == 2 and "no such file" in r.output
    r = runner.invoke(app, ["flink", "run", "--events", str(events), "--mode", "batch"])
    assert r.exit_code == 2 and "rules eval --mode batch" in r.output
    r = runner.invoke(app, ["flink", "run", "--events", str(events), "--queries", str(events)])
    assert r.exit_code == 2 and "go together" in r.output
