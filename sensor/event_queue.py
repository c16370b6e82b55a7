"""Events leave the request path through a bounded queue; a writer thread feeds them to the store
and rule pipeline. When the queue is full, events are appended to a spill file (fsync'd) and
counted, never dropped; the writer ingests spill files when it has caught up, and at start-up.

Durability: every event is first appended to a journal segment (written through to the operating
system before ``put`` returns, fsync'd by the writer every ``sync_every`` seconds); a segment is
deleted once all its events are stored or spilled. After a crash, the segments left are replayed
like spill files at start-up. So a ``kill -9`` of the process loses nothing (the kernel holds what
was written), and a power loss at most the last ``sync_every`` seconds. An event both journalled
and spilled may be replayed twice: the store keeps one (idempotent on id, alert ids deterministic).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kizashi.engine.events import DetectionEvent, EventValidationError

__all__ = ["EventQueue"]


class EventQueue:
    #: events per journal segment before the next one begins (a segment goes once all are stored)
    SEGMENT_EVENTS = 5_000

    def __init__(self, handle: Callable[[list[DetectionEvent]], Any], spill_dir: Path, *, maxsize: int = 10_000,
                 batch: int = 500, on_error: Callable[[Exception], None] | None = None, sync_every: float = 0.2):
        self.handle = handle
        self.spill_dir = Path(spill_dir)
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self.q: queue.Queue[tuple[DetectionEvent, Path] | None] = queue.Queue(maxsize=maxsize)
        self.batch = batch
        self.on_error = on_error
        self.sync_every = sync_every
        self.lock = threading.Lock()
        self.counts = {"queued": 0, "stored_batches": 0, "events_handled": 0, "spilled": 0,
                       "spill_replayed": 0, "handler_errors": 0, "journal_replayed_files": 0}
        self._spill_fh = None
        self._spill_path: Path | None = None
        self._journal_fh = None
        self._journal_path: Path | None = None
        self._journal_events = 0
        self._journal_dirty = False
        self._last_sync = time.monotonic()
        self._outstanding: dict[Path, int] = {}  # journal segment -> its events not yet stored or spilled
        self._stop = threading.Event()
        self._busy = False
        self.thread = threading.Thread(target=self._run, name="kizashi-event-writer", daemon=True)

    # -- producer side (request path) ---------------------------------------------------------
    def put(self, events: list[DetectionEvent]) -> None:
        if not events:
            return
        segment = self._journal(events)
        for e in events:
            try:
                self.q.put_nowait((e, segment))
                self.counts["queued"] += 1
            except queue.Full:
                self._spill([e])
                self._settled({segment: 1})

    # -- journal ---------------------------------------------------------------------------------
    def _journal(self, events: list[DetectionEvent]) -> Path:
        """Append ``events`` to the current segment, written through to the OS; returns the segment."""
        lines = "".join(e.to_json() + "\n" for e in events)
        closed = None
        with self.lock:
            if self._journal_fh is None or self._journal_events >= self.SEGMENT_EVENTS:
                closed = self._rotate_journal()
                self._journal_path = self.spill_dir / f"journal-{time.time_ns()}.jsonl"
                self._journal_fh = open(self._journal_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in _rotate
                self._journal_events = 0
            assert self._journal_path is not None
            self._journal_fh.write(lines)
            self._journal_fh.flush()  # in the kernel: survives the process being killed
            self._journal_events += len(events)
            self._journal_dirty = True
            self._outstanding[self._journal_path] = self._outstanding.get(self._journal_path, 0) + len(events)
            segment = self._journal_path
        _fsync_and_close(closed)  # the closed segment reaches the disk without holding up other puts
        return segment

    def _rotate_journal(self) -> int | None:
        """Close the current segment (under ``self.lock``); delete it if nothing in it is pending.
        Returns a duplicate descriptor of a kept segment, for :func:`_fsync_and_close` once the lock
        is released."""
        if self._journal_fh is None:
            return None
        self._journal_fh.flush()
        fd = os.dup(self._journal_fh.fileno())
        self._journal_fh.close()
        path, self._journal_fh, self._journal_path = self._journal_path, None, None
        if path is not None and self._outstanding.get(path, 0) <= 0:
            self._outstanding.pop(path, None)
            path.unlink(missing_ok=True)
            os.close(fd)
            return None
        return fd

    def _settled(self, by_segment: dict[Path, int]) -> None:
        """These events are stored or spilled: a closed segment with none pending left is deleted."""
        with self.lock:
            for path, n in by_segment.items():
                left = self._outstanding.get(path, 0) - n
                if left > 0 or path == self._journal_path:
                    self._outstanding[path] = max(left, 0)
                    continue
                self._outstanding.pop(path, None)
                path.unlink(missing_ok=True)

    def _sync_journal(self) -> None:
        """fsync the open segment without holding the lock (``put`` runs on the event loop and must not
        wait on the disk): a duplicate descriptor stays valid if the segment is rotated meanwhile."""
        with self.lock:
            self._last_sync = time.monotonic()
            if self._journal_fh is None or not self._journal_dirty:
                return
            fd = os.dup(self._journal_fh.fileno())
            self._journal_dirty = False
        _fsync_and_close(fd)

    def _spill(self, events: list[DetectionEvent]) -> None:
        with self.lock:
            if self._spill_fh is None:
                self._spill_path = self.spill_dir / f"spill-{time.time_ns()}.jsonl.part"
                self._spill_fh = open(self._spill_path, "a", encoding="utf-8")
            for e in events:
                self._spill_fh.write(e.to_json() + "\n")
            self._spill_fh.flush()
            os.fsync(self._spill_fh.fileno())
            self.counts["spilled"] += len(events)

    def _seal_spill(self) -> None:
        """Close the current spill file so the writer may ingest it (renamed without ``.part``)."""
        with self.lock:
            if self._spill_fh is None:
                return
            self._spill_fh.close()
            assert self._spill_path is not None
            self._spill_path.rename(self._spill_path.with_suffix(""))
            self._spill_fh = None
            self._spill_path = None

    # -- writer side ---------------------------------------------------------------------------
    def start(self) -> EventQueue:
        for part in self.spill_dir.glob("*.jsonl.part"):  # left by a crash: complete lines are valid
            part.rename(part.with_suffix(""))
        for journal in sorted(self.spill_dir.glob("journal-*.jsonl")):  # left by a crash: replay them
            journal.rename(self.spill_dir / ("spill-" + journal.name.removeprefix("journal-")))
            self.counts["journal_replayed_files"] += 1
        self.thread.start()
        return self

    def _deliver(self, events: list[DetectionEvent]) -> bool:
        try:
            self.handle(events)
        except Exception as exc:  # the store may be down: keep the events on disk instead
            self.counts["handler_errors"] += 1
            if self.on_error:
                self.on_error(exc)
            return False
        self.counts["stored_batches"] += 1
        self.counts["events_handled"] += len(events)
        return True

    def _drain_queue(self, timeout: float) -> bool:
        try:
            first = self.q.get(timeout=timeout)
        except queue.Empty:
            return False
        self._busy = True
        items = [first] if first is not None else []
        while len(items) < self.batch:
            try:
                item = self.q.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                items.append(item)
        try:
            batch = [e for e, _ in items]
            if batch and not self._deliver(batch):
                self._spill(batch)
                time.sleep(0.5)
            by_segment: dict[Path, int] = {}
            for _, segment in items:
                by_segment[segment] = by_segment.get(segment, 0) + 1
            self._settled(by_segment)
        finally:
            self._busy = False
        return True

    def _replay_spill(self) -> None:
        self._seal_spill()
        for path in sorted(self.spill_dir.glob("spill-*.jsonl")):
            events = []
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    events.append(DetectionEvent.parse(line))
                except EventValidationError:
                    continue  # a torn last line from a crash mid-write
            for i in range(0, len(events), self.batch):
                if not self._deliver(events[i:i + self.batch]):
                    return
            self.counts["spill_replayed"] += len(events)
            path.unlink()

    def _run(self) -> None:
        self._replay_spill()
        while not self._stop.is_set():
            busy = self._drain_queue(timeout=min(0.2, self.sync_every))
            if time.monotonic() - self._last_sync >= self.sync_every:
                self._sync_journal()
            if not busy and self.q.empty():
                if self._spill_fh is not None or any(self.spill_dir.glob("spill-*.jsonl")):
                    self._replay_spill()
        while self._drain_queue(timeout=0):  # drain what is left on shutdown
            pass
        self._seal_spill()
        with self.lock:
            closed = self._rotate_journal()
        _fsync_and_close(closed)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the in-memory queue is empty (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.q.empty() and not self._busy:
                time.sleep(0.05)
                if self.q.empty() and not self._busy:
                    return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        self._stop.set()
        if not self.q.full():
            self.q.put(None)
        self.thread.join(timeout=30)

    def status(self) -> dict[str, Any]:
        return {**self.counts, "in_memory": self.q.qsize(), "capacity": self.q.maxsize,
                "spill_files": len(list(self.spill_dir.glob("spill-*"))),
                "journal_files": len(list(self.spill_dir.glob("journal-*")))}


def _fsync_and_close(fd: int | None) -> None:
    """fsync a duplicate descriptor taken under the queue's lock, outside it, then close it."""
    if fd is None:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
