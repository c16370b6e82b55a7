"""A fitted query-stream detector run one account (key) at a time: the account's detector state
goes in and out as bytes through the detector's own ``get_state``/``set_state``, so a stream engine
can keep it in keyed state (checkpointed, repartitioned with the key) and a sensor fleet can ship
raw query records instead of running detectors itself.

A query record is a JSON object: ``account`` (non-empty string), ``x`` (the input, numbers),
``time`` (ISO 8601 or epoch seconds), optional ``id``, ``prediction``, ``source_ip``, ``session``.
Events get a deterministic id (detector, account, query id or time, index), so a query replayed
after a restart yields the same event and the same alert ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from kizashi.engine.sigma.normalise import event_timestamp

__all__ = ["KeyedQueryDetector", "check_query"]


def check_query(query: Any) -> None:
    """Raise ValueError unless ``query`` is a well-formed query record."""
    if not isinstance(query, dict):
        raise ValueError(f"expected a JSON object, got {type(query).__name__}")
    account = query.get("account")
    if not isinstance(account, str) or not account:
        raise ValueError("account must be a non-empty string")
    x = query.get("x")
    if not isinstance(x, list) or not x or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in x):
        raise ValueError("x must be a non-empty list of numbers")
    if event_timestamp(query.get("time")) is None:
        raise ValueError("time is missing or not a time")


class KeyedQueryDetector:
    """``observe(account, state, query) -> (new state, flat DetectionEvents)`` for one fitted
    query-stream detector (any object with ``observe``, ``reset``, ``get_state``, ``set_state``)."""

    def __init__(self, detector: Any, *, id_field: str = "id", time_field: str = "time"):
        for attr in ("observe", "reset", "get_state", "set_state"):
            if not callable(getattr(detector, attr, None)):
                raise TypeError(f"{type(detector).__name__} is not a query-stream detector (no {attr}())")
        self.detector = detector
        self.id_field, self.time_field = id_field, time_field
        self.name = str(getattr(detector, "name", type(detector).__name__))

    def observe(self, account: str, state: bytes | None, query: Mapping[str, Any]) -> tuple[bytes, list[dict]]:
        from datetime import UTC, datetime

        det = self.detector
        det.reset()  # holds only this account: what get_state returns is this key's state
        if state is not None:
            det.set_state(state)
        when = datetime.fromtimestamp(event_timestamp(query["time"]), UTC)
        events = det.observe(query["x"], account=account, time=when, prediction=query.get("prediction"),
                             source_ip=query.get("source_ip"), session=query.get("session"))
        out = []
        for i, event in enumerate(events):
            ident = hashlib.sha256("\x00".join(
                [self.name, account, str(query.get("id") or query["time"]), str(i)]).encode()).hexdigest()[:32]
            flat = event.model_copy(update={"id": ident}).flat()
            flat[self.id_field], flat[self.time_field] = flat["id"], flat["time"]
            out.append(flat)
        return det.get_state(), out

    def event_time(self, event: Mapping[str, Any]) -> float | None:
        return event_timestamp(event.get(self.time_field))
