"""Ingest throughput: events/s into the store (SQLite file, and PostgreSQL: ``KIZASHI_TEST_PG_URL``, else
a throwaway cluster started like the tests' ``postgresql_url`` fixture), store only, store + Sigma
pipeline (bundled pack) over DetectionEvents, and the whole ``kizashi ingest`` path from JSON lines
(validate, store, rules, alerts), against a baseline of raw ``executemany`` inserts of the same JSON
into SQLite in the same run; then the ``kizashi ingest`` path once more with each stage timed (µs per
event: what bounds it). Prints JSON.

    .venv/bin/python bench/ingest.py [--n 20000] [--batch 500] [--no-pg]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kizashi.cli.tuning import tune_gc
from kizashi.engine.events import DetectionEvent
from kizashi.engine.pipeline import Pipeline
from kizashi.engine.store import Store


def synthetic(n: int, accounts: int = 500) -> list[DetectionEvent]:
    t0 = datetime(2026, 11, 28, tzinfo=UTC)
    kinds = [("precursor", "evasion", ["AML.T0043.001"], "stateful_knn"),
             ("symptom", "evasion", ["AML.T0015"], "feature_squeezing"),
             ("symptom", "extraction", ["AML.T0024.002"], "prada")]
    out = []
    for i in range(n):
        stage, attack, tech, det = kinds[i % 3]
        out.append(DetectionEvent.parse({
            "id": f"bench-{i}", "time": (t0 + timedelta(seconds=i)).isoformat(),
            "detector": {"id": f"kizashi.{det}", "name": det}, "stage": stage, "attack": attack,
            "atlas": {"techniques": tech}, "subject": {"account": f"acct-{i % accounts}"},
            "target": {"model": "digits"}, "score": 1.0 + (i % 7) / 10}))
    return out


def run_store(url: str, events, batch: int, pipeline: bool) -> float:
    store = Store(url)
    p = Pipeline(store) if pipeline else None
    t = time.perf_counter()
    for i in range(0, len(events), batch):
        chunk = events[i:i + batch]
        p.ingest(chunk) if p else store.add_events(chunk)
    dt = time.perf_counter() - t
    store.close()
    return len(events) / dt


def run_lines(url: str, lines: list[str], batch: int, stages: dict[str, float] | None = None) -> float:
    """``kizashi ingest``: JSON lines validated, stored, evaluated by the bundled pack, alerts stored
    (the collector tuned as the command does). ``stages`` collects µs per event spent in each stage."""
    store = Store(url)
    p = Pipeline(store)
    spent: dict[str, float] = {}
    if stages is not None:
        _time_stages(p, spent)
    restore_gc = tune_gc()
    t = time.perf_counter()
    p.ingest_lines(lines, batch_size=batch)
    dt = time.perf_counter() - t
    restore_gc()
    store.close()
    if stages is not None:
        stages.update({k: round(v * 1e6 / len(lines), 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])})
        stages["other"] = round(dt * 1e6 / len(lines) - sum(v for k, v in stages.items() if k not in _NESTED), 1)
    return len(lines) / dt


#: stages timed inside another timed stage (not added to the sum)
_NESTED = {"store: observations", "store: events read back for observations", "store: alert chains read back",
           "risk engine", "store: alerts and outbox"}


def _time_stages(p: Pipeline, spent: dict[str, float]) -> None:
    """Wrap the pipeline's stages (on this instance and module) to add their wall time to ``spent``."""
    import kizashi.engine.pipeline as pipeline_module

    def timed(name, f):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    for name, obj, attr in (
        ("validate (JSON + event model)", pipeline_module, "parse_event_line"),
        ("rules (bundled pack)", pipeline_module, "admit_batch"),
        ("store: events", p.store, "add_events"),
        ("store: mark evaluated", p.store, "mark_evaluated"),
        ("results -> observations, risk, alerts", p, "_store_results"),
        ("store: observations", p.store, "add_observations"),
        ("store: events read back for observations", p.store, "get_events"),
        ("store: alert chains read back", p.store, "get_event_summaries"),
        ("store: alerts and outbox", p.store, "add_alerts"),
    ):
        setattr(obj, attr, timed(name, getattr(obj, attr)))
    if p.risk is not None:
        p.risk.push = timed("risk engine", p.risk.push)


@contextmanager
def postgresql_url():
    """``KIZASHI_TEST_PG_URL``, else a throwaway local cluster: the tests' fixture, reused as is."""
    if os.environ.get("KIZASHI_TEST_PG_URL"):
        yield os.environ["KIZASHI_TEST_PG_URL"]
        return
    from kizashi.scenarios.postgres import throwaway_postgres

    with throwaway_postgres() as url:
        yield url


def baseline_sqlite(path: Path, events, batch: int) -> float:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE e (id TEXT PRIMARY KEY, body TEXT)")
    rows = [(e.id, e.to_json()) for e in events]
    t = time.perf_counter()
    for i in range(0, len(rows), batch):
        with con:
            con.executemany("INSERT INTO e VALUES (?, ?)", rows[i:i + batch])
    dt = time.perf_counter() - t
    con.close()
    return len(events) / dt


def fresh_pg(base: str):
    import uuid

    from sqlalchemy import create_engine, text

    schema = "bench_" + uuid.uuid4().hex[:8]
    eng = create_engine(base)
    with eng.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    return base + ("&" if "?" in base else "?") + f"options=-csearch_path%3D{schema}", eng, schema


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = ap.parse_args()
    events = synthetic(args.n)
    lines = [e.to_json() for e in events]
    out = {"events": args.n, "batch": args.batch, "results": {}}
    with tempfile.TemporaryDirectory() as d:
        out["results"]["sqlite_raw_executemany_baseline"] = round(baseline_sqlite(Path(d) / "raw.db", events, args.batch))
        out["results"]["sqlite_store"] = round(run_store(f"sqlite:///{d}/s.db", events, args.batch, False))
        out["results"]["sqlite_store_plus_rules"] = round(run_store(f"sqlite:///{d}/p.db", events, args.batch, True))
        out["results"]["sqlite_ingest_lines"] = round(run_lines(f"sqlite:///{d}/l.db", lines, args.batch))
        out["sqlite_ingest_stages_us_per_event"] = stages = {}
        run_lines(f"sqlite:///{d}/t.db", lines, args.batch, stages)  # a second run, timed stage by stage
    if not args.no_pg:
        from sqlalchemy import text

        with postgresql_url() as pg:
            for label in ("postgresql_store", "postgresql_store_plus_rules", "postgresql_ingest_lines",
                          "postgresql_ingest_stages"):
                url, eng, schema = fresh_pg(pg)
                if label.endswith("stages"):
                    out["postgresql_ingest_stages_us_per_event"] = stages = {}
                    run_lines(url, lines, args.batch, stages)
                elif label.endswith("lines"):
                    out["results"][label] = round(run_lines(url, lines, args.batch))
                else:
                    out["results"][label] = round(run_store(url, events, args.batch, label.endswith("rules")))
                with eng.begin() as c:
                    c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
                eng.dispose()
    r = out["results"]
    out["ratio_store_vs_raw_sqlite"] = round(r["sqlite_store"] / r["sqlite_raw_executemany_baseline"], 3)
    out["unit"] = "events per second"
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
