"""Benchmark the Flink job (PyFlink local mode on this machine) against the single-process engine.

Synthetic kizashi events from bench/engine.py (5,000 accounts, 40 models, the bundled pack), as a
JSON lines file:

* baseline: ``RuleSet.bundled().stream()`` pushing every event in this process (events/s);
* the Flink job at parallelism 1 and 2 (``python -m kizashi.scale.flink`` in the PyFlink
  environment, checkpoints every 2 s): wall time for N events minus wall time for a tiny input
  (job start-up, ~10-20 s here) gives the steady events/s; the ratio to the baseline is reported;
* per-key state: the pickled window of each (correlation, group) key at the end of the stream, as the
  job keeps it in Flink keyed state (computed with the same keyed plan).

Results must be identical (checked). Usage: ``python bench/flink.py [--events 20000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from kizashi.engine.sigma import RuleSet  # noqa: E402
from kizashi.rules import bundled_rules_path  # noqa: E402
from kizashi.scale.keyed_rules import KeyedRulePlan, rules_text  # noqa: E402
from kizashi.scale.launch import job_command, job_environment, read_lines  # noqa: E402

from engine import events  # noqa: E402  (bench/engine.py beside this script: the shared synthetic workload)


def single_process(path: Path) -> tuple[float, list[str], int]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    ev = RuleSet.bundled().stream()
    t0 = time.perf_counter()
    out = [r.to_json() for e in lines for r in ev.push(e)] + [r.to_json() for r in ev.flush()]
    return time.perf_counter() - t0, out, ev.state_size()


def keyed_state_sizes(path: Path) -> dict:
    """Per-key window state at the end of the stream, as the job stores it (pickled)."""
    plan = KeyedRulePlan(rules_text([str(bundled_rules_path())]))
    by_key: dict[str, list] = defaultdict(list)
    for i, line in enumerate(path.read_text().splitlines()):
        for rec in plan.detect(json.loads(line), i)[1]:
            by_key[rec.key].append(rec)
    sizes = []
    for key, recs in by_key.items():
        state, _, _ = plan.correlate(key, None, recs)
        if state is not None:
            sizes.append(len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)))
    sizes.sort()
    return {"keys": len(by_key), "keys_with_state": len(sizes),
            "bytes_mean": round(statistics.fmean(sizes), 1) if sizes else 0,
            "bytes_p99": sizes[int(0.99 * (len(sizes) - 1))] if sizes else 0, "bytes_max": max(sizes, default=0)}


def flink(path: Path, parallelism: int, work: Path, bundle: int | None = None) -> tuple[float, list[str]]:
    tag = f"{path.stem}-{parallelism}-{bundle or 'default'}"
    out, chk = work / f"out-{tag}", work / f"chk-{tag}"
    cmd = job_command(["--rules", str(bundled_rules_path()), "--events", str(path), "--out", str(out),
                       "--parallelism", str(parallelism), "--checkpoint-dir", str(chk), "--checkpoint-interval", "2",
                       *(["--bundle-size", str(bundle)] if bundle else [])])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=job_environment(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return wall, read_lines(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--parallelism", default="1,2")
    ap.add_argument("--bundle-sizes", default="default,1",
                    help="Python bundle sizes to run (1 = every timer registration in the next checkpoint)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kizashi-bench-flink-") as tmp:
        work = Path(tmp)
        big, tiny = work / "events.jsonl", work / "tiny.jsonl"
        big.write_text("".join(json.dumps(e) + "\n" for e in events(args.events)))
        tiny.write_text("".join(json.dumps(e) + "\n" for e in events(10)))
        base_s, base_out, base_state = single_process(big)
        report = {"events": args.events, "load_average_at_start": round(os.getloadavg()[0], 2),
                  "single_process": {"events_per_s": round(args.events / base_s), "results": len(base_out),
                                     "state_entries": base_state},
                  "keyed_state": keyed_state_sizes(big), "flink": {}}
        runs = [(int(p), None if b == "default" else int(b))
                for p in args.parallelism.split(",") for b in args.bundle_sizes.split(",")]
        for p, bundle in runs:
            startup, _ = flink(tiny, p, work, bundle)
            wall, out = flink(big, p, work, bundle)
            steady = max(wall - startup, 1e-9)
            report["flink"][f"p{p}" + (f"_bundle{bundle}" if bundle else "")] = {
                "wall_s": round(wall, 1), "startup_s": round(startup, 1),
                "events_per_s": round(args.events / steady), "events_per_s_incl_startup": round(args.events / wall),
                "ratio_to_single_process": round((args.events / steady) / (args.events / base_s), 3),
                "identical_results": Counter(out) == Counter(base_out)}
    report["load_average_at_end"] = round(os.getloadavg()[0], 2)  # a shared machine: context for the ratios
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
