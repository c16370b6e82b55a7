"""kizashi's detection pipeline as an Apache Flink DataStream job (PyFlink).

Topology (one operator per box; ``=>`` is a keyed repartition)::

    events file/Kafka -> parse (quarantine) -> event-time watermarks
      -> detect  [every detection rule per event; rules from broadcast state]
      => correlate level 1  [key: (correlation, group-by values); window in keyed state;
                             event-time timers release each timestamp once the watermark passes]
      => correlate level 2  [correlations over level-1 firings] ... (one level per chain depth)
      -> results sink (files rolled on checkpoints: exactly once) ; quarantine sink
    queries -> parse => query-stream detector [key: account; detector state in keyed state]
      -> DetectionEvents -> detections sink, and join the events before the watermarks

The per-event and per-key logic is :mod:`kizashi.scale.keyed_rules` and
:mod:`kizashi.scale.keyed_detectors` (plain Python, the engine's own state machines); this module
only wires them into Flink. Rules reach every task as broadcast state: tasks buffer what arrives
before them (the combined watermark cannot pass before the broadcast input ends or idles).

Run it with the PyFlink environment's interpreter (``.venv-flink/bin/python -m kizashi.scale.flink``
or ``kizashi flink run`` from the main environment); see docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from kizashi.engine.sigma.normalise import event_timestamp, normalise_event
from pyflink.common import Configuration, Duration, Encoder, Types, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import (
    BroadcastProcessFunction,
    KeyedBroadcastProcessFunction,
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeExecutionMode,
    StreamExecutionEnvironment,
)
from pyflink.datastream.connectors.file_system import (
    BucketAssigner,
    FileSink,
    FileSource,
    OutputFileConfig,
    RollingPolicy,
    StreamFormat,
)
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from .keyed_rules import KeyedRecord, KeyedRulePlan, rules_text

NO_TIME = -(2**63) + 1  # Flink timestamp of an event without a (parseable) time
RESULTS = OutputTag("results", Types.STRING())
QUARANTINE = OutputTag("quarantine", Types.STRING())
DETECTIONS = OutputTag("detections", Types.STRING())  # DetectionEvents raised by query-stream detectors
MAX_DEPTH = 8  # correlation chains up to this deep (one keyed stage per level)
#: records for the correlation stage of each level go out on their own side output (no filters)
LEVELS = [OutputTag(f"level-{k}", Types.PICKLED_BYTE_ARRAY()) for k in range(MAX_DEPTH + 1)]
RULES_STATE = MapStateDescriptor("kizashi-rules", Types.STRING(), Types.PICKLED_BYTE_ARRAY())


def to_millis(ts: float) -> int:
    """Event time (seconds) -> Flink timestamp (ms); sub-millisecond times share a timer."""
    return math.floor(ts * 1000)


class _WithPlan:
    """Mixin: the rule plan compiled from broadcast state (once per rules version per task)."""

    _plan: KeyedRulePlan | None = None
    _plan_text: str | None = None

    def plan_from(self, state) -> KeyedRulePlan | None:
        blob = state.get("rules")
        if blob is None:
            return None
        text, id_field, time_field = blob
        if self._plan is None or self._plan_text != text:
            self._plan = KeyedRulePlan(text, id_field=id_field, time_field=time_field)
            self._plan_text = text
        return self._plan


# -- parse -------------------------------------------------------------------------------------


class ParseEvents(ProcessFunction):
    """JSON line -> (arrival, Flink timestamp, event); anything else is quarantined with a reason."""

    def __init__(self, time_field: str, max_rate: float | None = None):
        self.time_field = time_field
        self.pause = 1.0 / max_rate if max_rate else 0.0
        self.arrival = 0

    def process_element(self, value: str, ctx: ProcessFunction.Context):
        self.arrival += 1
        if self.pause:
            time.sleep(self.pause)
        if not value.strip():
            return
        try:
            event = json.loads(value)
        except (ValueError, RecursionError) as exc:
            yield QUARANTINE, quarantine(f"not valid JSON: {exc}", value)
            return
        if not isinstance(event, dict):
            yield QUARANTINE, quarantine(f"expected a JSON object, got {type(event).__name__}", value)
            return
        try:
            ts = event_timestamp(normalise_event(event).get(self.time_field))
        except (ValueError, TypeError, RecursionError) as exc:
            yield QUARANTINE, quarantine(f"unreadable event: {exc}", value)
            return
        yield (self.arrival, NO_TIME if ts is None else to_millis(ts), event)


def quarantine(reason: str, record: str) -> str:
    """A quarantine line: the reason and (the start of) the record as received."""
    return json.dumps({"reason": reason, "record": record[:2000]})


class EventTime(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp) -> int:
        return value[1]


# -- detection rules (stateless, rules broadcast) ----------------------------------------------


class Detect(BroadcastProcessFunction, _WithPlan):
    """Every detection rule on each event: match results out, correlation records on."""

    def __init__(self):
        self.waiting: list[tuple] = []  # events that came before the rules (flushed when they come)

    def process_broadcast_element(self, value, ctx):
        ctx.get_broadcast_state(RULES_STATE).put("rules", value)
        plan = self.plan_from(ctx.get_broadcast_state(RULES_STATE))
        waiting, self.waiting = self.waiting, []
        for item in waiting:
            yield from self._detect(plan, item)

    def process_element(self, value, ctx):
        plan = self.plan_from(ctx.get_broadcast_state(RULES_STATE))
        if plan is None:
            self.waiting.append(value)
            return
        yield from self._detect(plan, value)

    @staticmethod
    def _detect(plan: KeyedRulePlan, value: tuple):
        arrival, _, event = value
        try:
            results, records = plan.detect(event, arrival)
        except (ValueError, TypeError, RecursionError) as exc:  # one record never stops the job
            yield QUARANTINE, quarantine(f"rules could not read the event: {exc}", json.dumps(event, default=str))
            return
        for line in results:
            yield RESULTS, line
        for rec in records:
            yield LEVELS[rec.level], rec.as_tuple()


# -- correlation rules (keyed state, event-time timers) ----------------------------------------


class Correlate(KeyedBroadcastProcessFunction, _WithPlan):
    """One (correlation, group) key: its window in keyed state; records wait in keyed state until
    the watermark passes their time, then go through the engine's state machine in time order.

    The key's state is one value ``{"window", "pending": {ms: [records]}, "expiry"}``: one state
    read and write per element or timer (each access crosses from the Python worker to Java).

    Timers are hints, the state is the truth. PyFlink 2.3 registers the timers a Python function
    asks for in the bundle flushed just before a checkpoint barrier only after the snapshot (the
    registrations reach the task as mailbox mail; ``BeamPythonFunctionRunner.drainUnregisteredTimers``
    runs on watermark advances only), so a restored key can hold pending records whose timer is
    gone. Hence every timer releases *all* pending records at or before it, and every visit to a key
    registers again the timers its state needs (registering an existing timer is a no-op in Flink).
    """

    def __init__(self, level: int):
        self.level = level

    def open(self, runtime_context):
        self.group = runtime_context.get_state(ValueStateDescriptor("group", Types.PICKLED_BYTE_ARRAY()))

    def process_broadcast_element(self, value, ctx):
        ctx.get_broadcast_state(RULES_STATE).put("rules", value)

    def process_element(self, value, ctx):
        t = to_millis(value[2])
        plan = self.plan_from(ctx.get_broadcast_state(RULES_STATE))
        group = self.group.value() or {"window": None, "pending": {}, "expiry": None}
        if plan is not None and t <= ctx.timer_service().current_watermark():
            # late: at once, as the single process (after anything older still held)
            out = self._feed(plan, ctx, group, self._release(group, t) + [KeyedRecord.from_tuple(value)])
        else:
            group["pending"].setdefault(t, []).append(value)
            out = []
        self._register(ctx, group)
        self.group.update(group)
        yield from out

    def on_timer(self, timestamp: int, ctx):
        plan = self.plan_from(ctx.get_broadcast_state(RULES_STATE))
        group = self.group.value()
        if group is None:
            return
        if plan is None:  # rules not here yet (an idle broadcast input): try at the next watermark
            ctx.timer_service().register_event_time_timer(timestamp)
            return
        held = self._release(group, timestamp)
        out = self._feed(plan, ctx, group, held) if held else []
        if group["expiry"] is not None and group["expiry"] <= timestamp:
            group["expiry"] = None
            group["window"] = plan.expire(ctx.get_current_key(), group["window"], timestamp / 1000)
            self._set_expiry(plan, ctx, group)
        self._register(ctx, group)
        if group["window"] is None and not group["pending"]:
            self.group.clear()
        else:
            self.group.update(group)
        yield from out

    @staticmethod
    def _release(group: dict, until: int) -> list[KeyedRecord]:
        """Take every pending record at or before ``until`` (ms) out of the state."""
        due = [t for t in group["pending"] if t <= until]
        return [KeyedRecord.from_tuple(v) for t in sorted(due) for v in group["pending"].pop(t)]

    def _feed(self, plan: KeyedRulePlan, ctx, group: dict, records: list[KeyedRecord]) -> list:
        group["window"], results, out = plan.correlate(ctx.get_current_key(), group["window"], records)
        self._set_expiry(plan, ctx, group)
        return [(RESULTS, line) for line in results] + [(LEVELS[rec.level], rec.as_tuple()) for rec in out]

    @staticmethod
    def _set_expiry(plan: KeyedRulePlan, ctx, group: dict) -> None:
        """The event time after which the window is empty (bounded state per idle key). One at a
        time: when it fires early (newer entries came), it is set again."""
        if group["window"] is None:
            group["expiry"] = None
        elif group["expiry"] is None:
            group["expiry"] = to_millis(plan.state_until(ctx.get_current_key(), group["window"])) + 1

    @staticmethod
    def _register(ctx, group: dict) -> None:
        timers = ctx.timer_service()
        for t in group["pending"]:
            timers.register_event_time_timer(t)
        if group["expiry"] is not None:
            timers.register_event_time_timer(group["expiry"])


# -- query-stream detectors (keyed by account) --------------------------------------------------


class DetectQueries(KeyedProcessFunction):
    """A fitted query-stream detector per account; the account's detector state in keyed state."""

    def __init__(self, detector_dir: str, id_field: str, time_field: str):
        self.detector_dir, self.id_field, self.time_field = detector_dir, id_field, time_field

    def open(self, runtime_context):
        from kizashi.detectors.artefacts import load_fitted

        from .keyed_detectors import KeyedQueryDetector

        self.keyed = KeyedQueryDetector(load_fitted(self.detector_dir), id_field=self.id_field,
                                        time_field=self.time_field)
        self.state = runtime_context.get_state(ValueStateDescriptor("detector", Types.PICKLED_BYTE_ARRAY()))

    def process_element(self, value, ctx):
        arrival, _, query = value
        try:
            state, events = self.keyed.observe(ctx.get_current_key(), self.state.value(), query)
        except (ValueError, TypeError) as exc:  # e.g. an input of the wrong size: this record only
            yield QUARANTINE, quarantine(f"query record: {exc}", json.dumps(query, default=str))
            return
        self.state.update(state)
        for event in events:
            ts = self.keyed.event_time(event)
            yield DETECTIONS, json.dumps(event, separators=(",", ":"), default=str)
            yield (arrival, NO_TIME if ts is None else to_millis(ts), event)


