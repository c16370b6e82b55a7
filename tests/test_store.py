"""Event store and ingest pipeline on real SQLite and real PostgreSQL (a throwaway server, tests/conftest.py)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from helpers_events import campaign, ev
from kizashi.engine.events import DetectionEvent
from kizashi.engine.pipeline import Pipeline
from kizashi.engine.store import SCHEMA_VERSION, Store
from sqlalchemy import inspect, text


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'k.db'}")
    else:
        base = request.getfixturevalue("postgresql_url")  # throwaway server (conftest.py)
        schema = "t" + uuid.uuid4().hex[:10]
        from sqlalchemy import create_engine
        eng = create_engine(base)
        with eng.begin() as c:
            c.execute(text(f"CREATE SCHEMA {schema}"))
        s = Store(_in_schema(base, schema))
        request.addfinalizer(lambda: (s.close(), _drop(eng, schema)))
    yield s
    s.close()


def _drop(eng, schema):
    with eng.begin() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    eng.dispose()


def test_ingest_idempotent_on_event_id(store):
    r1 = store.add_events(campaign())
    r2 = store.add_events(campaign() + [ev("new", "precursor", "evasion", ["AML.T0043.001"])])
    assert (r1.stored, r1.duplicates) == (3, 0)
    assert (r2.stored, r2.duplicates) == (1, 3)
    assert store.count_events() == 4
    assert store.get_event("v1") == campaign()[2]
    times = [e.time for e in store.iter_events()]
    assert times == sorted(times)


def test_pipeline_raises_correlated_alert_once(store):
    p = Pipeline(store, sinks=["stix-file"])
    out = p.ingest(campaign())
    corr = [a for a in out.alerts if a.rule.type == "correlation"]
    assert [a.rule.name for a in corr] == ["kizashi_campaign_extraction_then_evasion"]
    chain = corr[0]
    assert chain.event_ids[0] in {"x1", "x2"} and chain.event_ids[-1] == "v1"
    assert {"AML.T0024.002", "AML.T0043.002", "AML.T0015"} <= set(chain.atlas.techniques)
    assert store.get_alert(chain.id) == chain
    # replaying the same input raises nothing new
    again = Pipeline(store, sinks=["stix-file"]).ingest(campaign())
    assert again.alerts == [] and again.duplicates == 3
    assert store.outbox_status()["stix-file"]["pending"] == store.count_alerts()


def test_restart_recovers_alert_not_yet_stored(store):
    # events were committed, then the process died before evaluating them
    store.add_events(campaign(prefix="r-", account="acct-r"))
    assert store.count_alerts() == 0
    p = Pipeline(store)  # recovery replays the last max-timespan window
    names = {a.rule.name for a in p.recovered_alerts}
    assert "kizashi_campaign_extraction_then_evasion" in names
    n = store.count_alerts()
    assert Pipeline(store).recovered_alerts == [] and store.count_alerts() == n


def test_state_survives_restart_between_precursor_and_symptom(store):
    evs = campaign(prefix="s-", account="acct-s")
    Pipeline(store).ingest(evs[:2])  # extraction only: no correlation yet
    assert not [a for a in store.list_alerts() if a.rule.type == "correlation"]
    out = Pipeline(store).ingest(evs[2:])  # new process: the symptom arrives
    assert [a.rule.name for a in out.alerts if a.rule.type == "correlation"] == [
        "kizashi_campaign_extraction_then_evasion"]


def test_quarantine_keeps_bad_lines_and_valid_ones(store):
    good = [e.to_json() for e in campaign(prefix="q-", account="acct-q")]
    lines = [good[0], '{"id": "broken", ', json.dumps({"id": "bad-stage", "stage": "later"}), good[1],
             "\x00\x1b[31m" + "A" * 100_000, good[2]]
    out = Pipeline(store).ingest_lines(lines, source="test.jsonl")
    assert (out.stored, out.quarantined) == (3, 3)
    q = store.list_quarantine()
    assert [r["source"] for r in q] == ["test.jsonl"] * 3
    assert "line 2" in q[0]["reason"] and "not valid JSON" in q[0]["reason"]
    assert "stage" in q[1]["reason"]
    assert len(q[2]["raw"]) < 70_000


def test_outbox_delivery_state(store):
    Pipeline(store, sinks=["a", "b"]).ingest(campaign(prefix="o-", account="acct-o"))
    items = store.pending("a")
    assert items and all(i.sink == "a" for i in items)
    store.mark_failed([items[0].id], "receiver down", retry_in=timedelta(hours=1))
    assert items[0].id not in {i.id for i in store.pending("a")}
    store.mark_delivered([i.id for i in items[1:]])
    st = store.outbox_status()
    assert st["a"] == {"pending": 1, "delivered": len(items) - 1}
    assert st["b"]["pending"] == len(items)
    assert store.enqueue([items[0].alert_id], "a") == 0  # already queued for that sink


def test_schema_migration_from_v1(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    s = Store(url)
    with s.engine.begin() as c:
        c.execute(text("DELETE FROM kizashi_schema"))
        c.execute(text("INSERT INTO kizashi_schema VALUES (1, '2026-01-01')"))
        c.execute(text("DROP INDEX IF EXISTS ix_events_account_time"))
    s.close()
    s2 = Store(url)
    assert s2.schema_version() == SCHEMA_VERSION
    with s2.engine.connect() as c:
        idx = {r[1] for r in c.execute(text("PRAGMA index_list('events')"))}
    assert "ix_events_account_time" in idx
    with s2.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 10_000


def test_v4_store_keeps_its_unevaluated_events_after_migration(store):
    """Schema 5 moves the evaluation marker from ``events.evaluated`` to the narrow
    ``unevaluated_events`` table: a schema 4 store's unevaluated events are still found by recovery,
    its evaluated ones are not, and marking them evaluated takes them off (both databases)."""
    evs = [DetectionEvent.parse({"id": f"v4-{i}", "time": f"2026-11-28T00:0{i}:00Z", "detector": {"id": "d", "name": "d"},
                                 "stage": "symptom", "attack": "evasion", "score": 1.0}) for i in range(3)]
    store.add_events(evs, evaluated=True)
    with store.engine.begin() as c:  # as schema 4 left it: the marker a column of events, v4-1 unevaluated
        c.execute(text("DROP TABLE unevaluated_events"))
        c.execute(text("ALTER TABLE events ADD COLUMN evaluated BOOLEAN NOT NULL DEFAULT true"))
        c.execute(text("CREATE INDEX ix_events_unevaluated ON events (evaluated)"))
        c.execute(text("UPDATE events SET evaluated = false WHERE id = 'v4-1'"))
        c.execute(text("DELETE FROM kizashi_schema"))
        c.execute(text("INSERT INTO kizashi_schema VALUES (4, '2026-11-01')"))
    store.migrate()
    assert store.schema_version() == SCHEMA_VERSION == 5
    first, last, ids = store.unevaluated_span()
    assert ids == ["v4-1"] and first == last == evs[1].time
    store.mark_evaluated(ids)
    assert store.unevaluated_span() is None
    assert store.add_events([evs[0].model_copy(update={"id": "v5-0"})]).stored == 1  # the old column fills itself
    assert store.unevaluated_span()[2] == ["v5-0"]
    assert "ix_events_unevaluated" not in {i["name"] for i in inspect(store.engine).get_indexes("events")}


def test_alert_from_event_summaries_equals_alert_from_events(store):
    """An alert's chain is read back as EventSummary objects (no second validation): the alert
    built from them equals the one built from the full events, field for field; a body that does not
    read as a summary comes back as its DetectionEvent."""
    from kizashi.engine.events import Alert, EventSummary, RuleRef

    evs = campaign("s-", "acct\u00e9") + campaign("t-", "acct-t") + [
        ev("nomodel", "precursor", "poisoning", ["AML.T0020"], model=None, minutes=3),
        ev("micro", "symptom", "evasion", ["AML.T0015"], minutes=7).model_copy(
            update={"time": campaign()[0].time.replace(microsecond=123456)})]
    store.add_events(evs)
    ids = [e.id for e in evs]
    summaries, full = store.get_event_summaries(ids), store.get_events(ids)
    assert set(summaries) == set(ids) and all(type(v) is EventSummary for v in summaries.values())

    def alert(events):
        a = Alert.from_events(rule=RuleRef(id="r", type="correlation"), events=events, group={"account.id": "x"})
        return a.model_dump(exclude={"created"})

    assert alert(summaries.values()) == alert(full.values()) == alert(evs)
    for e in evs:
        s = summaries[e.id]
        assert (s.time, s.stage, s.attack, list(s.atlas.techniques), list(s.atlas.tactics), s.subject.account,
                s.target.model) == (e.time, e.stage, e.attack, e.atlas.techniques, e.atlas.tactics, e.subject.account,
                                    e.target.model)
    with store.engine.begin() as c:  # an older or edited row: no "atlas" object in its body
        body = json.loads(c.execute(text("SELECT body FROM events WHERE id = 's-x1'")).scalar())
        del body["atlas"]
        c.execute(text("UPDATE events SET body = :b WHERE id = 's-x1'"), {"b": json.dumps(body)})
    again = store.get_event_summaries(["s-x1"])["s-x1"]
    assert type(again).__name__ == "DetectionEvent" and again.atlas.techniques == []


def test_documented_postgresql_grants_are_enough_to_ingest(request):
    """docs/security.md lists what the PostgreSQL role of ``ingest``/``serve`` needs once a privileged
    role has created the schema. With exactly those grants a pipeline stores events, quarantines,
    raises alerts with outbox rows and marks its events evaluated; without ``DELETE`` on
    ``unevaluated_events`` it cannot mark them (the grant is needed, not decoration)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ProgrammingError

    base = request.getfixturevalue("postgresql_url")
    schema, role, password = "g" + uuid.uuid4().hex[:10], "r" + uuid.uuid4().hex[:10], uuid.uuid4().hex
    admin = create_engine(base)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    Store(_in_schema(base, schema)).close()  # the privileged role creates the tables
    grants = [f"GRANT CONNECT ON DATABASE {admin.url.database} TO {role}",
              f"GRANT USAGE ON SCHEMA {schema} TO {role}",
              f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {schema} TO {role}",
              f"GRANT DELETE ON {schema}.unevaluated_events TO {role}",
              f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"]
    with admin.begin() as c:
        c.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        for grant in grants:
            c.execute(text(grant))
    url = admin.url.set(username=role, password=password).render_as_string(hide_password=False)
    s = Store(_in_schema(url, schema))
    try:
        out = Pipeline(s, sinks=["stix-file"]).ingest_lines(
            [e.to_json() for e in campaign("g-", "acct-g")] + ["not json"])
        assert out.alerts and out.quarantined == 1 and s.unevaluated_span() is None
        assert s.outbox_status()["stix-file"]["pending"] == len(out.alerts)
        with admin.begin() as c:
            c.execute(text(f"REVOKE DELETE ON {schema}.unevaluated_events FROM {role}"))
        with pytest.raises(ProgrammingError, match="permission denied"):
            Pipeline(s).ingest(campaign("h-", "acct-h"))
    finally:
        s.close()
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            c.execute(text(f"DROP OWNED BY {role}"))
            c.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def _in_schema(url: str, schema: str) -> str:
    return url + ("&" if "?" in url else "?") + f"options=-csearch_path%3D{schema}"


def test_sqlite_fast_insert_stores_what_sqlalchemy_stores(tmp_path):
    """The SQLite insert-or-ignore path binds each value with its column type's own processor: the
    rows it stores are byte for byte what SQLAlchemy's insert stores (times with and without a zone,
    missing values, NUL and non-ASCII text), and it reports only the rows it inserted."""
    from datetime import UTC, datetime, timezone

    from kizashi.engine.store import _sqlite_insert_or_ignore, events_table
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    when = [datetime(2026, 11, 30, 1, 2, 3, 456789, tzinfo=UTC), datetime(2026, 1, 1),
            datetime(2026, 6, 1, 12, tzinfo=timezone(timedelta(hours=9)))]
    rows = [{"id": f"e{i}\x00é", "time": when[i % 3], "stage": "symptom", "attack": "evasion",
             "detector": "d", "account": None if i % 3 else "a\u3042", "model": "m", "score": i / 7,
             "body": "{}", "ingested_at": when[(i + 1) % 3], "seq": i + 1} for i in range(9)]

    def dump(store):
        with store.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT * FROM events ORDER BY seq").fetchall()

    fast, slow = Store(f"sqlite:///{tmp_path / 'fast.db'}"), Store(f"sqlite:///{tmp_path / 'slow.db'}")
    with fast.engine.begin() as conn:
        assert sorted(_sqlite_insert_or_ignore(conn, events_table, rows, "id")) == sorted(r["id"] for r in rows)
        assert _sqlite_insert_or_ignore(conn, events_table, rows[:4] + [{**rows[0], "id": "new", "seq": 99}], "id") == ["new"]
    with slow.engine.begin() as conn:
        conn.execute(sqlite_dialect.insert(events_table).on_conflict_do_nothing(),
                     rows + [{**rows[0], "id": "new", "seq": 99}])
    assert dump(fast) == dump(slow)
    fast.close(), slow.close()


def test_a_failed_insert_raises_sqlalchemy_errors_on_both_databases(store):
    """The insert-or-ignore paths write through the driver's cursor; a failure still surfaces as the
    SQLAlchemy error class (here IntegrityError for a NOT NULL column), which callers and the CLI's
    error boundary handle, and nothing of the failed statement is stored."""
    from datetime import UTC, datetime

    from kizashi.engine.store import _insert_or_ignore, events_table
    from sqlalchemy.exc import IntegrityError

    row = {"id": "x", "time": datetime(2026, 11, 30, tzinfo=UTC), "stage": None, "attack": "evasion",
           "detector": "d", "account": None, "model": None, "score": 1.0, "body": "{}",
           "ingested_at": datetime(2026, 11, 30, tzinfo=UTC), "seq": 10**6}
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        _insert_or_ignore(conn, events_table, [row], key="id")
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events WHERE id = 'x'")).scalar() == 0
