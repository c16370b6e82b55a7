"""The micro-batch evaluator: a batch closes on its event count or its period, whichever first;
snapshots after a drain resume like the stream evaluator; column factorising keeps types apart; the
column-wise fast paths (factorising, times, result lines) give what the per-value code gives."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kizashi.engine.sigma import RuleSet
from kizashi.engine.sigma.microbatch import factorise
from kizashi.engine.sigma.normalise import event_timestamp, event_timestamps

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


def test_push_many_gives_what_push_gives_event_by_event():
    """``push_many`` (what ``rules eval`` feeds a file through) fills the buffer a batch's room at a
    time: the same results in the same order as pushing each event, for any chunking, late events
    included; a fill that ends the period evaluates the batch as ``push`` would."""
    from helpers_campaigns import campaign_events

    events = [e.flat() for e in campaign_events()]
    events = events[::2] + events[1::2]  # half of them late
    rs = RuleSet.bundled()
    one = rs.microbatch(max_events=5, lateness=timedelta(hours=2))
    want = [r for e in events for r in one.push(e)] + one.flush()
    for sizes in ([1], [3, 17, 250], [len(events)]):
        many = rs.microbatch(max_events=5, lateness=timedelta(hours=2))
        got, i, k = [], 0, 0
        while i < len(events):
            got += many.push_many(events[i:i + sizes[k % len(sizes)]])
            i += sizes[k % len(sizes)]
            k += 1
        got += many.flush()
        assert [r.to_json() for r in got] == [r.to_json() for r in want]
    assert {r.type for r in want} == {"match", "correlation"}

    clock = FakeClock()
    micro = RuleSet.from_yaml(TEXT).microbatch(max_events=10, max_ms=50)
    micro.clock = clock
    micro.push_many([ev(0, 0, "failure")])
    clock.now = 0.060
    micro.push_many([ev(1, 1, "failure")])  # the period is over: this fill is evaluated with the first
    assert micro.buffer == [] and micro.stats["events"] == 2


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


# -- the column fast paths give what the per-value code gives -------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-2, 2), st.just(float("nan")),
                     st.sampled_from(["a", "A", "1", "1.0", "true", ""]))
_columns = st.one_of(
    st.lists(st.sampled_from(["x", "y", "X", ""]), min_size=1, max_size=30),  # text only
    st.lists(st.none(), min_size=1, max_size=5),  # a field no event has
    st.lists(st.lists(st.sampled_from(["T1", "T2", "t1"]), max_size=3), min_size=1, max_size=30),  # lists of text
    st.lists(st.one_of(_scalars, st.lists(_scalars, max_size=2)), min_size=1, max_size=30),  # anything
)


def _same(a, b) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and (a == b or (a != a and b != b))


@settings(max_examples=300, deadline=None)
@given(values=_columns)
def test_factorise_shares_a_code_only_between_values_of_one_type_and_value(values):
    codes, uniques = factorise(values)
    assert len(codes) == len(values)
    for v, c in zip(values, codes.tolist(), strict=True):
        assert _same(uniques[c], v)  # lists come back as tuples, element types kept
    for i, a in enumerate(uniques):
        assert not any(_same(a, b) and not (a != a) for b in uniques[i + 1:])  # distinct values, once each


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(
    st.floats(0, 2.0**33, exclude_max=True),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**40), 2**40),
    st.decimals(0, 2**33, places=6).map(float),  # half-microsecond ties land here
    st.sampled_from([None, True, "2026-11-30T10:00:00Z", "2026-11-30T10:00:00.0000005+09:00", "nope", [1]]),
    st.datetimes(datetime(1970, 1, 2), datetime(2200, 1, 1),  # a DetectionEvent's times are UTC
                 timezones=st.sampled_from([UTC, timezone(timedelta(hours=9))])),
    st.datetimes(datetime(1970, 1, 2), datetime(2200, 1, 1)),  # naive: read as UTC
), max_size=40))
def test_event_timestamps_equal_event_timestamp_one_by_one(values):
    got = event_timestamps(values)
    want = [event_timestamp(v) for v in values]
    assert [(type(g), g) for g in got] == [(type(w), w) for w in want]


@settings(max_examples=200, deadline=None)
@given(eid=st.text(), name=st.one_of(st.none(), st.text()), title=st.text(), tags=st.lists(st.text(), max_size=3),
       ts=st.one_of(st.none(), st.floats(0, 2e9)))
def test_result_json_is_json_dumps_of_its_dict(eid, name, title, tags, ts):
    from kizashi.engine.sigma.results import RuleResult, _dt

    for kind in ("match", "correlation"):
        r = RuleResult(type=kind, id="alert-" + eid, rule_id=title + "-rule", rule_name=name, title=title, level="high",
                       tags=tags, event_ids=[eid, "e2"], group={"account.id": eid}, first_seen=_dt(ts),
                       last_seen=_dt(ts), value=2.0, correlation_type="event_count" if kind != "match" else None)
        assert r.to_json() == json.dumps(r.to_dict(), default=str, separators=(",", ":"))
