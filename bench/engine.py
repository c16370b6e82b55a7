"""Benchmark kizashi's Sigma engine with the bundled rule pack; prints JSON.

For each size: synthetic kizashi detection events (5,000 accounts, 40 models, half of them alarms
the pack matches, the rest matching no rule), evaluated

* streaming (``RuleSet.stream().push`` per event; events/s, peak RSS, alert latency = wall time
  from pushing a correlation's anchor event to the result coming out),
* batch (``RuleSet.evaluate_batch`` on a DataFrame with categorical columns),
* baseline: the SQL the pySigma SQLite backend generates for the same rules, run on the same events
  in an SQLite file database (the documented way to evaluate Sigma with a database), with the
  kizashi/baseline speed ratio.

Each measurement runs in its own subprocess so peak memory (``ru_maxrss``) is its own.
Usage: ``python bench/engine.py --sizes 100000,1000000 [--sqlite-max 1000000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import deque

import numpy as np
import pandas as pd

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


def frame(n: int) -> pd.DataFrame:
    """The same events as :func:`events`, as a DataFrame with categorical columns."""
    parts = []
    chunk = 200_000
    for start in range(0, n, chunk):
        c = synthetic_columns(min(chunk, n - start), seed=start)
        kinds = c["kind"]
        parts.append(pd.DataFrame({
            "id": np.array([f"ev{start + i}" for i in range(len(kinds))], dtype=object),
            "time": c["time"] + start * STEP,
            "kind": kinds,
            "account": c["account"],
            "model": c["model"],
            "score": c["score"],
        }))
    df = pd.concat(parts, ignore_index=True)
    kinds = df.pop("kind").to_numpy()
    for col, pos in (("detector.name", 0), ("stage", 1), ("attack", 2)):
        names = sorted({k[pos] for k in KINDS})
        df[col] = pd.Categorical.from_codes(np.array([names.index(k[pos]) for k in KINDS])[kinds], names)
    df["atlas.technique"] = pd.Series([[KINDS[k][3]] for k in range(len(KINDS))], dtype=object).to_numpy()[kinds]
    df["account.id"] = pd.Categorical.from_codes(df.pop("account").to_numpy(), [f"acct-{a}" for a in range(ACCOUNTS)])
    df["model.id"] = pd.Categorical.from_codes(df.pop("model").to_numpy(), [f"model-{m}" for m in range(MODELS)])
    return df


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- workers ---------------------------------------------------------------------------------------


def work_stream(n: int) -> dict:
    from kizashi.engine.sigma import RuleSet

    rs = RuleSet.bundled()
    ev = rs.stream()
    pushed: dict[str, float] = {}
    recent: deque[str] = deque()
    latencies = []
    counts = {"match": 0, "correlation": 0}
    max_state = 0
    t0 = time.perf_counter()
    for i, e in enumerate(events(n)):
        now = time.perf_counter()
        pushed[e["id"]] = now
        recent.append(e["id"])
        if len(recent) > 20000:
            pushed.pop(recent.popleft(), None)
        for r in ev.push(e):
            counts[r.type] += 1
            if r.type == "correlation":
                anchor = r.event_ids[-1]
                if anchor in pushed:
                    latencies.append(time.perf_counter() - pushed[anchor])
        if i % 10_000 == 0:
            max_state = max(max_state, ev.state_size())
    for r in ev.flush():
        counts[r.type] += 1
    elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    return {
        "events": n, "seconds": round(elapsed, 3), "events_per_s": round(n / elapsed),
        "peak_rss_mb": round(peak_mb(), 1), "results": counts, "max_state_entries": max_state,
        "alert_latency_ms": {"p50": round(float(np.nanpercentile(lat, 50)), 3),
                             "p99": round(float(np.nanpercentile(lat, 99)), 3),
                             "max": round(float(np.nanmax(lat)), 3)},
    }


def work_batch(n: int) -> dict:
    from kizashi.engine.sigma import RuleSet

    rs = RuleSet.bundled()
    df = frame(n)
    base_mb = peak_mb()
    t0 = time.perf_counter()
    results = rs.evaluate_batch(df)
    elapsed = time.perf_counter() - t0
    counts = {"match": 0, "correlation": 0}
    for r in results:
        counts[r.type] += 1
    return {"events": n, "seconds": round(elapsed, 3), "events_per_s": round(n / elapsed),
            "peak_rss_mb": round(peak_mb(), 1), "input_frame_rss_mb": round(base_mb, 1), "results": counts}


def work_sqlite(n: int) -> dict:
    from kizashi.engine.sigma.export import ordered_collection
    from kizashi.rules import bundled_rules_path
    from sigma.backends.sqlite import sqliteBackend

    texts = [p.read_text() for p in sorted(bundled_rules_path().rglob("*.yml"))]
    collection = ordered_collection(texts)
    backend = sqliteBackend(timestamp_field="time", event_id_field="id", timestamp_format="unix")
    queries = backend.convert(collection)
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(os.path.join(tmp, "events.db"))
        cols = ["id", "time", "detector.name", "stage", "attack", "atlas.technique", "account.id", "model.id", "score"]
        conn.execute("CREATE TABLE logs (" + ", ".join(
            f"`{c}` " + ("REAL" if c in ("time", "score") else "TEXT COLLATE NOCASE") for c in cols) + ")")
        t_load = time.perf_counter()
        batch = []
        for e in events(n):
            batch.append((e["id"], e["time"], e["detector.name"], e["stage"], e["attack"], e["atlas.technique"][0],
                          e["account.id"], e["model.id"], e["score"]))
            if len(batch) == 50_000:
                conn.executemany("INSERT INTO logs VALUES (?,?,?,?,?,?,?,?,?)", batch)
                batch = []
        if batch:
            conn.executemany("INSERT INTO logs VALUES (?,?,?,?,?,?,?,?,?)", batch)
        conn.commit()
        load_s = time.perf_counter() - t_load
        t0 = time.perf_counter()
        rows = 0
        for q in queries:
            rows += sum(1 for _ in conn.execute(q))
        elapsed = time.perf_counter() - t0
        conn.close()
    return {"events": n, "seconds": round(elapsed, 3), "events_per_s": round(n / elapsed),
            "load_seconds": round(load_s, 3), "peak_rss_mb": round(peak_mb(), 1), "result_rows": rows,
            "queries": len(queries)}


WORKERS = {"stream": work_stream, "batch": work_batch, "sqlite": work_sqlite}


def run_worker(kind: str, n: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--sizes", str(n)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"events": n, "skipped": f"timed out after {timeout:.0f} s"}
    except subprocess.CalledProcessError as exc:
        return {"events": n, "error": exc.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma list of event counts (10000000 works: ~minutes)")
    ap.add_argument("--modes", default="stream,batch,sqlite")
    ap.add_argument("--sqlite-max", type=int, default=1_000_000, help="largest size to run the SQLite baseline on")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per measurement")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.worker:
        print(json.dumps(WORKERS[args.worker](sizes[0])))
        return
    report: dict = {"accounts": ACCOUNTS, "models": MODELS, "cpu_count": os.cpu_count(), "runs": []}
    for n in sizes:
        row: dict = {"events": n}
        for mode in args.modes.split(","):
            if mode == "sqlite" and n > args.sqlite_max:
                row[mode] = {"events": n, "skipped": f"above --sqlite-max {args.sqlite_max}"}
                continue
            row[mode] = run_worker(mode, n, args.timeout)
        base = row.get("sqlite", {}).get("events_per_s")
        for mode in ("stream", "batch"):
            eps = row.get(mode, {}).get("events_per_s")
            if base and eps:
                row[f"{mode}_vs_sqlite"] = round(eps / base, 2)
        report["runs"].append(row)
        print(json.dumps(row), file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
