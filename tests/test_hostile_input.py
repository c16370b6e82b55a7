"""Issue 14's rows, one regression test each: hostile event fields and careless operators neither
crash kizashi, nor lose valid records, nor blind the rules (serve-side rows 4-7 are the sensor's)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest
from helpers_events import campaign, ev
from kizashi.connectors.files import FileSink
from kizashi.connectors.http_ingest import IngestApp, split_records
from kizashi.connectors.outbox import deliver
from kizashi.connectors.splunk_hec import HecSink
from kizashi.connectors.syslog import CefFormatter
from kizashi.connectors.webhook import REPLAY_WINDOW_SECONDS, sign, verify_signature
from kizashi.engine.pipeline import Pipeline, TimeBounds
from kizashi.engine.store import Store, events_table
from sqlalchemy import insert

KIZASHI = [sys.executable, "-m", "kizashi.cli.main"]
CHAIN = "kizashi_campaign_extraction_then_evasion"
YEARS_TO_2099 = int((datetime(2099, 1, 1, tzinfo=UTC) - datetime(2026, 11, 28, 1, tzinfo=UTC)).total_seconds() // 60)


def run(*args, input=None):
    return subprocess.run(KIZASHI + list(args), capture_output=True, text=True, input=input, timeout=300)


def chains(alerts):
    return [a for a in alerts if a.rule.name == CHAIN]


def old_campaign(prefix, account, days_back):
    """The extraction-then-evasion campaign, ``days_back`` days before helpers_events.T0."""
    m = -days_back * 24 * 60
    return [ev(prefix + "x1", "symptom", "extraction", ["AML.T0024.002", "AML.T0040"], account=account, minutes=m),
            ev(prefix + "x2", "symptom", "extraction", ["AML.T0024.002"], account=account, minutes=m + 5),
            ev(prefix + "v1", "symptom", "evasion", ["AML.T0015"], account=account, minutes=m + 60,
               detector="feature_squeezing")]


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'k.db'}")
    yield s
    s.close()


# -- row 1: one far-future event -----------------------------------------------------------------
def test_far_future_event_is_quarantined_and_cannot_blind_correlations(store):
    pipe = Pipeline(store)
    evil = ev("evil-2099", "precursor", "evasion", ["AML.T0043.001"], account="mallory", minutes=YEARS_TO_2099)
    out = pipe.ingest([evil])
    assert (out.stored, out.quarantined) == (0, 1)
    (q,) = store.list_quarantine()
    assert "ahead of this host's clock" in q["reason"] and "evil-2099" in q["raw"]
    assert chains(pipe.ingest(campaign("a-", "acct-a")).alerts)  # same process still correlates
    assert chains(Pipeline(store).ingest(campaign("b-", "acct-b")).alerts)  # and after a restart


def test_far_future_event_stored_before_time_bounds_does_not_blind_recovery(store):
    store.add_events([ev("old-2099", "precursor", "evasion", ["AML.T0043.001"], minutes=YEARS_TO_2099)],
                     evaluated=True)  # a store written by an older kizashi
    pipe = Pipeline(store)
    assert chains(pipe.ingest(campaign("c-", "acct-c")).alerts)


def test_time_floor_and_skew_are_configurable():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    bounds = TimeBounds(max_skew=timedelta(hours=1), floor=datetime(2029, 1, 1, tzinfo=UTC), clock=lambda: now)
    ceiling = bounds.ceiling()
    assert bounds.reject_reason(now + timedelta(minutes=59), ceiling) is None
    assert "ahead" in bounds.reject_reason(now + timedelta(minutes=61), ceiling)
    assert "before the floor" in bounds.reject_reason(datetime(2028, 12, 31, tzinfo=UTC), ceiling)


# -- row 2: records that validate but cannot be stored ---------------------------------------------
def test_deep_evidence_and_overflowing_time_are_quarantined_not_fatal(store):
    deep: object = 1
    for _ in range(256):
        deep = {"a": deep}
    base = json.loads(ev("tmpl", "symptom", "evasion", ["AML.T0015"]).to_json())
    lines = [json.dumps({**base, "id": "deep", "evidence": {"x": deep}}),
             json.dumps({**base, "id": "overflow", "time": "9999-12-31T23:00:00-05:00"}),
             *(e.to_json() for e in campaign("d-", "acct-d"))]
    out = Pipeline(store).ingest_lines(lines, source="hostile.jsonl")
    assert (out.stored, out.quarantined) == (3, 2)
    reasons = " ".join(q["reason"] for q in store.list_quarantine())
    assert "nested deeper" in reasons and "outside the supported range" in reasons


def test_http_request_with_unstorable_records_keeps_its_valid_ones(store):
    pipe = Pipeline(store)
    server = IngestApp(lambda evs: pipe.ingest(evs).summary(),
                       lambda rejects: store.quarantine_many(rejects, source="http"))
    base = json.loads(ev("tmpl", "symptom", "evasion", ["AML.T0015"]).to_json())
    body = "\n".join([json.dumps({**base, "id": "h-overflow", "time": "9999-12-31T23:00:00-05:00"}),
                      "[" * 50_000, *(e.to_json() for e in campaign("h-", "acct-h"))]).encode()
    code, summary = server.process(body, "application/x-ndjson")
    assert code == 207 and summary["stored"] == 3 and summary["rejected_count"] == 2
    assert store.count_quarantine() == 2


# -- row 8: markup and terminal escapes in an account id -------------------------------------------
def test_alerts_table_shows_markup_and_escapes_as_inert_text(tmp_path):
    db = f"sqlite:///{tmp_path / 'k.db'}"
    hostile = "[/x]\x1b[2J\x07[link=u]s[/link]"
    s = Store(db)
    Pipeline(s).ingest(campaign("m-", hostile))
    s.close()
    r = run("alerts", "list", "--db", db)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "account.id=[/x]\\x1b[2J\\x07[link=u]s[/link]" in r.stdout


# -- row 9: demo --out . ---------------------------------------------------------------------------
def test_demo_out_dot_keeps_the_default_store(tmp_path):
    from kizashi.cli.demo_run import DEMO_DB_FILE, remove_demo_store

    (tmp_path / "kizashi.db").write_bytes(b"the operator's store")
    (tmp_path / DEMO_DB_FILE).write_bytes(b"last demo")
    remove_demo_store(tmp_path)
    assert (tmp_path / "kizashi.db").read_bytes() == b"the operator's store"
    assert not (tmp_path / DEMO_DB_FILE).exists() and DEMO_DB_FILE != "kizashi.db"


# -- row 10: one request of 20k invalid records ----------------------------------------------------
def test_20k_invalid_records_quarantined_in_one_batch_with_a_bounded_answer(store):
    calls = []

    def quarantine(rejects):
        calls.append(len(rejects))
        store.quarantine_many(rejects, source="http")

    server = IngestApp(lambda evs: {}, quarantine, max_records=20_000)  # the per-request cap is not the point here
    body = "\n".join(json.dumps({"id": f"bad-{i}", "stage": "later"}) for i in range(20_000)).encode()
    code, summary = server.process(body, "application/x-ndjson")
    assert code == 422 and summary["rejected_count"] == 20_000
    assert calls == [20_000] and store.count_quarantine() == 20_000
    assert len(json.dumps(summary)) < 50_000


# -- row 11: backfill and a crash before its alerts were stored -------------------------------------
def test_backfill_older_than_open_windows_is_evaluated(store):
    pipe = Pipeline(store)
    pipe.ingest([ev("recent", "precursor", "evasion", ["AML.T0043.001"], account="z", minutes=60 * 24)])
    out = pipe.ingest(old_campaign("bf-", "acct-bf", days_back=30))
    assert [a.event_ids[-1] for a in chains(out.alerts)] == ["bf-v1"]


def test_backfill_alerts_survive_a_crash_between_events_and_alerts(store):
    Pipeline(store).ingest([ev("recent", "precursor", "evasion", ["AML.T0043.001"], account="z", minutes=60 * 24)])
    store.add_events(old_campaign("cr-", "acct-cr", days_back=30))  # stored; the process died here
    recovered = Pipeline(store).recovered_alerts
    assert [a.event_ids[-1] for a in chains(recovered)] == ["cr-v1"]
    assert Pipeline(store).recovered_alerts == []  # evaluated once, not again


# -- row 12: a sink answering 200 with a non-JSON body -----------------------------------------------
def test_sink_answering_200_with_html_is_retried_and_later_sinks_still_deliver(store, tmp_path):
    class Html(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b"<html>proxy says hi</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Html)
    Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        Pipeline(store, sinks=["hec", "file"]).ingest(campaign("s-", "acct-s"))
        hec = HecSink(f"http://127.0.0.1:{httpd.server_address[1]}", token="t", ack=True, name="hec")
        report = deliver(store, [hec, FileSink(tmp_path / "alerts.jsonl", name="file")])
    finally:
        httpd.shutdown()
        httpd.server_close()
    n = store.count_alerts()
    assert report.failed == {"hec": n} and "not a JSON object" in report.errors["hec"]
    assert report.delivered == {"file": n}
    assert store.pending("hec") == []  # backing off, not retried at once
    assert store.pending("hec", now=datetime.now(UTC) + timedelta(days=1))


# -- row 13: a CSV field over 128 KiB ------------------------------------------------------------------
def test_csv_row_with_huge_field_is_quarantined_alone(tmp_path):
    from helpers_mapping import MAPPING

    (tmp_path / "map.yaml").write_text(MAPPING)
    (tmp_path / "alarms.csv").write_text(
        "request_id,ts,user.name,client_ip,model,adv_score,cutoff\n"
        "a1,1795825800000,bob,10.0.0.2,digits,0.91,0.5\n"
        f"a2,1795825860000,{'x' * 200_000},10.0.0.2,digits,0.9,0.5\n"
        "a4,1795825980000,dave,10.0.0.4,digits,0.77,0.5\n")
    db = f"sqlite:///{tmp_path / 'a.db'}"
    r = run("ingest", str(tmp_path / "alarms.csv"), "--mapping", str(tmp_path / "map.yaml"), "--format", "csv",
            "--db", db)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["stored"] == 2 and json.loads(r.stdout)["quarantined"] == 1
    assert "CSV cell is longer than" in Store(db).list_quarantine()[0]["reason"]


# -- row 14: rerunning an ingest --------------------------------------------------------------------------
def test_rerun_does_not_duplicate_quarantine_rows(store):
    lines = ['{"broken": ', json.dumps({"id": "x", "stage": "later"}), campaign()[0].to_json()]
    Pipeline(store).ingest_lines(lines, source="f.jsonl")
    Pipeline(store).ingest_lines(lines, source="f.jsonl")
    assert store.count_quarantine() == 2 and store.count_events() == 1


# -- row 15: U+2028 inside a JSON string ------------------------------------------------------------------
def test_u2028_in_ndjson_is_one_record_and_never_reaches_syslog_lines(store):
    e = ev("ls\u2028id", "symptom", "extraction", ["AML.T0024.002"], account="line\u2028sep\u2029x")
    body = (e.to_json() + "\n" + ev("plain", "symptom", "evasion", ["AML.T0015"]).to_json()).encode()
    assert body.count("\u2028".encode()) == 2  # pydantic writes U+2028 raw
    records = split_records(body, "application/x-ndjson")
    assert [err for _, _, err in records] == [None, None]
    out = Pipeline(store).ingest_lines(body.decode().split("\n"))
    assert (out.stored, out.quarantined) == (2, 0)
    alerts = Pipeline(store).ingest(campaign("u-", "acct\u2028u")).alerts
    text = CefFormatter().render(alerts, store.get_events(i for a in alerts for i in a.event_ids))
    assert "\u2028" not in text and "\u2029" not in text and text.count("\n") == len(alerts)


# -- row 16: a stored event dated 0001-01-01 --------------------------------------------------------------
def test_store_holding_year_one_event_still_starts(store):
    e = ev("year-one", "precursor", "evasion", ["AML.T0043.001"])
    with store.engine.begin() as c:  # as an older kizashi could store it
        c.execute(insert(events_table).values(
            id=e.id, time=datetime(1, 1, 1, tzinfo=UTC), stage=e.stage, attack=e.attack, detector="prada",
            account="a", model="m", score=1.0, body=e.to_json().replace("2026-11-28T01:00:00Z", "0001-01-01T00:00:00Z"),
            ingested_at=datetime.now(UTC), seq=1))
    assert store.latest_event_time().year == 1
    assert chains(Pipeline(store).ingest(campaign("y-", "acct-y")).alerts)


# -- row 18: settings that must be refused; the webhook's replay window ---------------------------------
@pytest.mark.parametrize("args", [["alerts", "list", "--format", "xml"], ["ingest", "-", "--format", "xml"]],
                         ids=["alerts-list", "ingest"])
def test_unknown_format_is_refused(args, tmp_path):
    r = run(*args, "--db", f"sqlite:///{tmp_path / 'k.db'}", input="")
    assert r.returncode == 2 and r.stderr.startswith("error:") and "xml" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_webhook_signature_covers_a_timestamp_and_expires():
    body = b'{"alerts": []}'
    now = 1_800_000_000
    header = sign("s3cr3t", body, now)
    assert verify_signature("s3cr3t", body, header, now=now + 10)
    assert not verify_signature("s3cr3t", body, header, now=now + REPLAY_WINDOW_SECONDS + 1)  # replayed later
    forged = header.replace(f"t={now}", f"t={now + 60}")  # timestamp swapped to pass the window
    assert not verify_signature("s3cr3t", body, forged, now=now + 60)
    assert not verify_signature("s3cr3t", body + b" ", header, now=now)
    assert not verify_signature("other", body, header, now=now)


# -- row 3 on stores written before: repeated seq values are renumbered, then unique --------------------
V2_DDL = [
    "CREATE TABLE kizashi_schema (version INTEGER PRIMARY KEY, applied_at DATETIME NOT NULL)",
    "CREATE TABLE events (id VARCHAR(200) PRIMARY KEY, time DATETIME NOT NULL, stage VARCHAR(16) NOT NULL, "
    "attack VARCHAR(16) NOT NULL, detector VARCHAR(200) NOT NULL, account VARCHAR(200), model VARCHAR(200), "
    "score FLOAT NOT NULL, body TEXT NOT NULL, ingested_at DATETIME NOT NULL, seq INTEGER NOT NULL)",
    "CREATE INDEX ix_events_seq ON events (seq)",
    "CREATE TABLE quarantine (id INTEGER PRIMARY KEY, time DATETIME NOT NULL, source VARCHAR(1024) NOT NULL, "
    "reason TEXT NOT NULL, raw TEXT NOT NULL)",
    "INSERT INTO kizashi_schema VALUES (2, '2026-11-01 00:00:00')",
]


def test_v2_store_with_repeated_seq_migrates_to_unique_seq(tmp_path):
    import sqlite3

    path = tmp_path / "v2.db"
    con = sqlite3.connect(path)
    for stmt in V2_DDL:
        con.execute(stmt)
    for i, e in enumerate(campaign("v2-", "acct-v2")):
        con.execute("INSERT INTO events VALUES (?, ?, ?, ?, 'prada', 'acct-v2', 'digits', 2.0, ?, ?, ?)",
                    (e.id, e.time.isoformat(sep=" "), e.stage, e.attack, e.to_json(), e.time.isoformat(sep=" "),
                     1 + i // 2))  # seq 1, 1, 2: repeated by the old check-then-insert race
    con.commit()
    con.close()
    s = Store(f"sqlite:///{path}")
    assert s.schema_version() == 5  # 4: alerts.group_key (issue 18); 5: unevaluated_events (issue 17)
    assert [e.id for e in s.iter_events(order="seq")] == ["v2-x1", "v2-x2", "v2-v1"]
    assert s.unevaluated_span() is None  # rows of an older store count as evaluated
    assert s.add_events(campaign("v3-", "acct-v3")).stored == 3
    s.quarantine("x", "why")
    s.quarantine("x", "why")
    assert s.count_quarantine() == 1
