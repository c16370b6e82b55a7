"""StreamEvaluator: push events one at a time, get detection matches at once and correlation
results as soon as their condition holds.

Events may arrive out of order within ``lateness``: matched events wait in a heap until the watermark
(latest time seen minus lateness) passes them, then go to the correlation driver in time order, as
the batch evaluator feeds it; an event later than that is still correlated (counted in ``stats``).
The whole state snapshots to bytes (compressed JSON, no code) to survive a restart.
"""

from __future__ import annotations

import heapq
import json
import zlib
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .correlations import Correlator, Record
from .normalise import content_id, event_timestamp, normalise_event
from .results import RuleResult, correlation_results, match_result

if TYPE_CHECKING:
    from .collection import RuleSet


class StreamEvaluator:
    """Push events one by one; detection matches come back at once, correlation results as soon as
    their condition holds (events are reordered within ``lateness``; a timestamp is complete once a
    later one, beyond the lateness, has arrived, or at :meth:`flush`)."""

    def __init__(self, ruleset: RuleSet, *, lateness: timedelta, id_field: str, time_field: str):
        self.ruleset = ruleset
        self.lateness = lateness.total_seconds()
        self.id_field = id_field
        self.time_field = time_field
        self.correlator = Correlator(ruleset.compile_correlations())
        self.heap: list[tuple] = []
        self.max_ts: float | None = None
        self.seq = 0
        self.stats = {"events": 0, "untimed": 0, "late": 0}
        self._detections = list(ruleset.detections.items())
        self._plans: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def push(self, event: Any) -> list[RuleResult]:
        flat = normalise_event(event)
        matched = [key for key, det in self._detections if det.match(flat)]
        return self.admit(flat, self.event_id(flat), event_timestamp(flat.get(self.time_field)), matched)

    def event_id(self, flat: dict[str, Any]) -> str:
        """The event's id field as text, or a hash of its content when it has none."""
        eid = flat.get(self.id_field)
        return content_id(flat) if eid is None or eid == "" else str(eid)

    def admit(self, flat: dict[str, Any], eid: str, ts: float | None, matched: list[str]) -> list[RuleResult]:
        """One event whose detection rules are already tested (``matched``: keys in rule-set order):
        its match results now, its correlation records held until the watermark passes them."""
        return self.admit_many([flat], [eid], [ts], [tuple(matched)])

    def admit_many(self, rows: Sequence[dict[str, Any]], eids: Sequence[str], times: Sequence[float | None],
                   patterns: Sequence[tuple[str, ...]]) -> list[RuleResult]:
        """Events whose detection rules are already tested, in arrival order (``patterns[i]``: the keys
        row ``i`` matched, in rule-set order): what :meth:`admit` gives for each, one after the other.
        The per-event :meth:`push` and the micro-batch evaluator both end here, so they cannot differ;
        what to do with a pattern of matches is worked out once per pattern."""
        results: list[RuleResult] = []
        plans = self._plans
        stats = self.stats
        heap = self.heap
        needed = self.correlator.needed_fields
        info = self.ruleset.info
        for flat, eid, ts, pattern in zip(rows, eids, times, patterns, strict=True):
            self.seq += 1
            stats["events"] += 1
            if pattern:
                plan = plans.get(pattern)
                if plan is None:
                    plan = plans[pattern] = self._plan(pattern)
                emits, to_correlate = plan
                for key in emits:
                    results.append(match_result(info[key], eid, ts))
                if to_correlate and ts is not None:
                    record = (ts, eid, self.seq - 1, to_correlate, {f: flat.get(f) for f in needed})
                    released = self.correlator.released_ts
                    if released is not None and ts <= released:
                        stats["late"] += 1
                        results.extend(self._release_now(ts, [record]))
                    else:
                        heapq.heappush(heap, record)
            if ts is None:
                stats["untimed"] += 1
                continue
            if self.max_ts is None or ts > self.max_ts:
                self.max_ts = ts
            if heap and heap[0][0] < self.max_ts - self.lateness:
                results.extend(self._release(self.max_ts - self.lateness, inclusive=False))
        return results

    def _plan(self, pattern: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Of the rules in ``pattern``: those whose matches are results, those a correlation consumes."""
        info = self.ruleset.info
        correlated = self.ruleset.correlated_keys
        return (tuple(k for k in pattern if info[k].emits), tuple(k for k in pattern if k in correlated))

    def _release(self, watermark: float, *, inclusive: bool) -> list[RuleResult]:
        results: list[RuleResult] = []
        heap = self.heap
        while heap and (heap[0][0] < watermark or (inclusive and heap[0][0] <= watermark)):
            ts = heap[0][0]
            batch = []
            while heap and heap[0][0] == ts:
                batch.append(heapq.heappop(heap))
            results.extend(self._release_now(ts, batch))
        return results

    def _release_now(self, ts: float, records: list[Record]) -> list[RuleResult]:
        return correlation_results(self.ruleset.info, self.correlator.release(ts, records))

    def flush(self) -> list[RuleResult]:
        """End of input: release everything held back for lateness."""
        results = self._release(float("inf"), inclusive=True)
        self.correlator.evict()
        return results

    def state_size(self) -> int:
        """Entries held in correlation windows plus events held back for lateness."""
        return self.correlator.state_size() + len(self.heap)

    # -- persistence ---------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Correlation state as bytes (compressed JSON, no code): restore it after a restart."""
        return zlib.compress(json.dumps(self.state(), default=str, separators=(",", ":")).encode())

    def state(self) -> dict[str, Any]:
        """The state :meth:`snapshot` compresses, as JSON-able data."""
        correlations = self.correlator.snapshot()
        return {
            "version": 1,
            "rules": sorted(self.ruleset.info),
            "heap": [list(r[:3]) + [list(r[3]), r[4]] for r in self.heap],
            "max_ts": self.max_ts,
            "seq": self.seq,
            "released_ts": correlations["released_ts"],
            "stats": self.stats,
            "correlations": correlations["correlations"],
        }

    def restore(self, data: bytes) -> None:
        try:
            state = json.loads(zlib.decompress(data))
        except (zlib.error, ValueError) as exc:
            raise ValueError(f"not a kizashi stream snapshot: {exc}") from None
        self.restore_state(state)

    def restore_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        if state.get("version") != 1:
            raise ValueError("unsupported snapshot version")
        if state["rules"] != sorted(self.ruleset.info):
            raise ValueError("the snapshot was taken with a different rule set")
        self.heap = [(r[0], r[1], r[2], tuple(r[3]), r[4]) for r in state["heap"]]
        heapq.heapify(self.heap)
        self.max_ts = state["max_ts"]
        self.seq = state["seq"]
        self.stats = dict(state["stats"])
        self.correlator.restore(state)
