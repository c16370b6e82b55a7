"""Shared Sigma correlation cases: the two base detection rules, hypothesis strategies for
correlation rules, chained correlations and their events, and an aliased group-by rule (the
differential tests against pySigma's SQLite backend, and the Flink job's corpus)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

T0 = datetime(2026, 1, 1, tzinfo=UTC)

BASE_RULES = """
title: a
name: rule_a
logsource: {product: kizashi}
detection:
  sel: {name: a}
  condition: sel
---
title: b
name: rule_b
logsource: {product: kizashi}
detection:
  sel: {name|startswith: b}
  condition: sel
"""

WORDS_CORR = ["a", "A", "b", "ba", "x"]


@st.composite
def correlation_strategy(draw):
    kind = draw(st.sampled_from([
        "event_count", "value_count", "temporal", "temporal_ordered",
        "value_sum", "value_avg", "value_median", "value_percentile",
    ]))
    rules = draw(st.sampled_from([["rule_a"], ["rule_a", "rule_b"], ["rule_b", "rule_a"]]))
    if kind.startswith("temporal") and len(rules) == 1:
        rules = ["rule_a", "rule_b"]
    corr: dict = {"type": kind, "rules": rules, "group-by": ["user"],
                  "timespan": f"{draw(st.integers(5, 120))}s"}
    op = draw(st.sampled_from(["gt", "gte", "lt", "lte", "eq", "neq"]))
    if kind == "temporal_ordered":
        pass  # default condition: all steps in order
    elif kind == "temporal":
        corr["condition"] = {draw(st.sampled_from(["gte", "eq", "gt"])): draw(st.integers(1, 2))}
    else:
        cond: dict = {op: draw(st.integers(0, 25))}
        if kind == "value_count":
            cond["field"] = "cmd"
        elif kind.startswith("value_"):
            cond["field"] = "num"
        if kind == "value_percentile":
            cond["percentile"] = draw(st.integers(0, 100))
        corr["condition"] = cond
    return {"title": "c", "name": "corr", "correlation": corr}


@st.composite
def corr_events_strategy(draw, n_max: int = 16, span_seconds: int = 200):
    """1..``n_max`` events within ``span_seconds`` of T0 (a small span gives many ties in time)."""
    n = draw(st.integers(1, n_max))
    return [{
        "id": f"e{i}",
        "time": (T0 + timedelta(seconds=draw(st.integers(0, span_seconds)))).isoformat().replace("+00:00", "Z"),
        "name": draw(st.sampled_from(WORDS_CORR)),
        "user": draw(st.sampled_from(["u1", "U1", "u2"])),
        "cmd": draw(st.sampled_from(["p", "P", "q", "r"])),
        "num": draw(st.integers(-3, 9)),
    } for i in range(n)]


@st.composite
def chained_strategy(draw):
    inner = draw(correlation_strategy())
    outer = {"title": "o", "name": "outer", "correlation": {
        "type": draw(st.sampled_from(["event_count", "temporal"])), "rules": ["corr"], "group-by": ["user"],
        "timespan": f"{draw(st.integers(5, 200))}s"}}
    if outer["correlation"]["type"] == "event_count":
        outer["correlation"]["condition"] = {draw(st.sampled_from(["gte", "gt", "lte"])): draw(st.integers(1, 3))}
    return inner, outer


ALIASED = BASE_RULES + """---
title: c
name: corr
correlation:
  type: temporal
  rules: [rule_a, rule_b]
  group-by: [who]
  aliases:
    who: {rule_a: user, rule_b: cmd}
  timespan: 60s
"""
