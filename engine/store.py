"""The event store (SQLAlchemy 2): events, alerts, alert-event links, a delivery outbox and a
quarantine of rejected input. SQLite file by default (WAL), PostgreSQL by URL
(``postgresql+psycopg://…``).

* Writes are idempotent by the database, not by a prior SELECT: multi-row insert-or-ignore
  (``INSERT ... ON CONFLICT DO NOTHING``) on event id, alert id, alert-event link, outbox
  (alert, sink) and quarantine digest, so any number of ingest/serve processes may share a store.
* ``seq`` (ingestion order) is unique: allocated under SQLite's write lock, from a sequence on
  PostgreSQL. Schema creation and migrations run under a lock too (``BEGIN IMMEDIATE`` on SQLite,
  an advisory transaction lock on PostgreSQL), so processes opening a new store do not race.
* Every alert gets one outbox row per configured sink; delivery state lives there.
* Rejected input is kept verbatim with its reason, so nothing is silently lost.
* Schema versions are recorded in ``kizashi_schema``; :data:`MIGRATIONS` upgrades older stores.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from .events import Alert, DetectionEvent, EventSummary
from .incidents import group_key

SCHEMA_VERSION = 5
DEFAULT_DB_FILE = "kizashi.db"

metadata = MetaData()

schema_table = Table(
    "kizashi_schema", metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

events_table = Table(
    "events", metadata,
    Column("id", String(200), primary_key=True),
    Column("time", DateTime(timezone=True), nullable=False, index=True),
    Column("stage", String(16), nullable=False),
    Column("attack", String(16), nullable=False),
    Column("detector", String(200), nullable=False),
    Column("account", String(200), index=True),
    Column("model", String(200), index=True),
    Column("score", Float, nullable=False),
    Column("body", Text, nullable=False),  # the event as JSON
    Column("ingested_at", DateTime(timezone=True), nullable=False),
    Column("seq", Integer, nullable=False),  # ingestion order, unique (ux_events_seq)
    Index("ux_events_seq", "seq", unique=True),
    # (stores from schema 3 and 4 also hold an unused ``evaluated`` column, true by default)
)

#: events stored but not yet through the rule engine with their alerts stored, by ``events.seq``: a
#: row goes in with its event and out once the event's results are stored; recovery evaluates what a
#: crash left here, however old (backfill). A narrow table of its own, keyed by the ascending seq:
#: marking a batch evaluated deletes small rows instead of rewriting every event row (and on
#: PostgreSQL every index entry of it), and adding them appends to one short index.
unevaluated_table = Table(
    "unevaluated_events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
)

alerts_table = Table(
    "alerts", metadata,
    Column("id", String(200), primary_key=True),
    Column("rule_id", String(1024), nullable=False, index=True),
    Column("level", String(16), nullable=False),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False, index=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=False),
    Column("group_key", Text),  # rule group (kizashi.engine.incidents.group_key): suppression look-up
    Index("ix_alerts_rule_last_seen", "rule_id", "last_seen"),
)

#: rule results that are not alerts (risk observations), stored with their event
observations_table = Table(
    "observations", metadata,
    Column("id", String(200), primary_key=True),  # the rule result's id
    Column("event_id", String(200), nullable=False, index=True),  # the (last) event it is about
    Column("rule_id", String(1024), nullable=False),
    Column("kind", String(16), nullable=False),  # match | correlation
    Column("time", DateTime(timezone=True), nullable=False, index=True),
    Column("risk", Float, nullable=False),
    Column("body", Text, nullable=False),  # JSON: the result, its entities and risk
)

alert_events_table = Table(
    "alert_events", metadata,
    Column("alert_id", String(200), ForeignKey("alerts.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("event_id", String(200), nullable=False, index=True),
)

outbox_table = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(200), ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
    Column("sink", String(200), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_try", DateTime(timezone=True), nullable=False),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
    Index("ux_outbox_alert_sink", "alert_id", "sink", unique=True),
    Index("ix_outbox_pending", "sink", "delivered_at", "next_try"),
)

quarantine_table = Table(
    "quarantine", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("source", String(1024), nullable=False),
    Column("reason", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("digest", String(64)),  # sha256 of (source, reason, raw): a rerun quarantines nothing twice
    Index("ux_quarantine_digest", "digest", unique=True),
)

#: PostgreSQL sequence that allocates ``events.seq`` (SQLite allocates under its write lock)
EVENT_SEQ = "kizashi_events_seq"
#: key of the PostgreSQL advisory lock held while the schema is created or migrated
SCHEMA_LOCK_KEY = 0x6B697A617368  # "kizash"

def _add_column(conn: Connection, table: str, column: str, ddl: str) -> None:
    if column not in {c["name"] for c in inspect(conn).get_columns(table)}:
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")


#: version -> steps upgrading from version-1: SQL (dialect-neutral DDL) or a function of the connection
MIGRATIONS: dict[int, list[str | Callable[[Connection], None]]] = {
    2: ["CREATE INDEX IF NOT EXISTS ix_events_account_time ON events (account, time)"],
    3: [  # unique seq (older stores could repeat it under concurrent ingest), evaluation marker,
          # quarantine digest
        "UPDATE events SET seq = r.n FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY seq, id) AS n FROM events) AS r "
        "WHERE events.id = r.id",
        "DROP INDEX IF EXISTS ix_events_seq",
        "CREATE UNIQUE INDEX IF NOT EXISTS ux_events_seq ON events (seq)",
        lambda conn: _add_column(conn, "events", "evaluated", "BOOLEAN NOT NULL DEFAULT true"),
        "CREATE INDEX IF NOT EXISTS ix_events_unevaluated ON events (evaluated)",
        lambda conn: _add_column(conn, "quarantine", "digest", "VARCHAR(64)"),
        "CREATE UNIQUE INDEX IF NOT EXISTS ux_quarantine_digest ON quarantine (digest)",
    ],
    4: [  # suppression look-up key of an alert (rule group); the observations table is created by create_all
        lambda conn: _add_column(conn, "alerts", "group_key", "TEXT"),
        "CREATE INDEX IF NOT EXISTS ix_alerts_rule_last_seen ON alerts (rule_id, last_seen)",
    ],
    5: [  # the evaluation marker moves to its own table (created by create_all); the old column stays unused
        "INSERT INTO unevaluated_events (seq) SELECT seq FROM events WHERE NOT evaluated",
        "DROP INDEX IF EXISTS ix_events_unevaluated",
    ],
}

MAX_QUARANTINE_RAW = 64 * 1024


def default_db_url() -> str:
    """``$KIZASHI_DB`` or ``sqlite:///kizashi.db`` in the current directory."""
    return os.environ.get("KIZASHI_DB") or f"sqlite:///{DEFAULT_DB_FILE}"


