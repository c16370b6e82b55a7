"""Correlation semantics with hand-checked expectations: every type, aliases, chaining, generate,
one result per group and timespan, bounded streaming state, snapshots."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from kizashi.engine.sigma import RuleSet

BASE = """
title: login failure
name: fail
logsource: {product: x}
detection: {sel: {outcome: failure}, condition: sel}
---
title: login success
name: ok
logsource: {product: x}
detection: {sel: {outcome: success}, condition: sel}
"""


def corr(**spec) -> str:
    body = {"title": spec.pop("title", "c"), "name": spec.pop("name", "c"), "correlation": spec}
    return BASE + "---\n" + yaml.safe_dump(body, sort_keys=False)


def ev(i, t, outcome, user="root", **extra):
    return {"id": f"e{i}", "time": 1_700_000_000 + t, "outcome": outcome, "user": user, **extra}


def run(text, events, **kw):
    rs = RuleSet.from_yaml(text, **kw)
    stream = rs.stream()
    streamed = [r for e in sorted(events, key=lambda e: e["time"]) for r in stream.push(e)] + stream.flush()
    batch = rs.evaluate_batch(events)
    assert sorted(r.to_json() for r in streamed) == sorted(r.to_json() for r in batch)
    return [r for r in batch if r.type == "correlation"]


def test_event_count_slides_with_events_not_buckets():
    # three failures within 60 s, but straddling a minute boundary: fixed buckets would miss it
    events = [ev(0, 50, "failure"), ev(1, 70, "failure"), ev(2, 100, "failure")]
    out = run(corr(type="event_count", rules=["fail"], **{"group-by": ["user"]}, timespan="60s",
                   condition={"gte": 3}), events)
    assert [r.event_ids for r in out] == [["e0", "e1", "e2"]] and out[0].value == 3


def test_one_result_per_group_and_timespan():
    events = [ev(i, i * 10, "failure") for i in range(12)]  # 12 failures over 110 s
    out = run(corr(type="event_count", rules=["fail"], **{"group-by": ["user"]}, timespan="30s",
                   condition={"gte": 3}), events)
    # fires at t=20 (e0..e2); quiet while the window still holds t=20; fires again at t=60 and t=100
    assert [r.event_ids[-1] for r in out] == ["e2", "e6", "e10"]
    raw = run(corr(type="event_count", rules=["fail"], **{"group-by": ["user"]}, timespan="30s",
                   condition={"gte": 3}), events, dedup=False)
    assert len(raw) == 10  # every anchor from e2 on


@pytest.mark.parametrize("kind,cond,expected", [
    ("value_count", {"gte": 2, "field": "src"}, 2),
    ("value_sum", {"gt": 10, "field": "bytes"}, 12),
    ("value_avg", {"eq": 4, "field": "bytes"}, 4),
    ("value_median", {"gte": 5, "field": "bytes"}, 5),
    ("value_percentile", {"gt": 5, "field": "bytes", "percentile": 90}, 5.5),
])
def test_value_aggregates(kind, cond, expected):
    events = [ev(0, 0, "failure", src="A", bytes=1), ev(1, 1, "failure", src="a", bytes=6),
              ev(2, 2, "failure", src="b", bytes=5), ev(3, 500, "failure", src="c", bytes=1)]
    out = run(corr(type=kind, rules=["fail"], **{"group-by": ["user"]}, timespan="1m", condition=cond), events)
    assert len(out) == 1 and out[0].value == pytest.approx(expected)
    assert "e3" not in out[0].event_ids


def test_temporal_and_temporal_ordered():
    events = [ev(0, 0, "success"), ev(1, 10, "failure")]
    assert len(run(corr(type="temporal", rules=["fail", "ok"], **{"group-by": ["user"]}, timespan="1m"), events)) == 1
    ordered = corr(type="temporal_ordered", rules=["fail", "ok"], **{"group-by": ["user"]}, timespan="1m")
    assert run(ordered, events) == []
    assert len(run(ordered, events + [ev(2, 20, "success")])) == 1


def test_aliases_join_different_fields():
    text = corr(type="temporal", rules=["fail", "ok"], **{"group-by": ["who"]}, timespan="1m",
                aliases={"who": {"fail": "user", "ok": "target_user"}})
    events = [ev(0, 0, "failure", user="Mallory"), ev(1, 5, "success", user="x", target_user="mallory")]
    out = run(text, events)
    assert len(out) == 1 and out[0].group == {"who": "mallory"} and out[0].event_ids == ["e0", "e1"]


def test_chained_correlation_collects_underlying_events_and_generate_controls_output():
    text = corr(type="event_count", name="burst", rules=["fail"], **{"group-by": ["user"]}, timespan="1m",
                condition={"gte": 2}) + "---\n" + yaml.safe_dump({
                    "title": "burst then success", "name": "takeover", "correlation": {
                        "type": "temporal_ordered", "rules": ["burst", "ok"], "group-by": ["user"],
                        "timespan": "10m"}})
    events = [ev(0, 0, "failure"), ev(1, 5, "failure"), ev(2, 60, "success"), ev(3, 70, "failure", user="bob")]
    rs = RuleSet.from_yaml(text)
    results = rs.evaluate_batch(events)
    # no generate: neither the base rules nor the inner correlation emit results of their own
    assert [r.rule_id for r in results] == ["takeover"]
    assert results[0].event_ids == ["e0", "e1", "e2"] and results[0].group == {"user": "root"}
    with_generate = text.replace("timespan: 10m", "timespan: 10m\n  generate: true")
    names = {r.rule_id for r in RuleSet.from_yaml(with_generate).evaluate_batch(events)}
    assert names == {"takeover", "burst", "ok"}  # "fail" is referenced by burst only, which does not generate


def test_streaming_state_is_bounded_and_evicted():
    rs = RuleSet.from_yaml(corr(type="event_count", rules=["fail"], **{"group-by": ["user"]}, timespan="10s",
                                condition={"gte": 1000}))
    stream = rs.stream()
    peak = 0
    for i in range(20000):
        stream.push(ev(i, i, "failure", user=f"u{i % 50}"))
        peak = max(peak, stream.state_size())
    assert peak <= 50 * 11  # at most the timespan (10 s, both ends included) per group
    stream.flush()
    assert stream.state_size() <= 50 * 11


@pytest.mark.parametrize("kind", ["event_count", "value_count", "temporal"])
def test_window_holds_both_ends_and_nothing_older(kind):
    """A window anchored at t is [t - timespan, t]: an entry exactly one timespan older counts, one
    a quarter second older does not (each event alone at its time: the correlator's in-order step)."""
    spec = {"type": kind, "rules": ["fail"] if kind != "temporal" else ["fail", "ok"], "group-by": ["user"],
            "timespan": "10s", "condition": {"gte": 2, **({"field": "src"} if kind == "value_count" else {})}}
    text = corr(**spec)
    second = "failure" if kind != "temporal" else "success"
    for gap, fires in ((10, True), (10.25, False)):
        events = [ev(0, 0, "failure", src="a"), ev(1, gap, second, src="b")]
        assert [r.event_ids for r in run(text, events) if r.rule_id == "c"] == ([["e0", "e1"]] if fires else [])


def test_idle_groups_are_swept_and_state_stays_bounded():
    """Every event opens a group that never sees another: only the idle-group sweep frees them. The
    sweep starts a round at most every quarter timespan, yet the groups held stay within a small
    multiple of one timespan's worth (20,000 groups would be held without it)."""
    rs = RuleSet.from_yaml(corr(type="event_count", rules=["fail"], **{"group-by": ["user"]}, timespan="100s",
                                condition={"gte": 1000}))
    stream = rs.stream()
    (correlation,) = stream.correlator.correlations
    peak = 0
    for i in range(20000):
        stream.push(ev(i, i, "failure", user=f"u{i}"))
        peak = max(peak, len(correlation.windows), stream.state_size())
    assert peak <= 3 * 101


def test_snapshot_round_trip_with_held_back_events():
    text = corr(type="event_count", rules=["fail"], **{"group-by": ["user"]}, timespan="1m", condition={"gte": 3})
    rs = RuleSet.from_yaml(text)
    s1 = rs.stream(lateness=timedelta(seconds=30))
    for e in [ev(0, 0, "failure"), ev(1, 20, "failure")]:
        assert s1.push(e) == []
    s2 = rs.stream(lateness=timedelta(seconds=30))
    s2.restore(s1.snapshot())
    out = s2.push(ev(2, 10, "failure")) + s2.flush()
    assert [r.event_ids for r in out] == [["e0", "e2", "e1"]]
    with pytest.raises(ValueError, match="different rule set"):
        RuleSet.from_yaml(BASE).stream().restore(s1.snapshot())
    with pytest.raises(ValueError, match="not a kizashi stream snapshot"):
        s2.restore(b"garbage")
