"""Benchmark kizashi's Sigma engine with the bundled rule pack, side by side on the same file; prints JSON.

For each size, synthetic kizashi detection events (5,000 accounts, 40 models, half of them alarms
the pack matches, the rest matching no rule) are written once to a JSON-lines file, then each
approach reads that file in its own subprocess (so peak memory, ``ru_maxrss``, is its own):

* ``parse_floor``: the standard library's ``json.loads`` over every line, nothing else (the floor);
* ``window_floor``: the least Python a correlation window needs per entry (decode, one dict lookup,
  append and bisect per entry; the entries worked out untimed): the floor of a per-entry Python engine;
* ``stage_floors``: each stage of the stream's output at its least in CPython, timed alone and
  summed (decode, vectorised detection masks, the window step, the result lines, the result ids);
* ``stream``: what ``kizashi rules eval --mode stream`` does: the file read 1,024 lines at a time,
  orjson decode, the micro-batch evaluator (``RuleSet.microbatch``: 1,024 events or 100 ms, fed by
  ``push_many``), each result serialised to its JSON line,
  the collector tuned (``tune_gc``);
  alert latency = wall time from reading a correlation's anchor event to its result coming out
  (read times kept in a fixed ring, one store per event);
* ``cli``: ``kizashi rules eval --events FILE`` run as a user runs it, start-up included;
* ``stream_per_event``: the same with the per-event ``StreamEvaluator.push`` and the default garbage
  collector settings (the engine before #17, with #17's correlator changes);
* ``batch``: ``RuleSet.evaluate_batch`` over the decoded events (what ``--mode batch`` does);
* ``sqlite``: the Zircolite approach: the SQL the pySigma SQLite backend generates for the same rules,
  run on the same events loaded from the file into an in-memory SQLite database (load + queries).

Every row gives events/s, the ratio to the parse floor and peak RSS; kizashi's rows also a digest
of their sorted result ids (equal digests: identical results).
Usage: ``python bench/engine.py --sizes 100000,200000,1000000 [--sqlite-max 200000]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from itertools import islice

import numpy as np

ACCOUNTS = 5000
MODELS = 40
START = 1_790_000_000.0  # epoch seconds
STEP = 0.05  # mean seconds between events (20 events/s across the fleet)

# (detector, stage, attack, technique) -- the first rows are alarms the pack matches
KINDS = [
    ("prada", "symptom", "extraction", "AML.T0024.002"),
    ("query_rate", "symptom", "extraction", "AML.T0024.002"),
    ("stateful_knn", "precursor", "evasion", "AML.T0043.001"),
    ("label_distribution", "precursor", "evasion", "AML.T0043.001"),
    ("query_rate", "precursor", "evasion", "AML.T0043.001"),
    ("feature_squeezing", "symptom", "evasion", "AML.T0015"),
    ("spectral_signature", "precursor", "poisoning", "AML.T0020"),
    ("strip", "symptom", "poisoning", "AML.T0043.004"),
    ("shadow_monitor", "symptom", "extraction", "AML.T0040"),  # matches no rule
]
P_KINDS = np.array([0.06, 0.04, 0.08, 0.06, 0.06, 0.12, 0.01, 0.07, 0.50])


def synthetic_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    kind = rng.choice(len(KINDS), size=n, p=P_KINDS / P_KINDS.sum())
    times = START + np.cumsum(rng.exponential(STEP, size=n))
    return {
        "kind": kind,
        "time": np.round(times, 3),
        "account": rng.integers(0, ACCOUNTS, size=n),
        "model": rng.integers(0, MODELS, size=n),
        "score": np.round(rng.gamma(2.0, 1.0, size=n), 3),
    }


def events(n: int, seed: int = 0):
    """Flat kizashi events, generated in chunks (bounded memory)."""
    chunk = 200_000
    for start in range(0, n, chunk):
        cols = synthetic_columns(min(chunk, n - start), seed=seed + start)
        for i in range(len(cols["kind"])):
            det, stage, attack, tech = KINDS[cols["kind"][i]]
            yield {
                "id": f"ev{start + i}",
                "time": float(cols["time"][i]) + start * STEP,
                "detector.name": det,
                "stage": stage,
                "attack": attack,
                "atlas.technique": [tech],
                "account.id": f"acct-{cols['account'][i]}",
                "model.id": f"model-{cols['model'][i]}",
                "score": float(cols["score"][i]),
            }


def write_events(path: str, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for e in events(n):
            fh.write(json.dumps(e, separators=(",", ":")) + "\n")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _digest(ids) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def _row(n: int, elapsed: float, **extra) -> dict:
    return {"events": n, "seconds": round(elapsed, 3), "events_per_s": round(n / elapsed),
            "peak_rss_mb": round(peak_mb(), 1), **extra}


# -- workers (each reads the file itself) ----------------------------------------------------------


def work_parse_floor(path: str, n: int) -> dict:
    t0 = time.perf_counter()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            json.loads(line)
    return _row(n, time.perf_counter() - t0)


LATENCY_RING = 1 << 16  # read times of the last 65,536 events (anchors are recent: the batch, plus lateness)


def _streamed(path: str, n: int, evaluator, chunk: int = 1) -> dict:
    """Push every line of ``path`` through ``evaluator`` as the CLI does (``chunk`` lines at a time
    through ``push_many``, or one by one through ``push``), serialising each result.
    The read time of each event goes into a fixed ring of doubles (one store per event, no dict), so
    the bookkeeping costs the stream little and the peak memory nothing that grows."""
    from array import array

    from kizashi.cli.rules_cmd import loads

    read_at = array("d", bytes(8 * LATENCY_RING))
    mask = LATENCY_RING - 1
    latencies: list[float] = []
    counts = {"match": 0, "correlation": 0}
    ids: list[str] = []
    max_state = 0
    sink = open(os.devnull, "w")  # noqa: SIM115 - closed below; results are serialised as the CLI prints them
    last = 0

    def emit(results) -> None:
        now = time.perf_counter()
        for r in results:
            counts[r.type] += 1
            ids.append(r.id)
            sink.write(r.to_json() + "\n")
            if r.type == "correlation":
                anchor = int(r.event_ids[-1][2:])  # the bench's ids are "ev<line>"
                if last - anchor < LATENCY_RING:
                    latencies.append(now - read_at[anchor & mask])

    clock = time.perf_counter
    t0 = clock()
    with open(path, encoding="utf-8") as fh:
        if chunk == 1:
            for i, line in enumerate(fh):
                e = loads(line)
                read_at[i & mask] = clock()
                last = i
                results = evaluator.push(e)
                if results:
                    emit(results)
                if i % 10_000 == 0:
                    max_state = max(max_state, evaluator.state_size())
        else:  # as the CLI reads a file: a batch's worth of lines, then push_many
            i = 0
            while lines := list(islice(fh, chunk)):
                objs = []
                for line in lines:
                    objs.append(loads(line))
                    read_at[i & mask] = clock()
                    i += 1
                last = i - 1
                results = evaluator.push_many(objs)
                if results:
                    emit(results)
                if i % 10_240 < chunk:
                    max_state = max(max_state, evaluator.state_size())
    emit(evaluator.flush())
    elapsed = time.perf_counter() - t0
    sink.close()
    lat = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    return _row(n, elapsed, results=counts, results_digest=_digest(ids), max_state_entries=max_state,
                alert_latency_ms={"p50": round(float(np.nanpercentile(lat, 50)), 3),
                                  "p99": round(float(np.nanpercentile(lat, 99)), 3),
                                  "max": round(float(np.nanmax(lat)), 3)})


def work_stream(path: str, n: int) -> dict:
    from kizashi.cli.tuning import tune_gc
    from kizashi.engine.sigma import RuleSet

    rs = RuleSet.bundled()
    tune_gc()  # as rules eval does
    return _streamed(path, n, rs.microbatch(), chunk=1024)  # the CLI reads a file 1,024 lines at a time


def work_stream_per_event(path: str, n: int) -> dict:
    from kizashi.engine.sigma import RuleSet

    return _streamed(path, n, RuleSet.bundled().stream())


def work_batch(path: str, n: int) -> dict:
    from kizashi.cli.rules_cmd import loads
    from kizashi.cli.tuning import tune_gc
    from kizashi.engine.sigma import RuleSet

    rs = RuleSet.bundled()
    tune_gc()  # as rules eval does
    t0 = time.perf_counter()
    with open(path, encoding="utf-8") as fh:
        rows = [loads(line) for line in fh]
    results = rs.evaluate_batch(rows)
    elapsed = time.perf_counter() - t0
    counts = {"match": 0, "correlation": 0}
    for r in results:
        counts[r.type] += 1
    return _row(n, elapsed, results=counts, results_digest=_digest(r.id for r in results))


def work_sqlite(path: str, n: int) -> dict:
    from kizashi.engine.sigma.export import ordered_collection
    from kizashi.rules import bundled_rules_path
    from sigma.backends.sqlite import sqliteBackend

    texts = [p.read_text() for p in sorted(bundled_rules_path().rglob("*.yml"))]
    backend = sqliteBackend(timestamp_field="time", event_id_field="id", timestamp_format="unix")
    queries = backend.convert(ordered_collection(texts))
    cols = ["id", "time", "detector.name", "stage", "attack", "atlas.technique", "account.id", "model.id", "score"]
    t0 = time.perf_counter()
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE logs (" + ", ".join(
        f"`{c}` " + ("REAL" if c in ("time", "score") else "TEXT COLLATE NOCASE") for c in cols) + ")")
    with open(path, encoding="utf-8") as fh:
        batch = []
        for line in fh:
            e = json.loads(line)
            batch.append(tuple(e[c][0] if c == "atlas.technique" else e[c] for c in cols))
            if len(batch) == 50_000:
                conn.executemany("INSERT INTO logs VALUES (?,?,?,?,?,?,?,?,?)", batch)
                batch = []
        if batch:
            conn.executemany("INSERT INTO logs VALUES (?,?,?,?,?,?,?,?,?)", batch)
    conn.commit()
    load_s = time.perf_counter() - t0
    rows = 0
    for q in queries:
        rows += sum(1 for _ in conn.execute(q))
    elapsed = time.perf_counter() - t0
    conn.close()
    return _row(n, elapsed, load_seconds=round(load_s, 3), query_seconds=round(elapsed - load_s, 3),
                result_rows=rows, queries=len(queries))


def _windows_fed(rs, correlations, pattern: tuple[str, ...]) -> tuple[tuple[int, str, float], ...]:
    """(correlation index, group-by field, timespan) of each window an event matching ``pattern`` (the
    detection rules it matches) enters: once per correlation, by the first slot it fills."""
    correlated = [ref for ref in pattern if ref in rs.correlated_keys]
    return tuple((i, c.slot_group_fields[c.ref_keys.index(ref)][0], c.span) for i, c in enumerate(correlations)
                 for ref in [next((r for r in c.ref_keys if r in correlated), None)] if ref is not None)


def work_window_floor(path: str, n: int) -> dict:
    """The least Python a correlation window needs, on the same file: orjson decode, then per
    (correlation, group) entry one dict lookup, one append and one bisect for the window start. Which
    entries each event makes is worked out first, untimed, by the engine's own detection; there is
    no firing, quiet period, eviction or result. A lower bound for any window engine that does
    per-entry work in Python."""
    import bisect

    import orjson
    from kizashi.engine.sigma import RuleSet
    from kizashi.engine.sigma.microbatch import ColumnView, _patterns

    rs = RuleSet.bundled()
    stream = rs.stream()
    correlations = stream.correlator.correlations
    detections = list(rs.detections.items())
    specs: dict[tuple, tuple] = {}  # pattern of matched rules -> ((correlation, group field, span), ...)
    per_event: list[tuple] = []
    with open(path, "rb") as fh:
        while chunk := [orjson.loads(line) for _, line in zip(range(50_000), fh, strict=False)]:
            for pattern in _patterns(detections, ColumnView(chunk)):
                spec = specs.get(pattern)
                if spec is None:
                    spec = specs[pattern] = _windows_fed(rs, correlations, pattern)
                per_event.append(spec)
    windows: list[dict] = [{} for _ in correlations]
    entries_made = 0
    loads = orjson.loads
    t0 = time.perf_counter()
    with open(path, "rb") as fh:
        for line, spec in zip(fh, per_event, strict=True):
            e = loads(line)
            if spec:
                ts = e["time"]
                for i, field, span in spec:
                    groups = windows[i]
                    key = e.get(field)
                    entries = groups.get(key)
                    if entries is None:
                        entries = groups[key] = []
                    entries.append(ts)
                    bisect.bisect_left(entries, ts - span)
                    entries_made += 1
    return _row(n, time.perf_counter() - t0, window_entries=entries_made)


def work_stage_floors(path: str, n: int) -> dict:
    """The least each stage of the stream's output costs in CPython, on the same file, each timed
    alone (best of 3) and summed: orjson decode; the detection rules as the engine's vectorised
    masks over 1,024-event column views; the window floor's step per entry; the result lines, the
    engine's own results (worked out untimed) as ``orjson.dumps`` of their dicts; and one SHA-256 per
    result id. No per-event glue, no quiet period, no firing: a stream engine in CPython that must
    produce these lines costs at least the sum."""
    import bisect
    import gc
    import hashlib

    import orjson
    from kizashi.cli.tuning import tune_gc
    from kizashi.engine.sigma import RuleSet
    from kizashi.engine.sigma.microbatch import ColumnView, _patterns

    rs = RuleSet.bundled()
    detections = list(rs.detections.items())
    with open(path, "rb") as fh:
        lines = fh.read().splitlines()
    evs = [orjson.loads(line) for line in lines]
    engine = rs.microbatch()
    results = engine.push_many(evs) + engine.flush()
    dicts = [r.to_dict() for r in results]
    ids = [(r.rule_id + "\x00" + "\x00".join(r.event_ids)).encode() for r in results]
    correlations = engine.stream.correlator.correlations
    entries: list[tuple] = []  # (time, correlation, group, span) per window entry, worked out untimed
    for start in range(0, len(evs), 1024):
        chunk = evs[start:start + 1024]
        for e, pattern in zip(chunk, _patterns(detections, ColumnView(chunk)), strict=True):
            entries += [(e["time"], i, e.get(field), span) for i, field, span in _windows_fed(rs, correlations, pattern)]
    sink = open(os.devnull, "wb")  # noqa: SIM115 - closed below
    tune_gc()

    def decode() -> None:
        for line in lines:
            orjson.loads(line)

    def detect() -> None:
        for start in range(0, len(evs), 1024):
            _patterns(detections, ColumnView(evs[start:start + 1024]))

    def windows() -> None:
        groups: list[dict] = [{} for _ in correlations]
        for ts, i, key, span in entries:
            window = groups[i].get(key)
            if window is None:
                window = groups[i][key] = []
            window.append(ts)
            bisect.bisect_left(window, ts - span)

    def write_lines() -> None:
        for d in dicts:
            sink.write(orjson.dumps(d) + b"\n")

    def hash_ids() -> None:
        for b in ids:
            hashlib.sha256(b).hexdigest()

    stages = {}
    for name, f in (("decode", decode), ("detection_masks", detect), ("window_step", windows),
                    ("result_lines", write_lines), ("result_ids", hash_ids)):
        best = []
        for _ in range(3):
            gc.collect()
            t0 = time.perf_counter()
            f()
            best.append(time.perf_counter() - t0)
        stages[name] = round(min(best), 4)
    sink.close()
    return _row(n, sum(stages.values()), stage_seconds=stages, window_entries=len(entries), results=len(results))


def work_cli(path: str, n: int) -> dict:
    """``kizashi rules eval --events FILE`` as a user runs it (start-up included), output to /dev/null."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "kizashi"), "rules", "eval", "--events", path]
    t0 = time.perf_counter()
    with open(os.devnull, "w") as sink:
        subprocess.run(cmd, stdout=sink, check=True)
    elapsed = time.perf_counter() - t0
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"events": n, "seconds": round(elapsed, 3), "events_per_s": round(n / elapsed), "peak_rss_mb": round(child, 1)}