class ParseQueries(ProcessFunction):
    """Query record line -> (arrival, timestamp, record) keyed later by account; bad ones quarantined."""

    def __init__(self):
        self.arrival = 0

    def process_element(self, value: str, ctx):
        from .keyed_detectors import check_query

        self.arrival += 1
        if not value.strip():
            return
        try:
            query = json.loads(value)
            check_query(query)
        except (ValueError, RecursionError) as exc:
            yield QUARANTINE, quarantine(f"query record: {exc}", value)
            return
        yield (-self.arrival, 0, query)


# -- the job -------------------------------------------------------------------------------------


def build(env: StreamExecutionEnvironment, *, rules_yaml: str, events: list[str], out: str,
          id_field: str = "id", time_field: str = "time", lateness: float = 0.0,
          queries: str | None = None, detector_dir: str | None = None, max_rate: float | None = None) -> None:
    """Add the kizashi pipeline to ``env``: file sources in, result and quarantine files out."""
    plan = KeyedRulePlan(rules_yaml, id_field=id_field, time_field=time_field)  # fail fast, and the depth
    parallelism = env.get_parallelism()
    pickled = Types.PICKLED_BYTE_ARRAY()
    rules = env.from_collection([(rules_yaml, id_field, time_field)],
                                type_info=Types.TUPLE([Types.STRING()] * 3)).set_parallelism(1)
    broadcast = rules.broadcast(RULES_STATE)

    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), *events).build()
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "events").set_parallelism(1).uid("events")
    parsed = lines.process(ParseEvents(time_field, max_rate), output_type=pickled) \
        .set_parallelism(1).uid("parse")
    quarantined = [parsed.get_side_output(QUARANTINE)]
    if queries is not None:
        qsource = FileSource.for_record_stream_format(StreamFormat.text_line_format(), queries).build()
        qparsed = env.from_source(qsource, WatermarkStrategy.no_watermarks(), "queries").set_parallelism(1) \
            .uid("queries").process(ParseQueries(), output_type=pickled).set_parallelism(1).uid("parse-queries")
        quarantined.append(qparsed.get_side_output(QUARANTINE))
        detected = qparsed.key_by(lambda v: str(v[2]["account"]), key_type=Types.STRING()) \
            .process(DetectQueries(detector_dir, id_field, time_field), output_type=pickled).uid("query-detector")
        parsed = parsed.union(detected.set_parallelism(parallelism))
        quarantined.append(detected.get_side_output(QUARANTINE))
        _sink([detected.get_side_output(DETECTIONS)], os.path.join(out, "detections"), "detections")
    timed = parsed.assign_timestamps_and_watermarks(
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(round(lateness * 1000)))
        .with_timestamp_assigner(EventTime())).uid("watermarks")
    if queries is not None:
        timed = timed.set_parallelism(1)  # one watermark generator sees the whole (merged) stream
    detect = timed.connect(broadcast).process(Detect(), output_type=pickled).uid("detect")
    results = [detect.get_side_output(RESULTS)]
    quarantined.append(detect.get_side_output(QUARANTINE))
    outputs = [detect]
    if plan.depth > MAX_DEPTH:
        raise ValueError(f"correlation chains deeper than {MAX_DEPTH} levels are not supported")
    for level in range(1, plan.depth + 1):
        inputs = [s.get_side_output(LEVELS[level]) for s in outputs]
        records = inputs[0].union(*inputs[1:]) if len(inputs) > 1 else inputs[0]
        correlated = records.key_by(lambda r: r[1], key_type=Types.STRING()).connect(broadcast) \
            .process(Correlate(level), output_type=pickled).uid(f"correlate-{level}")
        results.append(correlated.get_side_output(RESULTS))
        outputs.append(correlated)
    _sink(results, out, "results")
    _sink(quarantined, os.path.join(out, "quarantine"), "quarantine")


