"""The sensor's decisions, independent of HTTP: run a model's detectors on one inference (input rows
and the model server's answer), turn verdicts into events on the queue, keep the enforcement state
(blocked accounts from alerts and blocking detectors, the allow-list), and snapshot per-account
detector state so a restart (even ``kill -9``) resumes where the last snapshot left off.

Detectors reach the sensor through :class:`OnlineDetector` (``inspect`` one inference), built by the
CLI from fitted artefacts: the sensor itself imports no detector code.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from kizashi.engine.events import Alert, DataUsed, DetectionEvent, DetectorInfo, Subject, Target, utcnow

from .config import SensorConfig
from .event_queue import EventQueue
from .tensors import InferResponse

__all__ = ["Decision", "OnlineDetector", "Outputs", "Sensor", "outputs_from"]

_MAGIC = b"KZSNAP1\n"  # then per account: u32 length + account id, u32 length + state blob

log = logging.getLogger("kizashi.sensor")
LEVELS = ("informational", "low", "medium", "high", "critical")
DECISION_EVERY = 60.0  # seconds between decision events about the same blocked account


@dataclass
class Outputs:
    """What the model server answered for the rows of one request (either may be missing)."""

    probabilities: np.ndarray | None = None  # (n, classes)
    labels: np.ndarray | None = None  # (n,)

    def prediction(self, i: int) -> Any:
        if self.probabilities is not None:
            return self.probabilities[i]
        if self.labels is not None:
            return int(self.labels[i])
        return None


def outputs_from(resp: InferResponse | None, name: str | None, n_rows: int) -> Outputs:
    """Class probabilities (a float output of shape (n, k>1)) or labels (an integer output of n values)."""
    if resp is None:
        return Outputs()
    t = resp.output(name)
    if t is None or not t.shape or t.shape[0] != n_rows:
        return Outputs()
    a = t.array
    if a.dtype.kind == "f" and a.ndim == 2 and a.shape[1] > 1:
        return Outputs(probabilities=a.astype(np.float64))
    if a.size == n_rows and a.dtype.kind in "iub":
        return Outputs(labels=a.reshape(-1).astype(np.int64))
    if a.size == n_rows and a.dtype.kind == "f" and np.all(np.mod(a, 1) == 0):
        return Outputs(labels=a.reshape(-1).astype(np.int64))
    return Outputs()


class OnlineDetector(Protocol):
    """A fitted detector as the sensor uses it (the CLI adapts each detector kind to this)."""

    name: str
    blocking: bool
    stateful: bool

    def inspect(self, X: np.ndarray, outputs: Outputs, *, account: str, source_ip: str | None,
                time: datetime) -> list[DetectionEvent]: ...

    # per-account state (stateful detectors only): copied on the request loop, encoded elsewhere
    def accounts(self) -> list[str]: ...

    def encode_account(self, account: str) -> bytes | None: ...

    def restore_account(self, account: str, blob: bytes) -> None: ...


@dataclass
class Block:
    reason: str
    until: float
    stage: str = "symptom"
    attack: str = "evasion"
    techniques: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    refused: int = 0
    last_decision: float = 0.0


@dataclass
class Decision:
    allowed: bool
    reason: str = ""


class Sensor:
    def __init__(self, config: SensorConfig, detectors: dict[str, list[OnlineDetector]],
                 ingest: Callable[[list[DetectionEvent]], list[Alert]], *,
                 recent_alerts: Callable[[datetime], Iterable[Alert]] | None = None, endpoint: str | None = None):
        self.config = config
        self.detectors = detectors
        self.ingest = ingest
        self.endpoint = endpoint
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.blocked: dict[str, Block] = {}
        self.block_lock = threading.Lock()
        self.allow = set(config.allow)
        self.counts = {"requests": 0, "infer": 0, "rows": 0, "events": 0, "refused": 0, "bad_requests": 0,
                       "upstream_errors": 0, "undecoded_responses": 0, "detector_errors": 0,
                       "logger_events": 0, "logger_pairs": 0, "snapshots": 0}
        self.queue = EventQueue(self._handle_events, self.state_dir / "spill", maxsize=config.queue_size,
                                on_error=lambda exc: log.warning("event store unavailable: %s", exc))
        self.dirty: dict[tuple[str, int], set[str]] = {}
        self.encoded: dict[tuple[str, int], dict[str, bytes]] = {}  # account -> its last encoded state
        self.snapshot_lock = threading.Lock()
        self.snapshot_running = False
        self._recent_alerts = recent_alerts

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> Sensor:
        self.restore_snapshots()
        if self._recent_alerts is not None:
            since = utcnow() - timedelta(seconds=self.config.block_seconds)
            self.on_alerts(list(self._recent_alerts(since)), now=time.time())
        self.queue.start()
        return self

    def stop(self) -> None:
        self.snapshot()
        self.queue.stop()

    # -- events -----------------------------------------------------------------------------------
    def _handle_events(self, events: list[DetectionEvent]) -> None:
        alerts = self.ingest(events)
        self.on_alerts(alerts)

    def emit(self, events: list[DetectionEvent]) -> None:
        if events:
            self.counts["events"] += len(events)
            self.queue.put(events)

    # -- enforcement ------------------------------------------------------------------------------
    def _blocks(self, alert: Alert) -> bool:
        if self.config.block_on == "correlation" and alert.rule.type != "correlation":
            return False
        return LEVELS.index(alert.level) >= LEVELS.index(self.config.block_level)

    def on_alerts(self, alerts: Iterable[Alert], now: float | None = None) -> None:
        """Alerts from the pipeline (writer thread) or the store (start-up): block the accounts they name."""
        for a in alerts:
            if not self._blocks(a):
                continue
            until = a.last_seen.timestamp() + self.config.block_seconds
            if until < (now or time.time()):
                continue
            for acc in self._accounts_to_block(a):
                self._block(acc, Block(reason=f"alert {a.rule.name or a.rule.id} ({a.level})", until=until,
                                       stage=a.stages[-1] if a.stages else "symptom",
                                       attack=a.attacks[0] if a.attacks else "evasion",
                                       techniques=list(a.atlas.techniques),
                                       source={"alert_id": a.id, "rule": a.rule.name or a.rule.id}))

    @staticmethod
    def _accounts_to_block(alert: Alert) -> list[str]:
        """The account a correlation is grouped by, or a detection alert's account. A correlation
        grouped otherwise (e.g. by model: "many accounts hit one model") names bystanders too, so
        it blocks nobody."""
        grouped = alert.group.get("account.id")
        if grouped:
            return [str(grouped)]
        if alert.rule.type == "detection":
            return list(alert.accounts)
        return []

    def _block(self, account: str, block: Block) -> None:
        with self.block_lock:
            old = self.blocked.get(account)
            if old is None or old.until < block.until:
                if old is not None:
                    block.refused, block.last_decision = old.refused, old.last_decision
                self.blocked[account] = block

    def check(self, account: str, model: str, source_ip: str | None) -> Decision:
        """Before forwarding: refuse accounts blocked in enforce mode (allow-listed ones never)."""
        if self.config.mode != "enforce" or account in self.allow:
            return Decision(True)
        b = self.blocked.get(account)
        if b is None:
            return Decision(True)
        now = time.time()
        if b.until < now:
            with self.block_lock:
                self.blocked.pop(account, None)
            return Decision(True)
        b.refused += 1
        self.counts["refused"] += 1
        if now - b.last_decision >= DECISION_EVERY:
            b.last_decision = now
            self.emit([self.decision_event("refuse", account, model, source_ip, b)])
        return Decision(False, b.reason)

    def decision_event(self, decision: str, account: str, model: str, source_ip: str | None,
                       b: Block) -> DetectionEvent:
        """Every enforcement decision is an event (rate-limited per account: one per minute, counted)."""
        return DetectionEvent(
            detector=DetectorInfo(id="kizashi.sensor", name="sensor_enforcement", version="0.1.0"),
            stage=b.stage, attack=b.attack, atlas={"techniques": b.techniques},
            subject=Subject(account=account, source_ip=source_ip),
            target=Target(model=model, endpoint=self.endpoint), data_used=DataUsed(),
            score=1.0, severity="informational",
            evidence={"decision": decision, "reason": b.reason, "refused_requests": b.refused,
                      "blocked_until": datetime.fromtimestamp(b.until).astimezone().isoformat(), **b.source})

    # -- detection ----------------------------------------------------------------------------------
    def inspect(self, model: str, X: np.ndarray, outputs: Outputs, *, account: str, source_ip: str | None,
                when: datetime | None = None) -> Decision:
        """Run ``model``'s detectors on one inference; events go to the queue. In enforce mode a
        flag by a blocking detector refuses this answer and blocks the account."""
        when = when or utcnow()
        events: list[DetectionEvent] = []
        blocking_flag: DetectionEvent | None = None
        self.counts["rows"] += len(X)
        for i, det in enumerate(self.detectors.get(model, ())):
            try:
                found = det.inspect(X, outputs, account=account, source_ip=source_ip, time=when)
            except Exception as exc:  # one detector's failure must not take down the request path
                self.counts["detector_errors"] += 1
                log.warning("detector %s failed on a request for %s: %s", det.name, model, exc)
                continue
            if det.stateful:
                self.dirty.setdefault((model, i), set()).add(account)
            events.extend(found)
            if found and det.blocking and blocking_flag is None:
                blocking_flag = found[0]
        self.emit(events)
        if blocking_flag is not None and self.config.mode == "enforce" and account not in self.allow:
            e = blocking_flag
            b = Block(reason=f"detector {e.detector.name} flagged the account", until=time.time() +
                      self.config.block_seconds, stage=e.stage, attack=e.attack,
                      techniques=list(e.atlas.techniques), source={"event_id": e.id, "detector": e.detector.name})
            self._block(account, b)
            b = self.blocked[account]
            b.refused += 1
            b.last_decision = time.time()
            self.counts["refused"] += 1
            self.emit([self.decision_event("block", account, model, source_ip, b)])
            return Decision(False, b.reason)
        return Decision(True)

    # -- snapshots -----------------------------------------------------------------------------------
    def _snapshot_path(self, model: str, i: int, det: OnlineDetector) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
        return self.state_dir / "snapshots" / safe / f"{i:02d}-{det.name}.kzs"

    def take_dirty(self) -> dict[tuple[str, int], set[str]]:
        dirty, self.dirty = self.dirty, {}
        return dirty

    def encode_states(self, key: tuple[str, int], accounts: list[str]) -> list[tuple[str, bytes | None]]:
        """Some accounts' state, encoded (on the request loop, so each is consistent; the encoding
        is the copy)."""
        det = self.detectors[key[0]][key[1]]
        return [(a, det.encode_account(a)) for a in accounts]

    def write_snapshot(self, key: tuple[str, int], encoded: list[tuple[str, bytes | None]]) -> None:
        """Rewrite the detector's snapshot file from the cache of encoded accounts (off the loop):
        temp file, fsync, rename, so a crash leaves the last one whole."""
        det = self.detectors[key[0]][key[1]]
        with self.snapshot_lock:
            cache = self.encoded.setdefault(key, {})
            for account, blob in encoded:
                if blob is None:
                    cache.pop(account, None)  # evicted (LRU bound) since
                else:
                    cache[account] = blob
            path = self._snapshot_path(*key, det)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                fh.write(_MAGIC)
                for account, blob in cache.items():
                    a = account.encode("utf-8", errors="surrogateescape")
                    fh.write(len(a).to_bytes(4, "big") + a + len(blob).to_bytes(4, "big") + blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            self.counts["snapshots"] += 1

    def snapshot(self) -> None:
        """Everything dirty, at once (shutdown; the server snapshots incrementally on its loop)."""
        for key, accounts in self.take_dirty().items():
            self.write_snapshot(key, self.encode_states(key, sorted(accounts)))

    def restore_snapshots(self) -> int:
        n = 0
        for model, dets in self.detectors.items():
            for i, det in enumerate(dets):
                path = self._snapshot_path(model, i, det)
                if not (det.stateful and path.exists()):
                    continue
                cache = self.encoded.setdefault((model, i), {})
                try:
                    for account, blob in _read_snapshot(path.read_bytes()):
                        det.restore_account(account, blob)
                        cache[account] = blob
                        n += 1
                except (ValueError, OSError) as exc:
                    log.warning("snapshot %s not (fully) restored: %s", path, exc)
        return n

    def status(self) -> dict[str, Any]:
        return {"mode": self.config.mode, "counts": dict(self.counts), "queue": self.queue.status(),
                "snapshot_pending": bool(self.dirty) or self.snapshot_running,
                "blocked_accounts": sorted(a for a, b in self.blocked.items() if b.until >= time.time()),
                "models": {m: [d.name for d in dets] for m, dets in self.detectors.items()}}


def _read_snapshot(data: bytes):
    if not data.startswith(_MAGIC):
        raise ValueError("not a kizashi sensor snapshot")
    pos = len(_MAGIC)
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError("truncated snapshot")
        n = int.from_bytes(data[pos:pos + 4], "big")
        account = data[pos + 4:pos + 4 + n].decode("utf-8", errors="surrogateescape")
        pos += 4 + n
        m = int.from_bytes(data[pos:pos + 4], "big")
        blob = data[pos + 4:pos + 4 + m]
        if len(blob) != m or n > 4096:
            raise ValueError("truncated snapshot")
        pos += 4 + m
        yield account, blob