WORKERS = {"parse_floor": work_parse_floor, "cli": work_cli, "window_floor": work_window_floor,
           "stage_floors": work_stage_floors, "stream": work_stream,
           "stream_per_event": work_stream_per_event, "batch": work_batch, "sqlite": work_sqlite}


def run_worker(kind: str, path: str, n: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--file", path, "--sizes", str(n)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"events": n, "skipped": f"timed out after {timeout:.0f} s"}
    except subprocess.CalledProcessError as exc:
        return {"events": n, "error": exc.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,200000,1000000", help="comma list of event counts")
    ap.add_argument("--modes", default="parse_floor,window_floor,cli,stream,stream_per_event,batch,sqlite")
    ap.add_argument("--sqlite-max", type=int, default=200_000, help="largest size to run the SQLite baseline on")
    ap.add_argument("--per-event-max", type=int, default=1_000_000,
                    help="largest size for stream_per_event and window_floor")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per measurement")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.file, sizes[0])))
        return
    report: dict = {"accounts": ACCOUNTS, "models": MODELS, "cpu_count": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = os.path.join(tmp, f"events-{n}.jsonl")
            write_events(path, n)
            row: dict = {"events": n, "file_mb": round(os.path.getsize(path) / 2**20, 1)}
            for mode in args.modes.split(","):
                limit = {"sqlite": args.sqlite_max, "stream_per_event": args.per_event_max,
                         "window_floor": args.per_event_max, "stage_floors": args.per_event_max}.get(mode)
                if limit is not None and n > limit:
                    row[mode] = {"events": n, "skipped": f"above the size limit {limit}"}
                    continue
                row[mode] = run_worker(mode, path, n, args.timeout)
                print(json.dumps({mode: row[mode]}), file=sys.stderr, flush=True)
            os.unlink(path)
            floor = row.get("parse_floor", {}).get("events_per_s")
            sqlite_eps = row.get("sqlite", {}).get("events_per_s")
            for mode in ("window_floor", "stage_floors", "cli", "stream", "stream_per_event", "batch", "sqlite"):
                eps = row.get(mode, {}).get("events_per_s")
                if floor and eps:
                    row[mode]["vs_parse_floor"] = round(eps / floor, 3)
                if sqlite_eps and eps and mode != "sqlite":
                    row[mode]["vs_sqlite"] = round(eps / sqlite_eps, 2)
            digests = {row[m]["results_digest"] for m in ("stream", "stream_per_event", "batch")
                       if "results_digest" in row.get(m, {})}
            row["kizashi_results_identical"] = len(digests) == 1 if digests else None
            report["runs"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
