"""Third-party detector output → kizashi events.

* :class:`FieldMapping` — generic JSON or CSV records through a small YAML mapping::

      detector: {id: vendor.guard, name: vendor_guard, version: "2.1"}
      defaults: {stage: symptom, attack: evasion, atlas.technique: [AML.T0015], severity: medium}
      fields:                      # kizashi flat field: source field (dotted paths into JSON)
        id: request_id
        time: ts
        account.id: user.name
        source.ip: client_ip
        model.id: model
        score: adv_score
        threshold: cutoff
      time_format: epoch_ms        # iso (default) | epoch_s | epoch_ms
      keep_unmapped_as_evidence: true

* :func:`from_art_detector` — adversarial-robustness-toolbox detector results (``detect`` returns
  ``(report, is_adversarial)``; ``report`` is a score array or a dict of arrays) for a batch of inputs.

Every record that does not map to a valid event raises :class:`AdapterError` naming the record and
the problem; callers quarantine it and keep the valid ones.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import yaml
from kizashi.engine.events import DetectionEvent, EventValidationError, unflatten_event


class AdapterError(ValueError):
    def __init__(self, message: str, raw: str = ""):
        super().__init__(message)
        self.raw = raw


def _get(record: Mapping[str, Any], path: str) -> Any:
    if path in record:
        return record[path]
    cur: Any = record
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


@dataclass
class FieldMapping:
    fields: dict[str, str]
    detector: dict[str, Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    time_format: str = "iso"
    keep_unmapped_as_evidence: bool = False

    @classmethod
    def from_yaml(cls, text: str) -> FieldMapping:
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict) or "fields" not in data or "detector" not in data:
            raise ValueError("a field mapping needs 'detector' and 'fields' sections")
        if data.get("time_format", "iso") not in ("iso", "epoch_s", "epoch_ms"):
            raise ValueError("time_format must be iso, epoch_s or epoch_ms")
        return cls(fields=dict(data["fields"]), detector=dict(data["detector"]),
                   defaults=dict(data.get("defaults") or {}), time_format=data.get("time_format", "iso"),
                   keep_unmapped_as_evidence=bool(data.get("keep_unmapped_as_evidence", False)))

    def _time(self, value: Any) -> Any:
        if value is None or self.time_format == "iso":
            return value
        try:
            seconds = float(value) / (1000.0 if self.time_format == "epoch_ms" else 1.0)
        except (TypeError, ValueError):
            raise ValueError(f"time {value!r} is not a number ({self.time_format})") from None
        return datetime.fromtimestamp(seconds, UTC).isoformat()

    def to_event(self, record: Mapping[str, Any]) -> DetectionEvent:
        flat: dict[str, Any] = dict(self.defaults)
        used = set()
        for target, source in self.fields.items():
            value = _get(record, source)
            used.add(source.split(".")[0])
            if value is None or value == "":
                continue
            flat[target] = self._time(value) if target == "time" else value
        for k in ("score", "threshold"):
            if isinstance(flat.get(k), str):
                try:
                    flat[k] = float(flat[k])
                except ValueError:
                    raise EventValidationError([{"loc": (k,), "msg": f"not a number: {flat[k]!r}"}]) from None
        if isinstance(flat.get("atlas.technique"), str):
            flat["atlas.technique"] = [t.strip() for t in flat["atlas.technique"].split(",") if t.strip()]
        nested = unflatten_event(flat)
        nested["detector"] = dict(self.detector)
        if self.keep_unmapped_as_evidence:
            extra = {k: v for k, v in record.items() if k not in used and isinstance(v, str | int | float | bool)}
            nested.setdefault("evidence", {}).update(extra)
        return DetectionEvent.parse(nested)

    def convert(self, records: Iterable[tuple[str, Mapping[str, Any] | None, str | None]]
                ) -> Iterator[DetectionEvent | AdapterError]:
        """(raw, parsed record or None, parse error or None) → events, or AdapterErrors to quarantine."""
        for n, (raw, rec, err) in enumerate(records, start=1):
            if err is not None or rec is None:
                yield AdapterError(f"record {n}: {err or 'empty'}", raw)
                continue
            try:
                yield self.to_event(rec)
            except (EventValidationError, ValueError, OverflowError) as exc:  # e.g. epoch 1e30
                yield AdapterError(f"record {n}: {exc}", raw)


#: the longest CSV cell accepted (the csv module's default field limit); a longer one rejects its row
MAX_CSV_CELL = 128 * 1024


def _read_csv(text: str) -> list[tuple[str, dict | None, str | None]]:
    """CSV with a header row. The csv module would stop at its field limit in the middle of a quoted
    cell and go on parsing from there, out of step with the quoting (a cell holding line breaks then
    becomes many bogus rows): so the parse itself has no limit, and a row with a cell over
    ``MAX_CSV_CELL`` is rejected on its own afterwards."""
    out: list[tuple[str, dict | None, str | None]] = []
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, len(text) + 1))
    try:
        reader = csv.DictReader(io.StringIO(text))
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # malformed beyond the csv dialect: this row only
                out.append((f"(CSV line {reader.reader.line_num})", None, f"unreadable CSV row: {exc}"))
                continue
            raw = ",".join(str(v) for v in row.values())
            if None in row:  # more cells than header columns
                out.append((raw, None, "more cells than header columns"))
            elif any(isinstance(v, str) and len(v) > MAX_CSV_CELL for v in row.values()):
                out.append((raw, None, f"a CSV cell is longer than {MAX_CSV_CELL} characters"))
            else:
                out.append((raw, dict(row), None))
    finally:
        csv.field_size_limit(previous)
    return out


def read_records(text: str, fmt: str) -> list[tuple[str, dict | None, str | None]]:
    """JSON lines or CSV (header row) → (raw, record, error) per record."""
    out: list[tuple[str, dict | None, str | None]] = []
    if fmt == "csv":
        return _read_csv(text)
    for line in text.split("\n"):  # not splitlines(): U+2028 and friends are data inside JSON strings
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            out.append((line, None, f"not valid JSON: {exc}"))
            continue
        out.append((line, rec, None) if isinstance(rec, dict) else (line, None, "not a JSON object"))
    return out


def from_art_detector(result: Any, *, detector_name: str, stage: str = "symptom", attack: str = "evasion",
                      techniques: Sequence[str] = ("AML.T0015", "AML.T0043"), account: str | None = None,
                      model: str | None = None, time: datetime | None = None, score_key: str | None = None,
                      threshold: float | None = None, detector_version: str = "art-1.20") -> list[DetectionEvent]:
    """Events for the inputs an ART detector flagged. ``result`` is what ART's ``detect`` returns:
    ``(report, is_adversarial)`` — ``report`` an array of scores or a dict of arrays (``score_key``
    names the one to use). Inputs not flagged produce no event."""
    if not (isinstance(result, tuple) and len(result) == 2):
        raise AdapterError("an ART detector result is a (report, is_adversarial) tuple")
    report, flags = result
    flags = np.asarray(flags).reshape(len(flags), -1).any(axis=1) if np.ndim(flags) > 1 else np.asarray(flags, bool)
    if isinstance(report, Mapping):
        key = score_key or next(iter(report), None)
        scores = np.asarray(report.get(key)) if key is not None else None
    else:
        scores = np.asarray(report) if report is not None else None
    if scores is not None and scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]  # binary detectors (BinaryInputDetector): probability of "adversarial"
    elif scores is not None and scores.ndim > 1:
        scores = scores.max(axis=tuple(range(1, scores.ndim)))
    if scores is not None and len(scores) != len(flags):
        raise AdapterError(f"report has {len(scores)} scores for {len(flags)} inputs")
    t = time or datetime.now(UTC)
    events = []
    for i in np.flatnonzero(flags):
        score = float(scores[i]) if scores is not None else 1.0
        events.append(DetectionEvent.parse({
            "time": t.isoformat(), "stage": stage, "attack": attack,
            "detector": {"id": f"art.{detector_name}", "name": detector_name, "version": detector_version},
            "atlas": {"techniques": list(techniques)}, "subject": {"account": account},
            "target": {"model": model}, "score": score, "threshold": threshold,
            "evidence": {"input_index": int(i), "source": "adversarial-robustness-toolbox"}}))
    return events
