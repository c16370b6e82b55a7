"""kizashi's engine: the event model, the Sigma rule engine and the event store.

The engine depends on neither detectors nor connectors.
"""

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
