"""Events leave the request path through a bounded queue; a writer thread feeds them to the store
and rule pipeline. When the queue is full, events are appended to a spill file (fsync'd) and
counted, never dropped; the writer ingests spill files when it has caught up, and at start-up.

Durability: a spilled event survives a crash; an event still in the in-memory queue when the
process is killed is lost (the queue is bounded by ``maxsize``; ``/sensor/status`` reports it).
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
    def __init__(self, handle: Callable[[list[DetectionEvent]], Any], spill_dir: Path, *, maxsize: int = 10_000,
                 batch: int = 500, on_error: Callable[[Exception], None] | None = None):
        self.handle = handle
        self.spill_dir = Path(spill_dir)
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self.q: queue.Queue[DetectionEvent | None] = queue.Queue(maxsize=maxsize)
        self.batch = batch
        self.on_error = on_error
        self.lock = threading.Lock()
        self.counts = {"queued": 0, "stored_batches": 0, "events_handled": 0, "spilled": 0,
                       "spill_replayed": 0, "handler_errors": 0}
        self._spill_fh = None
        self._spill_path: Path | None = None
        self._stop = threading.Event()
        self._busy = False
        self.thread = threading.Thread(target=self._run, name="kizashi-event-writer", daemon=True)

    # -- producer side (request path) ---------------------------------------------------------
    def put(self, events: list[DetectionEvent]) -> None:
        for e in events:
            try:
                self.q.put_nowait(e)
                self.counts["queued"] += 1
            except queue.Full:
                self._spill([e])

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
        batch = [first] if first is not None else []
        while len(batch) < self.batch:
            try:
                e = self.q.get_nowait()
            except queue.Empty:
                break
            if e is not None:
                batch.append(e)
        try:
            if batch and not self._deliver(batch):
                self._spill(batch)
                time.sleep(0.5)
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
            busy = self._drain_queue(timeout=0.2)
            if not busy and self.q.empty():
                if self._spill_fh is not None or any(self.spill_dir.glob("spill-*.jsonl")):
                    self._replay_spill()
        while self._drain_queue(timeout=0):  # drain what is left on shutdown
            pass
        self._seal_spill()

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
                "spill_files": len(list(self.spill_dir.glob("spill-*")))}
