"""Run under the PyFlink interpreter (``python -m helpers_flink_lost_timer``): the ``Correlate`` keyed
function of kizashi.scale.flink driven by hand through a checkpoint restore that lost a timer, as
PyFlink 2.3 loses the timers registered in the bundle flushed just before a barrier.

Prints JSON: the results and outer-level records the function emitted, and those of the engine's
own per-key step fed every record in time order (what the function must reproduce)."""

from __future__ import annotations

import json
import pickle
import sys

from kizashi.scale.flink import RESULTS, RULES_STATE, Correlate, to_millis
from kizashi.scale.keyed_rules import KeyedRulePlan

RULES = """
title: a
name: rule_a
logsource: {product: kizashi}
detection: {sel: {name: a}, condition: sel}
---
title: b
name: rule_b
logsource: {product: kizashi}
detection: {sel: {name|startswith: b}, condition: sel}
---
title: c
name: corr
correlation: {type: value_median, rules: [rule_a, rule_b], group-by: [user], timespan: 39s,
              condition: {lt: 9, field: num}}
---
title: o
name: outer
correlation: {type: temporal, rules: [corr], group-by: [user], timespan: 118s}
"""
EVENTS = [  # one group: e0 fires the inner correlation at 0:27; e2 is inside its window; e1 fires again
    {"id": "e0", "time": "2026-01-01T00:00:27Z", "name": "a", "user": "u1", "num": 5},
    {"id": "e2", "time": "2026-01-01T00:01:05Z", "name": "ba", "user": "u1", "num": 1},
    {"id": "e1", "time": "2026-01-01T00:02:40Z", "name": "ba", "user": "u1", "num": -3},
]


class _State:  # keyed ValueState through a pickle round trip, as Flink stores PICKLED_BYTE_ARRAY
    def __init__(self):
        self.blob = None

    def value(self):
        return None if self.blob is None else pickle.loads(self.blob)

    def update(self, v):
        self.blob = pickle.dumps(v)

    def clear(self):
        self.blob = None


class _Broadcast:
    def __init__(self, rules):
        self.rules = rules

    def get(self, name):
        return self.rules


class _Ctx:
    def __init__(self, key, rules):
        self.key, self.broadcast, self.watermark, self.timers = key, _Broadcast(rules), -(2**63), set()

    def get_broadcast_state(self, descriptor):
        assert descriptor is RULES_STATE
        return self.broadcast

    def get_current_key(self):
        return self.key

    def timer_service(self):
        return self

    def current_watermark(self):
        return self.watermark

    def register_event_time_timer(self, t):
        self.timers.add(t)


def main() -> None:
    plan = KeyedRulePlan(RULES)
    records = [r for i, e in enumerate(EVENTS) for r in plan.detect(e, i)[1]]
    assert {r.key for r in records} == {records[0].key}  # one group of the inner correlation
    key = records[0].key
    _, expected_results, expected_out = plan.correlate(key, None, records)

    fn = Correlate(1)
    fn.group = _State()
    ctx = _Ctx(key, (RULES, "id", "time"))
    emitted = list(fn.process_element(records[0].as_tuple(), ctx))
    ctx.timers.clear()  # the checkpoint kept the state (e0 pending) but lost its timer; restore
    for rec in records[1:]:  # e2 and e1 arrive before the watermark reaches them
        emitted += fn.process_element(rec.as_tuple(), ctx)
    while ctx.timers:  # the watermark passes everything: timers fire in time order
        t = min(ctx.timers)
        ctx.timers.discard(t)
        ctx.watermark = t
        emitted += fn.on_timer(t, ctx)
    print(json.dumps({
        "results": [v for tag, v in emitted if tag is RESULTS],
        "out": [[v[2], v[5]] for tag, v in emitted if tag is not RESULTS],
        "expected_results": expected_results,
        "expected_out": [[r.ts, [list(c) for c in r.chain]] for r in expected_out],
        "lost_timer_was_e0": to_millis(records[0].ts) not in ctx.timers,
        "state_left": fn.group.value(),
    }))


if __name__ == "__main__":
    sys.exit(main())
