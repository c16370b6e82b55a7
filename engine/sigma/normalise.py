"""Events and field values as the Sigma evaluator reads them.

Both evaluators see an event as a flat dict of dotted field names (a DetectionEvent's flat form, or a
nested JSON object flattened), identify it by its id field (or a hash of its content) and place it in
time by its time field; field values are read as text, numbers and times the way Sigma compares them.
One module so the stream and batch evaluators cannot read an event two ways.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np


def normalise_event(event: Any) -> dict[str, Any]:
    """A DetectionEvent (its flat form), a flat dict, or a nested JSON object -> flat dict."""
    if type(event) is dict and _SCALAR_TYPES.issuperset(map(type, event.values())):
        return event  # already flat (the common case, checked in C)
    if isinstance(event, dict):
        for v in event.values():
            if isinstance(v, dict):
                return flatten_json(event)
        return event  # already flat: read, never modified
    from ..events import DetectionEvent  # imported once someone passes one (pydantic)

    if isinstance(event, DetectionEvent):
        return event.flat()
    if isinstance(event, Mapping):
        return normalise_event(dict(event))
    if isinstance(event, str | bytes):
        return normalise_event(json.loads(event))
    raise TypeError(f"an event must be a DetectionEvent or a JSON object, not {type(event).__name__}")


_SCALAR_TYPES = frozenset({str, int, float, bool, type(None), list})


def content_id(flat: Mapping[str, Any]) -> str:
    """A deterministic id for an event without one (hash of its canonical JSON)."""
    text = json.dumps(flat, sort_keys=True, default=str, separators=(",", ":"))
    return "ev-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def event_timestamp(value: Any) -> float | None:
    """An event's time field -> epoch seconds (rounded to the microsecond), or None if it has none."""
    when = as_datetime(value)
    return None if when is None else round(when.timestamp(), 6)


_EXACT_EPOCH = 2.0**33  # below this, microseconds since the epoch are exact in float64 (< 2**53)


def event_timestamps(values: list[Any]) -> list[float | None]:
    """:func:`event_timestamp` of every value: plain numbers in [0, 2**33) at once with numpy, by the
    arithmetic ``datetime.fromtimestamp`` does (the fraction's microseconds rounded half to even,
    then whole microseconds over 10**6), text once per distinct value, UTC datetimes directly,
    anything else one by one."""
    out: list[float | None] = [None] * len(values)
    numeric: list[int] = []
    parsed: dict[str, float | None] = {}
    for i, v in enumerate(values):
        t = type(v)
        if t is float or (t is int and -_EXACT_EPOCH < v < _EXACT_EPOCH):
            numeric.append(i)
        elif t is str:
            ts = parsed.get(v, _UNSEEN)
            if ts is _UNSEEN:
                ts = parsed[v] = event_timestamp(v)
            out[i] = ts
        elif t is datetime and v.tzinfo is UTC:  # a DetectionEvent's time: already UTC, nothing to convert
            out[i] = round(v.timestamp(), 6)
        elif v is not None:
            out[i] = event_timestamp(v)
    if numeric:
        x = np.array([values[i] for i in numeric], dtype=np.float64)
        exact = (x >= 0) & (x < _EXACT_EPOCH)
        whole = np.floor(np.where(exact, x, 0.0))
        micros = np.rint((np.where(exact, x, 0.0) - whole) * 1e6)
        carry = micros >= 1e6
        total = (whole + carry).astype(np.int64) * 1_000_000 + np.where(carry, micros - 1e6, micros).astype(np.int64)
        seconds = (total / 1e6).tolist()
        for j, (i, ok) in enumerate(zip(numeric, exact.tolist(), strict=True)):
            out[i] = seconds[j] if ok else event_timestamp(values[i])
    return out


_UNSEEN: Any = object()


def flatten_json(event: Mapping[str, Any], prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested JSON object -> flat dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``); lists are kept."""
    out = {} if out is None else out
    for key, value in event.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if value:
                flatten_json(value, name + ".", out)
            else:
                out[name] = value
        else:
            out[name] = value
    return out


def as_text(value: Any) -> str:
    """The text a string pattern is matched against (Sigma compares numbers by their text too)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


def as_number(value: Any) -> float | None:
    """A finite number from an int, float or numeric string; ``None`` otherwise (booleans too)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def as_datetime(value: Any) -> datetime | None:
    """An aware UTC datetime from a datetime, ISO 8601 text (``Z`` allowed) or epoch seconds."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    number = as_number(value)
    if number is not None:
        try:
            return datetime.fromtimestamp(number, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