def normalise_url(url: str | None) -> str:
    url = url or default_db_url()
    if "://" not in url:  # a bare path means a SQLite file
        url = f"sqlite:///{url}"
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@dataclass
class IngestResult:
    """What one ingest call did."""

    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    new_events: list[DetectionEvent] = field(default_factory=list)

    def add(self, other: IngestResult) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.new_events.extend(other.new_events)

    def summary(self) -> dict[str, int]:
        return {"stored": self.stored, "duplicates": self.duplicates, "quarantined": self.quarantined}


@dataclass(frozen=True)
class OutboxItem:
    id: int
    alert_id: str
    sink: str
    attempts: int


class StoreUnavailable(ValueError):
    """The store URL is malformed, or the database cannot be opened or reached."""


class Store:
    """A kizashi event store at ``url`` (created and migrated on open)."""

    def __init__(self, url: str | None = None, *, echo: bool = False):
        self.url = normalise_url(url)
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        try:
            self.engine: Engine = create_engine(self.url, **kwargs)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
                event.listen(self.engine, "begin", _sqlite_begin)
            self.migrate()
        except (ArgumentError, OperationalError, ImportError) as exc:  # a bad URL, an unreachable server
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
            raise StoreUnavailable(f"cannot open the store {_redact(self.url)}: {reason}") from exc

    def _write(self) -> Any:
        """A write transaction: ``BEGIN IMMEDIATE`` on SQLite (takes the write lock up front, so
        concurrent writers queue on the busy timeout instead of failing a lock upgrade)."""
        return self.engine.connect().execution_options(sqlite_immediate=True)

    # -- schema ---------------------------------------------------------------------------------
    def migrate(self) -> int:
        """Create missing tables and apply pending migrations, in one transaction under a lock (so
        processes opening one new store at once do not race); returns the schema version."""
        with self._write() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
            fresh = not conn.dialect.has_table(conn, schema_table.name)
            current = None if fresh else conn.execute(select(func.max(schema_table.c.version))).scalar()
            metadata.create_all(conn)  # missing tables only (an existing table is left to MIGRATIONS)
            if current is None:  # fresh store: everything is at the newest version
                conn.execute(insert(schema_table).values(version=SCHEMA_VERSION, applied_at=datetime.now(UTC)))
            else:
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    for step in MIGRATIONS.get(version, []):
                        conn.exec_driver_sql(step) if isinstance(step, str) else step(conn)
                    conn.execute(insert(schema_table).values(version=version, applied_at=datetime.now(UTC)))
            if conn.dialect.name == "postgresql" and conn.execute(
                    text("SELECT to_regclass(:n)"), {"n": EVENT_SEQ}).scalar() is None:
                conn.exec_driver_sql(f"CREATE SEQUENCE {EVENT_SEQ}")
                conn.exec_driver_sql(f"SELECT setval('{EVENT_SEQ}', COALESCE(MAX(seq), 0) + 1, false) FROM events")
        return SCHEMA_VERSION

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(schema_table.c.version))).scalar() or 0)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- events ---------------------------------------------------------------------------------
    def add_events(self, events: Iterable[DetectionEvent], *, evaluated: bool = False) -> IngestResult:
        """Store events with one multi-row insert-or-ignore; an id already stored (or repeated in
        the batch) is counted as a duplicate. An event that cannot be serialised is quarantined."""
        result = IngestResult()
        now = datetime.now(UTC)
        rows, kept = [], []
        seen: set[str] = set()
        for e in events:
            if e.id in seen:
                result.duplicates += 1
                continue
            seen.add(e.id)
            try:
                body = e.to_json()
            except (ValueError, OverflowError, RecursionError) as exc:  # validated, but not storable
                self.quarantine(repr(e)[:MAX_QUARANTINE_RAW], f"event {e.id!r} cannot be stored: {exc}",
                                source="store")
                result.quarantined += 1
                continue
            rows.append({"id": e.id, "time": e.time, "stage": e.stage, "attack": e.attack,
                         "detector": _storable(e.detector.name), "account": _column(e.subject.account),
                         "model": _column(e.target.model),
                         "score": e.score, "body": body, "ingested_at": now})
            kept.append(e)
        if not rows:
            return result
        with self._write() as conn, conn.begin():
            for row, seq in zip(rows, self._allocate_seq(conn, len(rows)), strict=True):
                row["seq"] = seq
            inserted = set(_insert_or_ignore(conn, events_table, rows, key="id"))
            if not evaluated and inserted:
                _insert_or_ignore(conn, unevaluated_table, [{"seq": r["seq"]} for r in rows if r["id"] in inserted])
        result.new_events = [e for e in kept if e.id in inserted]
        result.stored = len(result.new_events)
        result.duplicates += len(kept) - result.stored
        return result

    def _allocate_seq(self, conn: Connection, n: int) -> list[int]:
        """``n`` fresh, unique ``seq`` values: from the sequence on PostgreSQL; on SQLite under the
        write lock this (``BEGIN IMMEDIATE``) transaction already holds."""
        if conn.dialect.name == "postgresql":
            return list(conn.execute(text(f"SELECT nextval('{EVENT_SEQ}') FROM generate_series(1, :n)"),
                                     {"n": n}).scalars())
        top = int(conn.execute(select(func.coalesce(func.max(events_table.c.seq), 0))).scalar() or 0)
        return list(range(top + 1, top + n + 1))

    def mark_evaluated(self, event_ids: Iterable[str]) -> None:
        """Record that these events went through the rule engine and their alerts are stored."""
        ids = list(event_ids)
        with self._write() as conn, conn.begin():
            for i in range(0, len(ids), 500):
                seqs = select(events_table.c.seq).where(events_table.c.id.in_(ids[i:i + 500]))
                conn.execute(delete(unevaluated_table).where(unevaluated_table.c.seq.in_(seqs)))

    def unevaluated_span(self) -> tuple[datetime, datetime, list[str]] | None:
        """(earliest, latest time, ids) of the events stored but never evaluated (a crash between
        storing events and their alerts), or None."""
        q = select(events_table.c.id, events_table.c.time).join(
            unevaluated_table, unevaluated_table.c.seq == events_table.c.seq).order_by(events_table.c.seq)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        if not rows:
            return None
        times = [_utc(t) for _, t in rows]
        return min(times), max(times), [i for i, _ in rows]

    def get_event(self, event_id: str) -> DetectionEvent | None:
        with self.engine.connect() as conn:
            body = conn.execute(select(events_table.c.body).where(events_table.c.id == event_id)).scalar()
        return DetectionEvent.from_stored(body) if body else None

    def get_events(self, ids: Iterable[str]) -> dict[str, DetectionEvent]:
        return {eid: DetectionEvent.from_stored(body) for eid, body in self._bodies(ids)}

    def get_event_summaries(self, ids: Iterable[str]) -> dict[str, EventSummary | DetectionEvent]:
        """What an alert reads of each of these events (:class:`EventSummary`), from the stored
        bodies without validating them again; a body that does not read as one (an older or edited
        row) comes back as its :class:`DetectionEvent`."""
        out: dict[str, EventSummary | DetectionEvent] = {}
        for eid, body in self._bodies(ids):
            try:
                summary = EventSummary(orjson.loads(body))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                summary = None
            out[eid] = summary if summary is not None and summary.id == eid else DetectionEvent.from_stored(body)
        return out

    def _bodies(self, ids: Iterable[str]) -> Iterator[tuple[str, str]]:
        """(id, stored JSON body) of each of these events that is stored, 500 ids per query."""
        ids = list(dict.fromkeys(ids))
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                yield from conn.execute(select(events_table.c.id, events_table.c.body)
                                        .where(events_table.c.id.in_(ids[i:i + 500]))).tuples()

    def iter_events(self, *, since: datetime | None = None, until: datetime | None = None,
                    order: str = "time") -> Iterator[DetectionEvent]:
        """Events by time (or ``order="seq"``: ingestion order), optionally from ``since`` on and up
        to ``until`` (both inclusive)."""
        q = select(events_table.c.body)
        if since is not None:
            q = q.where(events_table.c.time >= _utc(since))
        if until is not None:
            q = q.where(events_table.c.time <= _utc(until))
        q = q.order_by(events_table.c.seq if order == "seq" else events_table.c.time, events_table.c.id)
        with self.engine.connect() as conn:
            for (body,) in conn.execute(q):
                yield DetectionEvent.from_stored(body)

    def count_events(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events_table)).scalar() or 0)

    def latest_event_time(self) -> datetime | None:
        with self.engine.connect() as conn:
            t = conn.execute(select(func.max(events_table.c.time))).scalar()
        return _utc(t) if t is not None else None

    # -- alerts ---------------------------------------------------------------------------------
    def add_alerts(self, alerts: Iterable[Alert], *, sinks: Sequence[str] = ()) -> list[Alert]:
        """Store alerts (insert-or-ignore on id) with their chain links and one outbox row per sink.
        Returns the alerts that were new."""
        now = datetime.now(UTC)
        batch = list({a.id: a for a in alerts}.values())
        if not batch:
            return []
        with self._write() as conn, conn.begin():
            inserted = set(_insert_or_ignore(conn, alerts_table, [
                {"id": a.id, "rule_id": a.rule.id, "level": a.level, "first_seen": a.first_seen,
                 "last_seen": a.last_seen, "created": a.created, "body": a.to_json(),
                 "group_key": group_key(a.group)} for a in batch], key="id"))
            new = [a for a in batch if a.id in inserted]
            _insert_or_ignore(conn, alert_events_table, [
                {"alert_id": a.id, "position": i, "event_id": eid} for a in new for i, eid in enumerate(a.event_ids)])
            _insert_or_ignore(conn, outbox_table, [
                {"alert_id": a.id, "sink": s, "attempts": 0, "next_try": now} for a in new for s in sinks])
        return new

    def get_alert(self, alert_id: str) -> Alert | None:
        with self.engine.connect() as conn:
            body = conn.execute(select(alerts_table.c.body).where(alerts_table.c.id == alert_id)).scalar()
        return Alert.parse(body) if body else None

    def list_alerts(self, *, since: datetime | None = None, rule: str | None = None,
                    limit: int | None = None) -> list[Alert]:
        q = select(alerts_table.c.body).order_by(alerts_table.c.first_seen, alerts_table.c.id)
        if since is not None:
            q = q.where(alerts_table.c.last_seen >= _utc(since))
        if rule is not None:
            q = q.where(alerts_table.c.rule_id == rule)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [Alert.parse(b) for (b,) in conn.execute(q)]

    def count_alerts(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(alerts_table)).scalar() or 0)

    def alert_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(alerts_table.c.id)).scalars())

    def stored_alert_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are stored alerts (one query per 500 ids)."""
        ids = list(dict.fromkeys(ids))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                found.update(conn.execute(select(alerts_table.c.id)
                                          .where(alerts_table.c.id.in_(ids[i:i + 500]))).scalars())
        return found

    def open_alerts(self, keys: Iterable[tuple[str, str]], *, since: datetime) -> dict[tuple[str, str], Alert]:
        """For each (rule id, group key) pair, its latest alert last seen at or after ``since`` (the open
        incident a suppressed result updates), in one query."""
        wanted = set(keys)
        if not wanted:
            return {}
        rules = sorted({r for r, _ in wanted})
        q = (select(alerts_table.c.rule_id, alerts_table.c.group_key, alerts_table.c.body)
             .where(alerts_table.c.rule_id.in_(rules), alerts_table.c.last_seen >= _utc(since))
             .order_by(alerts_table.c.last_seen.desc()))
        out: dict[tuple[str, str], Alert] = {}
        with self.engine.connect() as conn:
            for rule_id, gkey, body in conn.execute(q):
                if (rule_id, gkey) in wanted and (rule_id, gkey) not in out:
                    out[rule_id, gkey] = Alert.parse(body)
        return out

    def update_alert(self, alert: Alert, *, sinks: Sequence[str] = ()) -> None:
        """Store the new state of an existing alert (same id): body, times, new chain links; its
        outbox rows are due again, so sinks receive the update (one row per sink, latest state)."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(update(alerts_table).where(alerts_table.c.id == alert.id)
                         .values(first_seen=alert.first_seen, last_seen=alert.last_seen, body=alert.to_json()))
            have = int(conn.execute(select(func.count()).select_from(alert_events_table)
                                    .where(alert_events_table.c.alert_id == alert.id)).scalar() or 0)
            links = [{"alert_id": alert.id, "position": i, "event_id": eid}
                     for i, eid in enumerate(alert.event_ids) if i >= have]
            if links:
                conn.execute(insert(alert_events_table), links)
            conn.execute(update(outbox_table).where(outbox_table.c.alert_id == alert.id)
                         .values(delivered_at=None, attempts=0, last_error=None, next_try=now))
            queued = set(conn.execute(select(outbox_table.c.sink).where(outbox_table.c.alert_id == alert.id)).scalars())
            rows = [{"alert_id": alert.id, "sink": s, "attempts": 0, "next_try": now} for s in sinks if s not in queued]
            if rows:
                conn.execute(insert(outbox_table), rows)

    # -- observations ---------------------------------------------------------------------------
    def add_observations(self, rows: Iterable[dict[str, Any]]) -> int:
        """Store observations (``id``, ``event_id``, ``rule_id``, ``kind``, ``time``, ``risk``, ``body``
        as a dict); idempotent on id. Returns how many were new."""
        batch = [{**r, "body": _json_text(r["body"])} for r in {r["id"]: r for r in rows}.values()]
        if not batch:
            return 0
        with self._write() as conn, conn.begin():
            return len(_insert_or_ignore(conn, observations_table, batch, key="id"))

    def list_observations(self, *, since: datetime | None = None, event_id: str | None = None,
                          limit: int | None = None) -> list[dict[str, Any]]:
        """Observations (time order), each the stored JSON body."""
        q = select(observations_table.c.body).order_by(observations_table.c.time, observations_table.c.id)
        if since is not None:
            q = q.where(observations_table.c.time >= _utc(since))
        if event_id is not None:
            q = q.where(observations_table.c.event_id == event_id)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [json.loads(b) for (b,) in conn.execute(q)]

    def count_observations(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(observations_table)).scalar() or 0)

    # -- outbox ---------------------------------------------------------------------------------
    def enqueue(self, alert_ids: Iterable[str], sink: str) -> int:
        """Add outbox rows for ``sink`` (existing (alert, sink) rows are kept as they are)."""
        now = datetime.now(UTC)
        rows = [{"alert_id": aid, "sink": sink, "attempts": 0, "next_try": now} for aid in dict.fromkeys(alert_ids)]
        with self._write() as conn, conn.begin():
            return len(_insert_or_ignore(conn, outbox_table, rows, key="id"))

    def pending(self, sink: str, *, now: datetime | None = None, limit: int = 100) -> list[OutboxItem]:
        now = now or datetime.now(UTC)
        q = (select(outbox_table.c.id, outbox_table.c.alert_id, outbox_table.c.sink, outbox_table.c.attempts)
             .where(outbox_table.c.sink == sink, outbox_table.c.delivered_at.is_(None),
                    outbox_table.c.next_try <= now)
             .order_by(outbox_table.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [OutboxItem(*row) for row in conn.execute(q)]

    def mark_delivered(self, item_ids: Iterable[int]) -> None:
        ids = list(item_ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(update(outbox_table).where(outbox_table.c.id.in_(ids))
                         .values(delivered_at=datetime.now(UTC), last_error=None,
                                 attempts=outbox_table.c.attempts + 1))

    def mark_failed(self, item_ids: Iterable[int], error: str, *, retry_in: timedelta) -> None:
        ids = list(item_ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(update(outbox_table).where(outbox_table.c.id.in_(ids))
                         .values(attempts=outbox_table.c.attempts + 1, last_error=error[:2000],
                                 next_try=datetime.now(UTC) + retry_in))

    def outbox_status(self) -> dict[str, dict[str, int]]:
        q = select(outbox_table.c.sink, outbox_table.c.delivered_at.is_(None), func.count()).group_by(
            outbox_table.c.sink, outbox_table.c.delivered_at.is_(None))
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for sink, pending, n in conn.execute(q):
                out.setdefault(sink, {"pending": 0, "delivered": 0})["pending" if pending else "delivered"] += n
        return out

    # -- quarantine -----------------------------------------------------------------------------
    def quarantine(self, raw: str | bytes, reason: str, *, source: str = "") -> None:
        """Keep a rejected record verbatim (truncated to 64 KiB) with the reason it was rejected."""
        self.quarantine_many([(raw, reason)], source=source)

    def quarantine_many(self, records: Iterable[tuple[str | bytes, str]], *, source: str = "") -> int:
        """Quarantine ``(raw, reason)`` pairs in one multi-row insert-or-ignore: the same record
        rejected for the same reason from the same source is kept once, however often it is resent.
        Returns how many rows were new."""
        now = datetime.now(UTC)
        source = _storable(source)[:1024]
        rows = {}
        for raw, reason in records:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", errors="replace")
            raw = _storable(raw)
            if len(raw) > MAX_QUARANTINE_RAW:
                raw = raw[:MAX_QUARANTINE_RAW] + f"...[truncated, {len(raw)} chars]"
            reason = _storable(reason)[:4000]
            digest = hashlib.sha256("\x00".join((source, reason, raw)).encode()).hexdigest()
            rows[digest] = {"time": now, "source": source, "reason": reason, "raw": raw, "digest": digest}
        if not rows:
            return 0
        with self._write() as conn, conn.begin():
            return len(_insert_or_ignore(conn, quarantine_table, list(rows.values()), key="digest"))

    def list_quarantine(self, limit: int = 100) -> list[dict[str, Any]]:
        q = select(quarantine_table).order_by(quarantine_table.c.id).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def count_quarantine(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(quarantine_table)).scalar() or 0)

    def stats(self) -> dict[str, Any]:
        return {"events": self.count_events(), "alerts": self.count_alerts(),
                "observations": self.count_observations(),
                "quarantine": self.count_quarantine(), "outbox": self.outbox_status(),
                "schema_version": self.schema_version(), "url": _redact(self.url)}


def _redact(url: str) -> str:
    """Hide a password in a database URL."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def _insert_or_ignore(conn: Connection, table: Table, rows: list[dict[str, Any]], *,
                      key: str | None = None) -> list[Any]:
    """One multi-row ``INSERT ... ON CONFLICT DO NOTHING`` of ``rows`` into ``table`` (SQLite and
    PostgreSQL alike); returns the ``key`` column of the rows actually inserted (when ``key``)."""
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        return _pg_insert_or_ignore(conn, table, rows, key)
    return _sqlite_insert_or_ignore(conn, table, rows, key)


_SQLITE_MAX_PARAMS = 32_766  # SQLITE_MAX_VARIABLE_NUMBER's default since SQLite 3.32


def _sqlite_insert_or_ignore(conn: Connection, table: Table, rows: list[dict[str, Any]], key: str | None) -> list[Any]:
    """SQLite's fast path: multi-row ``INSERT ... VALUES (...), (...) ON CONFLICT DO NOTHING`` through
    the driver's cursor, in ``conn``'s transaction. Each value goes through its column type's own bind
    processor, so what is stored is what SQLAlchemy would store, without its per-row parameter work
    (about a third of storing an event)."""
    columns = list(rows[0])
    convert = [(c, table.c[c].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)) for c in columns]
    per = max(1, _SQLITE_MAX_PARAMS // len(columns))
    quoted = ", ".join(f'"{c}"' for c in columns)
    head = f'INSERT INTO "{table.name}" ({quoted}) VALUES '
    tail = " ON CONFLICT DO NOTHING" + (f' RETURNING "{key}"' if key else "")
    one = "(" + ", ".join(["?"] * len(columns)) + ")"
    out: list[Any] = []
    cur = conn.connection.driver_connection.cursor()
    try:
        for i in range(0, len(rows), per):
            chunk = rows[i:i + per]
            params = [v if p is None or v is None else p(v) for r in chunk for c, p in convert for v in (r[c],)]
            sql = head + ", ".join([one] * len(chunk)) + tail
            with _driver_errors(conn, sql):
                cur.execute(sql, params)
                if key:
                    out.extend(row[0] for row in cur.fetchall())
    finally:
        cur.close()
    return out


#: PostgreSQL array type of each column type, for ``unnest`` inserts
_PG_ARRAYS = {"STRING": "text[]", "DATETIME": "timestamptz[]", "FLOAT": "float8[]",
              "INTEGER": "int8[]", "BOOLEAN": "bool[]"}


def _pg_insert_or_ignore(conn: Connection, table: Table, rows: list[dict[str, Any]], key: str | None) -> list[Any]:
    """PostgreSQL's fast path: one ``INSERT ... SELECT FROM unnest(<one array per column>) ON CONFLICT
    DO NOTHING``: a short statement whatever the number of rows, the values sent as binary arrays
    (text-format arrays would escape every quote of every JSON body in Python)."""
    columns = list(rows[0])
    arrays = ", ".join(f"CAST(%b AS {_PG_ARRAYS[table.c[c].type._type_affinity.__visit_name__.upper()]})"
                       for c in columns)
    sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) "
           f"ON CONFLICT DO NOTHING" + (f" RETURNING {key}" if key else ""))
    with conn.connection.driver_connection.cursor() as cur, _driver_errors(conn, sql):  # ``conn``'s transaction
        cur.execute(sql, [[r[c] for r in rows] for c in columns])
        return [r[0] for r in cur.fetchall()] if key else []


@contextmanager
def _driver_errors(conn: Connection, statement: str) -> Iterator[None]:
    """A statement run on the driver's own cursor fails as SQLAlchemy's would: the driver's error
    wrapped in the matching :mod:`sqlalchemy.exc` class (``OperationalError``, ``IntegrityError``...),
    so callers and the CLI's error boundary see one kind of error whichever path wrote."""
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raise DBAPIError.instance(statement, None, exc, dbapi.Error, dialect=conn.dialect) from exc


def _json_text(value: Any) -> str:
    """Compact JSON with sorted keys (orjson; the standard library for what orjson refuses, e.g. a
    lone surrogate or an integer too large for 64 bits)."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, default=str, sort_keys=True, separators=(",", ":"))


def _column(value: str | None) -> str | None:
    return None if value is None else _storable(value)


def _storable(value: str) -> str:
    """Text both databases can hold: NUL escaped (PostgreSQL text cannot hold it), lone UTF-16
    surrogates replaced (neither UTF-8 encoder accepts them)."""
    value = value.replace("\x00", "\\x00")
    return value.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # transactions are begun by _sqlite_begin (SQLAlchemy recipe)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    # checkpoint the WAL every 10,000 pages (~40 MB), not SQLite's 1,000: an index page changed by
    # many batches is copied back once per checkpoint; ingest at 100k events +6-7% (docs/store.md)
    cur.execute("PRAGMA wal_autocheckpoint=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    """Begin SQLite transactions ourselves: ``BEGIN IMMEDIATE`` for writes (see ``Store._write``)."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("sqlite_immediate") else "BEGIN")

