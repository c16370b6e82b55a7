"""Idempotent writes by the database: several real ``kizashi ingest`` processes on one store (SQLite
file and PostgreSQL) with overlapping event ids, starting together on a store that does not exist
yet, store every event exactly once with a unique ``seq``, and quarantine every bad line once —
including NUL bytes (stored) and lone UTF-16 surrogates (quarantined) in string fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from kizashi.engine.store import Store, events_table
from sqlalchemy import create_engine, func, select, text

KIZASHI = [sys.executable, "-m", "kizashi.cli.main"]
T0 = datetime(2026, 10, 1, tzinfo=UTC)
PROCESSES, PER_PROCESS, STRIDE = 4, 1500, 500


def event_line(i: int) -> str:
    account = f"acct-{i % 97}" + ("\x00nul" if i % 50 == 0 else "")  # NUL: valid data, stored
    return json.dumps({
        "id": f"c-{i}", "time": (T0 + timedelta(seconds=10 * i)).isoformat(),
        "detector": {"id": "kizashi.prada", "name": "prada"}, "stage": "precursor", "attack": "extraction",
        "atlas": {"techniques": ["AML.T0024.002"]}, "subject": {"account": account, "session": "s\u2028x"},
        "target": {"model": "digits"}, "score": 1.5})


def bad_lines(k: int) -> list[str]:
    surrogate = event_line(10_000 + k).replace('"digits"', '"\\ud800digits"')  # lone surrogate: rejected
    return [surrogate, '{"id": "broken-' + str(k) + '", ', json.dumps({"id": f"later-{k}", "stage": "later"})]


def run_concurrently(tmp_path, url: str) -> list[dict]:
    procs = []
    for k in range(PROCESSES):
        f = tmp_path / f"part-{k}.jsonl"
        lines = [event_line(i) for i in range(k * STRIDE, k * STRIDE + PER_PROCESS)]
        lines[PER_PROCESS // 2:PER_PROCESS // 2] = bad_lines(k)
        f.write_text("\n".join(lines) + "\n", encoding="utf-8")
        procs.append(subprocess.Popen(KIZASHI + ["ingest", str(f), "--db", url, "--batch-size", "100"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr
        out.append(json.loads(stdout))
    return out


def check_exactly_once(store: Store, summaries: list[dict]) -> None:
    union = (PROCESSES - 1) * STRIDE + PER_PROCESS
    assert store.count_events() == union
    assert sum(s["stored"] for s in summaries) == union
    assert sum(s["duplicates"] for s in summaries) == PROCESSES * PER_PROCESS - union
    assert sum(s["quarantined"] for s in summaries) == store.count_quarantine() == 3 * PROCESSES
    with store.engine.connect() as c:
        seqs = c.execute(select(func.count(func.distinct(events_table.c.seq)), func.count())).one()
    assert seqs[0] == seqs[1] == union  # unique ingestion order
    e = store.get_event("c-50")
    assert e.subject.account == "acct-50\x00nul" and e.subject.session == "s\u2028x"
    reasons = " ".join(q["reason"] for q in store.list_quarantine(limit=100))
    assert "surrogate" in reasons.lower() and "not valid JSON" in reasons and "stage" in reasons


def test_concurrent_ingest_processes_on_one_sqlite_file_store_each_event_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    summaries = run_concurrently(tmp_path, url)
    check_exactly_once(Store(url), summaries)


@pytest.mark.postgres
def test_concurrent_ingest_processes_on_postgresql_store_each_event_once(tmp_path, postgresql_url):
    schema = "c" + uuid.uuid4().hex[:10]
    eng = create_engine(postgresql_url)
    with eng.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    url = postgresql_url + ("&" if "?" in postgresql_url else "?") + f"options=-csearch_path%3D{schema}"
    try:
        summaries = run_concurrently(tmp_path, url)
        store = Store(url)
        check_exactly_once(store, summaries)
        store.close()
    finally:
        with eng.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        eng.dispose()


def test_stores_opened_at_once_create_the_schema_once(tmp_path):
    """Schema creation is itself race-free: eight processes open one new SQLite file together."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    code = f"from kizashi.engine.store import Store; s = Store({url!r}); print(s.schema_version())"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ}) for _ in range(8)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in results]
    with Store(url).engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM kizashi_schema")).scalar() == 1
