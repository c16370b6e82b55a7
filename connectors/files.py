"""Alerts into a local file: :class:`FileSink` writes any registered format to one path, and
:class:`AlertsJsonFormatter` is the store's own alert document, one JSON line per alert.

Line formats (CEF, LEEF, RFC 5424, ECS, alerts) are appended to by default, one line per alert per
delivery; a document format (STIX bundle, Navigator layer) has one document per file, so its file is
replaced, atomically, by each batch's document (give it one batch: ``deliver(batch_size=…)``). A
directory of STIX bundles that keeps every batch is :class:`~kizashi.connectors.stix.StixFileSink`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kizashi.engine.events import Alert, DetectionEvent

from .alertview import AlertView
from .base import DeliveryError, Formatter, RecordFormatter
from .registry import formatter as build_formatter


class AlertsJsonFormatter(RecordFormatter):
    """Alerts → JSON lines of kizashi's own alert document (what ``kizashi ingest`` stores)."""

    name = "alerts"

    def record(self, v: AlertView) -> str:
        return v.alert.to_json()


class FileSink:
    """``FileSink(path, format)``: render each batch with ``format`` (a registered format name, or a
    formatter) into ``path``. ``append`` defaults to ``True`` for line formats; a document format
    cannot be appended to, so each batch replaces its file. ``options`` are the formatter's."""

    def __init__(self, path: str | os.PathLike, format: str | Formatter = "alerts", *, append: bool | None = None,
                 options: Mapping[str, Any] | None = None, name: str = "file"):
        self.path = Path(path)
        self.formatter = build_formatter(format, **(options or {})) if isinstance(format, str) else format
        if append and self.formatter.document:
            raise ValueError(f"sink {name}: the {self.formatter.name} format is one document per file; "
                             "it cannot be appended to")
        self.append = (not self.formatter.document) if append is None else append
        self.name = name

    def send(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> None:
        if not alerts:
            return
        write_file(self.name, self.path, self.formatter.render(alerts, events), append=self.append)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"FileSink(name={self.name!r}, path={str(self.path)!r}, format={self.formatter.name!r})"


def write_file(sink: str, path: Path, text: str, *, append: bool = False) -> None:
    """Append ``text`` to ``path``, or replace ``path`` with it atomically, synced to disk; a failure
    is a retryable :class:`DeliveryError` of ``sink`` (a full disk or a missing mount may pass)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not append:
            write_atomically(path, text)
            return
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise DeliveryError(f"{sink}: cannot write {path}: {exc}", retryable=True) from exc


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, fsync, then rename over ``path``: a
    reader sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