def _sink(streams: list, path: str, prefix: str) -> None:
    merged = streams[0].union(*streams[1:]) if len(streams) > 1 else streams[0]
    sink = FileSink.for_row_format(path, Encoder.simple_string_encoder()) \
        .with_output_file_config(OutputFileConfig.builder().with_part_prefix(prefix).with_part_suffix(".jsonl").build()) \
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner()) \
        .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy()).build()
    merged.sink_to(sink).uid(f"sink-{prefix}")


def environment(*, parallelism: int, checkpoint_dir: str | None = None, checkpoint_interval: float = 2.0,
                restore: str | None = None, bundle_size: int | None = None) -> StreamExecutionEnvironment:
    """A local (or, under ``flink run``, the cluster's) environment, Python workers on this interpreter."""
    bindir = os.path.dirname(sys.executable)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    conf = Configuration()
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string("taskmanager.numberOfTaskSlots", str(max(1, parallelism)))
    conf.set_string("pipeline.auto-watermark-interval", "200 ms")
    conf.set_string("python.state.cache-size", "10000")  # keys whose state stays in the Python worker
    if os.environ.get("KIZASHI_FLINK_PROFILE"):  # cProfile of each Python worker, printed at the end
        conf.set_string("python.profile.enabled", "true")
    if bundle_size:  # small bundles: a checkpoint barrier waits for the bundle in the Python worker
        conf.set_string("python.fn-execution.bundle.size", str(bundle_size))
    if checkpoint_dir:
        conf.set_string("execution.checkpointing.dir", Path(checkpoint_dir).resolve().as_uri())
        conf.set_string("execution.checkpointing.interval", f"{int(checkpoint_interval * 1000)} ms")
        conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
        conf.set_string("execution.checkpointing.num-retained", "3")
    if restore:
        conf.set_string("execution.state-recovery.path", Path(restore).resolve().as_uri())
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
    env.set_parallelism(parallelism)
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kizashi.scale.flink", description=__doc__.split("\n")[0])
    ap.add_argument("--rules", action="append", required=True, help="rule file or folder (repeatable)")
    ap.add_argument("--events", action="append", required=True, help="JSON lines file (repeatable)")
    ap.add_argument("--out", required=True, help="folder for results-*.jsonl and quarantine/")
    ap.add_argument("--id-field", default="id")
    ap.add_argument("--time-field", default="time")
    ap.add_argument("--lateness", type=float, default=0.0)
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--checkpoint-dir")
    ap.add_argument("--checkpoint-interval", type=float, default=2.0, help="seconds")
    ap.add_argument("--restore", help="checkpoint (chk-N folder) to resume from")
    ap.add_argument("--max-rate", type=float, help="replay the events at most this many per second")
    ap.add_argument("--bundle-size", type=int,
                    help="records per Python bundle (1: every timer registration is in the next checkpoint, "
                         "docs/scale.md 'Restore and PyFlink's timers')")
    ap.add_argument("--queries", help="JSON lines of query records for --detector")
    ap.add_argument("--detector", help="a fitted query-stream detector: the folder `kizashi detectors fit` wrote")
    args = ap.parse_args(argv)
    if (args.queries is None) != (args.detector is None):
        ap.error("--queries and --detector go together")
    env = environment(parallelism=args.parallelism, checkpoint_dir=args.checkpoint_dir,
                      checkpoint_interval=args.checkpoint_interval, restore=args.restore,
                      bundle_size=args.bundle_size or (max(1, int(args.max_rate / 10)) if args.max_rate else None))
    build(env, rules_yaml=rules_text(args.rules), events=[str(Path(e).resolve()) for e in args.events],
          out=str(Path(args.out).resolve()), id_field=args.id_field, time_field=args.time_field,
          lateness=args.lateness, queries=str(Path(args.queries).resolve()) if args.queries else None,
          detector_dir=str(Path(args.detector).resolve()) if args.detector else None, max_rate=args.max_rate)
    env.execute("kizashi")
    return 0


if __name__ == "__main__":
    sys.exit(main())
