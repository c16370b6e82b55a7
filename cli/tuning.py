"""Process settings for kizashi's long-running commands (ingest, serve, sensor, rules eval)."""

from __future__ import annotations

from collections.abc import Callable


def tune_gc() -> Callable[[], None]:
    """For a long run: what is loaded so far (rules, catalogues, the store) leaves the collector's view
    (``gc.freeze``), and collections run less often. Correlation windows and pydantic models make many
    small objects that live for a while; with CPython's default thresholds (700, 10, 10) the collector
    rescans them again and again, about a quarter of ``rules eval`` and 40 % of ``ingest`` (docs/rules.md,
    docs/store.md). Returns the function that restores the settings."""
    import gc

    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)

    def restore() -> None:
        gc.set_threshold(*before)
        gc.unfreeze()

    return restore
