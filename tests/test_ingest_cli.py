"""`kizashi ingest` / `serve` / `alerts` / `export` end to end, including a kill -9 mid-file."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing

import pytest
from helpers_events import ev
from kizashi.engine.store import Store

KIZASHI = [sys.executable, "-m", "kizashi.cli.main"]


#: minutes: the stream lies in the past of the host clock (later events are refused as clock skew)
BACK = -40 * 24 * 60


def stream(n_benign_accounts=300, per_account=20):
    """Many benign-account probing alarms that never lead anywhere, plus two campaigns, time ordered."""
    out = []
    for a in range(n_benign_accounts):
        for j in range(per_account):
            out.append(ev(f"b{a}-{j}", "precursor", "evasion", ["AML.T0043.001"], account=f"benign-{a}",
                          minutes=BACK + a * per_account + j, detector="stateful_knn"))
    for i, acct in enumerate(["mallory", "trudy"]):
        m = BACK + 1000 * (i + 1)
        out += [ev(f"{acct}-x", "symptom", "extraction", ["AML.T0024.002"], account=acct, minutes=m),
                ev(f"{acct}-v", "symptom", "evasion", ["AML.T0015"], account=acct, minutes=m + 30,
                   detector="magnet")]
    out.sort(key=lambda e: e.time)
    return out


def write_jsonl(path, events, extra_lines=()):
    with open(path, "w", encoding="utf-8") as fh:
        for e in events:
            fh.write(e.to_json() + "\n")
        for line in extra_lines:
            fh.write(line + "\n")


def run(*args, input=None, env=None):
    return subprocess.run(KIZASHI + list(args), capture_output=True, text=True, input=input, timeout=300,
                          env={**os.environ, **(env or {})})


def correlated(db):
    return sorted((a.rule.name, tuple(a.event_ids)) for a in Store(db).list_alerts() if a.rule.type == "correlation")


def test_ingest_file_then_alerts_and_exports(tmp_path):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    f = tmp_path / "e.jsonl"
    write_jsonl(f, stream(20, 5), extra_lines=['{"oops": ', '{"id": "x", "stage": "middle"}'])
    r = run("ingest", str(f), "--db", db)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["stored"] == 104 and s["quarantined"] == 2 and s["alerts"] > 0
    assert [n for n, _ in correlated(db)] == ["kizashi_campaign_extraction_then_evasion"] * 2
    r = run("ingest", "-", "--db", db, input=f.read_text())
    assert json.loads(r.stdout)["duplicates"] == 104
    r = run("alerts", "list", "--db", db, "--format", "json", "--correlated")
    assert len(r.stdout.splitlines()) == 2
    aid = json.loads(r.stdout.splitlines()[0])["id"]
    shown = json.loads(run("alerts", "show", aid, "--db", db).stdout)
    assert [e["id"] for e in shown["events"]] == shown["event_ids"]
    stix = run("export", "stix", "--db", db)
    assert stix.returncode == 0 and json.loads(stix.stdout)["type"] == "bundle"
    nav = json.loads(run("export", "navigator", "--db", db).stdout)
    assert nav["domain"] == "atlas-atlas"
    bad = run("export", "pdf", "--db", db)
    assert bad.returncode == 2 and "format must be one of" in bad.stderr


@pytest.mark.slow
def test_kill_9_mid_file_then_restart_loses_nothing(tmp_path):
    events = stream(400, 25)  # 10,004 events
    f = tmp_path / "big.jsonl"
    write_jsonl(f, events)
    ref_db = f"sqlite:///{tmp_path / 'ref.db'}"
    assert run("ingest", str(f), "--db", ref_db, "--batch-size", "200").returncode == 0
    expected = correlated(ref_db)
    # the two campaigns; and each account with 25 probing alarms in 25 minutes crosses its risk
    # threshold (bundled defaults): one risk alert per account, recovered like the others below
    assert len([n for n, _ in expected if n.startswith("kizashi_campaign_")]) == 2
    assert len([n for n, _ in expected if n == "kizashi_risk_account_score"]) == 400

    db_path = tmp_path / "k.db"
    db = f"sqlite:///{db_path}"
    proc = subprocess.Popen(KIZASHI + ["ingest", str(f), "--db", db, "--batch-size", "200"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline:
        time.sleep(0.02)
        if proc.poll() is not None:
            break
        if db_path.exists():
            try:  # read-only: opening a Store would migrate under the write lock and wait on the ingest
                with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=0.1)) as con:
                    stored = con.execute("SELECT count(*) FROM events").fetchone()[0]
            except sqlite3.Error:  # schema not created yet, or the writer holds the lock
                continue
            if stored > 0:  # the first batch is in: kill it mid-file
                break
    assert proc.poll() is None, "ingest finished before it could be killed; make the file larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = Store(db).count_events()
    assert 0 < partial < len(events)
    r = run("ingest", str(f), "--db", db, "--batch-size", "200")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["duplicates"] == partial and s["stored"] == len(events) - partial
    assert Store(db).count_events() == len(events)
    assert correlated(db) == expected  # no alert lost, none twice


def test_http_serve_auth_limits_and_partial_batches(tmp_path):
    import socket

    with socket.socket() as sck:
        sck.bind(("127.0.0.1", 0))
        port = sck.getsockname()[1]
    db = f"sqlite:///{tmp_path / 'h.db'}"
    proc = subprocess.Popen(KIZASHI + ["serve", "--db", db, "--port", str(port), "--max-body", "200000"],
                            env={**os.environ, "KIZASHI_TOKEN": "s3cret"}, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)

        def post(body, token="s3cret", ctype="application/json"):
            req = urllib.request.Request(url + "/events", data=body.encode(), method="POST",
                                         headers={"Content-Type": ctype, **({"Authorization": f"Bearer {token}"} if token else {})})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read())

        evs = stream(1, 2)
        code, body = post(evs[0].to_json(), token=None)
        assert code == 401 and "bearer token" in body["error"]
        code, body = post(evs[0].to_json(), token="wrong")
        assert code == 401
        code, body = post(evs[0].to_json(), ctype="text/html")
        assert code == 415 and "Content-Type" in body["error"]
        code, body = post("x" * 300_000)
        assert code == 413
        batch = "\n".join([evs[0].to_json(), '{"broken', json.dumps({"id": "z", "stage": "no"}), evs[1].to_json()])
        code, body = post(batch, ctype="application/x-ndjson")
        assert code == 207 and body["stored"] == 2 and [r["index"] for r in body["rejected"]] == [1, 2]
        code, body = post(json.dumps([e.to_dict() for e in evs[2:]]))
        assert code == 200 and body["stored"] == len(evs) - 2
        code, body = post('{"nope": 1}')
        assert code == 422 and "detector" in body["rejected"][0]["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    s = Store(db)
    assert s.count_events() == len(evs) and s.count_quarantine() == 3
