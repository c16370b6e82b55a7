"""kizashi's engine: the event model, the Sigma rule engine and the event store.

The engine depends on neither detectors nor connectors.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import (
        SCHEMA_VERSION,
        Alert,
        AtlasTags,
        DataUsed,
        DetectionEvent,
        DetectorInfo,
        EventValidationError,
        RuleRef,
        Subject,
        Target,
        deterministic_alert_id,
        flatten_event,
        unflatten_event,
    )

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "AtlasTags",
    "DataUsed",
    "DetectionEvent",
    "DetectorInfo",
    "EventValidationError",
    "RuleRef",
    "Subject",
    "Target",
    "deterministic_alert_id",
    "flatten_event",
    "unflatten_event",
]


def __getattr__(name: str):
    """The event model, imported on first use (pydantic is not needed by every command)."""
    if name in __all__:
        from . import events

        return getattr(events, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
