"""The event store (SQLAlchemy 2): events, alerts, alert-event links, a delivery outbox and a
quarantine of rejected input. SQLite file by default (WAL), PostgreSQL by URL
(``postgresql+psycopg://…``).

* Ingest is idempotent on event id: a duplicate is counted, not stored twice.
* Alert insert is idempotent on alert id (ids are deterministic: rule, group, chain).
* Every alert gets one outbox row per configured sink; delivery state lives there.
* Rejected input is kept verbatim with its reason, so nothing is silently lost.
* Schema versions are recorded in ``kizashi_schema``; :data:`MIGRATIONS` upgrades older stores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .events import Alert, DetectionEvent
from .incidents import group_key

SCHEMA_VERSION = 3
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
    Column("seq", Integer, nullable=False, index=True),  # ingestion order
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
)

#: version -> list of SQL statements upgrading from version-1 (dialect-neutral DDL only)
MIGRATIONS: dict[int, list[str]] = {
    2: ["CREATE INDEX IF NOT EXISTS ix_events_account_time ON events (account, time)"],
    3: ["ALTER TABLE alerts ADD COLUMN group_key TEXT",
        "CREATE INDEX IF NOT EXISTS ix_alerts_rule_last_seen ON alerts (rule_id, last_seen)"],
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


class Store:
    """A kizashi event store at ``url`` (created and migrated on open)."""

    def __init__(self, url: str | None = None, *, echo: bool = False):
        self.url = normalise_url(url)
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.migrate()

    # -- schema ---------------------------------------------------------------------------------
    def migrate(self) -> int:
        """Create missing tables and apply pending migrations; returns the schema version."""
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            current = conn.execute(select(func.max(schema_table.c.version))).scalar()
            if current is None:  # fresh store: everything is already at the newest version
                conn.execute(insert(schema_table).values(version=SCHEMA_VERSION, applied_at=datetime.now(UTC)))
                return SCHEMA_VERSION
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for stmt in MIGRATIONS.get(version, []):
                    if not _column_added(conn, stmt):
                        conn.exec_driver_sql(stmt)
                conn.execute(insert(schema_table).values(version=version, applied_at=datetime.now(UTC)))
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
    def add_events(self, events: Iterable[DetectionEvent]) -> IngestResult:
        """Store events; an id already stored (or repeated in the batch) is counted as a duplicate."""
        result = IngestResult()
        batch = list(events)
        if not batch:
            return result
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            ids = [e.id for e in batch]
            existing: set[str] = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                existing.update(conn.execute(select(events_table.c.id).where(events_table.c.id.in_(chunk))).scalars())
            seq = int(conn.execute(select(func.coalesce(func.max(events_table.c.seq), 0))).scalar() or 0)
            rows = []
            for e in batch:
                if e.id in existing:
                    result.duplicates += 1
                    continue
                existing.add(e.id)
                seq += 1
                rows.append({
                    "id": e.id, "time": e.time, "stage": e.stage, "attack": e.attack, "detector": e.detector.name,
                    "account": e.subject.account, "model": e.target.model, "score": e.score,
                    "body": e.to_json(), "ingested_at": now, "seq": seq,
                })
                result.new_events.append(e)
            if rows:
                conn.execute(insert(events_table), rows)
        result.stored = len(result.new_events)
        return result

    def get_event(self, event_id: str) -> DetectionEvent | None:
        with self.engine.connect() as conn:
            body = conn.execute(select(events_table.c.body).where(events_table.c.id == event_id)).scalar()
        return DetectionEvent.parse(body) if body else None

    def get_events(self, ids: Iterable[str]) -> dict[str, DetectionEvent]:
        ids = list(dict.fromkeys(ids))
        out: dict[str, DetectionEvent] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                q = select(events_table.c.id, events_table.c.body).where(events_table.c.id.in_(ids[i:i + 500]))
                for eid, body in conn.execute(q):
                    out[eid] = DetectionEvent.parse(body)
        return out

    def iter_events(self, *, since: datetime | None = None, order: str = "time") -> Iterator[DetectionEvent]:
        """Events by time (or ``order="seq"``: ingestion order), optionally from ``since`` on."""
        q = select(events_table.c.body)
        if since is not None:
            q = q.where(events_table.c.time >= _utc(since))
        q = q.order_by(events_table.c.seq if order == "seq" else events_table.c.time, events_table.c.id)
        with self.engine.connect() as conn:
            for (body,) in conn.execute(q):
                yield DetectionEvent.parse(body)

    def count_events(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events_table)).scalar() or 0)

    def latest_event_time(self) -> datetime | None:
        with self.engine.connect() as conn:
            t = conn.execute(select(func.max(events_table.c.time))).scalar()
        return _utc(t) if t is not None else None

    # -- alerts ---------------------------------------------------------------------------------
    def add_alerts(self, alerts: Iterable[Alert], *, sinks: Sequence[str] = ()) -> list[Alert]:
        """Store alerts (idempotent on id) with their chain links and one outbox row per sink.
        Returns the alerts that were new."""
        new: list[Alert] = []
        now = datetime.now(UTC)
        batch = list({a.id: a for a in alerts}.values())
        if not batch:
            return new
        with self.engine.begin() as conn:
            existing: set[str] = set()
            ids = [a.id for a in batch]
            for i in range(0, len(ids), 500):
                existing.update(conn.execute(select(alerts_table.c.id).where(alerts_table.c.id.in_(ids[i:i + 500])))
                                .scalars())
            new = [a for a in batch if a.id not in existing]
            if not new:
                return new
            conn.execute(insert(alerts_table), [
                {"id": a.id, "rule_id": a.rule.id, "level": a.level, "first_seen": a.first_seen,
                 "last_seen": a.last_seen, "created": a.created, "body": a.to_json(),
                 "group_key": group_key(a.group)} for a in new])
            links = [{"alert_id": a.id, "position": i, "event_id": eid} for a in new for i, eid in enumerate(a.event_ids)]
            if links:
                conn.execute(insert(alert_events_table), links)
            if sinks:
                conn.execute(insert(outbox_table), [
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

    def open_alert(self, rule_id: str, group: dict[str, Any], *, since: datetime) -> Alert | None:
        """The latest alert of ``rule_id`` and ``group`` last seen at or after ``since`` (suppression)."""
        q = (select(alerts_table.c.body)
             .where(alerts_table.c.rule_id == rule_id, alerts_table.c.group_key == group_key(group),
                    alerts_table.c.last_seen >= _utc(since))
             .order_by(alerts_table.c.last_seen.desc()).limit(1))
        with self.engine.connect() as conn:
            body = conn.execute(q).scalar()
        return Alert.parse(body) if body else None

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
        batch = list({r["id"]: r for r in rows}.values())
        if not batch:
            return 0
        with self.engine.begin() as conn:
            existing: set[str] = set()
            ids = [r["id"] for r in batch]
            for i in range(0, len(ids), 500):
                existing.update(conn.execute(select(observations_table.c.id)
                                             .where(observations_table.c.id.in_(ids[i:i + 500]))).scalars())
            new = [{**r, "body": json.dumps(r["body"], default=str, sort_keys=True)} for r in batch
                   if r["id"] not in existing]
            if new:
                conn.execute(insert(observations_table), new)
        return len(new)

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
        n = 0
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            for aid in alert_ids:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(outbox_table).values(alert_id=aid, sink=sink, attempts=0, next_try=now))
                    n += 1
                except IntegrityError:
                    pass
        return n

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
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace")
        raw = raw.replace("\x00", "\\x00")  # PostgreSQL text cannot hold NUL
        if len(raw) > MAX_QUARANTINE_RAW:
            raw = raw[:MAX_QUARANTINE_RAW] + f"...[truncated, {len(raw)} chars]"
        with self.engine.begin() as conn:
            conn.execute(insert(quarantine_table).values(time=datetime.now(UTC), source=source[:1024],
                                                         reason=reason.replace("\x00", "\\x00")[:4000], raw=raw))

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


def _column_added(conn: Any, stmt: str) -> bool:
    """Is ``stmt`` an ``ALTER TABLE t ADD COLUMN c ...`` whose column is already there? (SQLite has
    no ``ADD COLUMN IF NOT EXISTS``; a store created by a newer create_all already has it.)"""
    words = stmt.split()
    if [w.upper() for w in words[:2]] != ["ALTER", "TABLE"] or [w.upper() for w in words[3:5]] != ["ADD", "COLUMN"]:
        return False
    from sqlalchemy import inspect

    return words[5] in {c["name"] for c in inspect(conn).get_columns(words[2])}


def _redact(url: str) -> str:
    """Hide a password in a database URL."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()

