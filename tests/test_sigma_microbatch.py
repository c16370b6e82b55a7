"""The micro-batch evaluator: a batch closes on its event count or its period, whichever first;
snapshots after a drain resume like the stream evaluator; column factorising keeps types apart."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from kizashi.engine.sigma import RuleSet
from kizashi.engine.sigma.microbatch import factorise

TEXT = """
title: login failure
name: fail
logsource: {product: x}
detection: {sel: {outcome: failure}, condition: sel}
---
title: burst
name: burst
correlation: {type: event_count, rules: [fail], group-by: [user], timespan: 1m, condition: {gte: 3}}
"""


def ev(i, t, outcome, user="root"):
    return {"id": f"e{i}", "time": 1_700_000_000 + t, "outcome": outcome, "user": user}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_batch_closes_on_count_or_period_whichever_first():
    clock = FakeClock()
    rs = RuleSet.from_yaml(TEXT)
    micro = rs.microbatch(max_events=3, max_ms=50)
    micro.clock = clock
    assert micro.push(ev(0, 0, "failure")) == [] and micro.push(ev(1, 1, "failure")) == []
    assert len(micro.buffer) == 2 and micro.stats["events"] == 0
    assert micro.push(ev(2, 2, "failure")) == []  # third event: the batch is full and evaluated ...
    assert micro.buffer == [] and micro.stats["events"] == 3  # ... (time 2 is complete once a later time is in)
    assert micro.push(ev(3, 3, "success")) == []
    clock.now = 0.049
    assert micro.poll() == [] and len(micro.buffer) == 1
    clock.now = 0.050  # the period is over: poll (or the next push) evaluates the batch
    assert [r.event_ids for r in micro.poll()] == [["e0", "e1", "e2"]]
    assert micro.buffer == [] and micro.stats["events"] == 4


def test_snapshot_after_drain_resumes_like_the_stream_evaluator():
    rs = RuleSet.from_yaml(TEXT)
    micro = rs.microbatch(max_events=100)
    micro.push_many([ev(0, 0, "failure"), ev(1, 10, "failure")])
    with pytest.raises(RuntimeError, match="drain"):
        micro.snapshot()
    assert micro.drain() == []
    resumed = rs.microbatch(max_events=100)
    resumed.restore(micro.snapshot())
    out = resumed.push(ev(2, 20, "failure")) + resumed.flush()
    assert [r.event_ids for r in out] == [["e0", "e1", "e2"]]


def test_factorise_keeps_true_one_and_one_point_zero_apart():
    codes, uniques = factorise([True, 1, 1.0, "1", [1, 2], [1, 2], None, True])
    assert codes.tolist() == [0, 1, 2, 3, 4, 4, 5, 0]
    assert [type(u) for u in uniques] == [bool, int, float, str, tuple, type(None)]


def test_cli_stream_mode_gives_the_batch_mode_results(tmp_path):
    events = [ev(i, i * 5, "failure", user=f"u{i % 2}") for i in range(12)] + [ev(99, 3, "success")]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    rules = tmp_path / "rules.yml"
    rules.write_text(TEXT)

    def run(*extra: str) -> list[str]:
        cmd = [sys.executable, "-m", "kizashi.cli.main", "rules", "eval", "--events", str(path),
               "--rules", str(rules), *extra]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout.splitlines()

    batch = run("--mode", "batch")
    assert any('"correlation"' in line for line in batch)
    for size in ("1", "4", "1000"):
        assert sorted(run("--mode", "stream", "--batch-events", size)) == sorted(batch)


def test_admit_batch_equals_pushing_each_event():
    """The pipeline and the risk engine hand whole batches to ``admit_batch``: the bundled pack over
    the campaign stream (DetectionEvent objects, in uneven chunks) gives exactly the results, in the
    same order, of pushing each event into a stream evaluator."""
    from datetime import timedelta

    from helpers_campaigns import campaign_events
    from kizashi.engine.sigma.microbatch import admit_batch

    base = campaign_events()  # the campaigns again for 80 accounts, 7 minutes apart (windows overlap)
    events = sorted((e.model_copy(update={"id": f"{k}-{e.id}", "time": e.time + timedelta(minutes=7 * k),
                                          "subject": e.subject.model_copy(update={"account": f"acct-{k % 9}"})})
                     for k in range(80) for e in base), key=lambda e: (e.time, e.id))
    rs = RuleSet.bundled().observing()
    one, many = rs.stream(), rs.stream()
    want = [r for e in events for r in one.push(e)] + one.flush()
    got, i = [], 0
    for size in [1, 7, 64, 3, 500, 1000]:
        got += admit_batch(many, events[i:i + size])
        i += size
    got += admit_batch(many, events[i:]) + many.flush()
    assert len(events) > 1000 and {r.type for r in want} == {"match", "correlation"}
    assert [r.to_json() for r in got] == [r.to_json() for r in want]
