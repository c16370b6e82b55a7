"""Reference detectors for the seed's Table 1 methods and its two simple monitors.

``create(name, **params)`` builds a detector from the registry; each detector is of one kind
(stream, input, dataset, model; :mod:`kizashi.detectors.base`) and declares what it ``needs``; every module in this package
registers its detectors with :func:`kizashi.detectors.base.register` and is imported on first use.
Detectors depend on the engine's event model, never on connectors.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from .base import (
    KINDS,
    REGISTRY,
    DatasetDetector,
    Detector,
    InputDetector,
    ModelDetector,
    Need,
    Needs,
    Report,
    StreamDetector,
    register,
)

__all__ = ["KINDS", "REGISTRY", "DatasetDetector", "Detector", "InputDetector", "ModelDetector", "Need", "Needs",
           "Report", "StreamDetector", "available", "create", "get", "register"]

_loaded = False


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_") and mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")
    _loaded = True


def available() -> list[str]:
    """Registered detector names."""
    _load_all()
    return sorted(REGISTRY)


def get(name: str) -> type[Detector]:
    _load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; available: {', '.join(sorted(REGISTRY))}") from None


def create(name: str, **params: Any) -> Detector:
    """Build detector ``name`` with constructor ``params`` (unknown parameters are an error)."""
    cls = get(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for detector {name!r}: {exc}") from None
