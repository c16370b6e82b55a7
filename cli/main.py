"""``kizashi`` console script.

Each command group lives in its own module with a ``register(app)`` function; this file only
assembles them, so command modules stay independent of each other.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="kizashi",
    help="kizashi (兆し): see attacks on ML systems the way a SOC sees every other attack.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: command modules (kizashi.cli.<name>), each exposing register(app)
COMMAND_MODULES = [
    "catalog_cmd",  # catalog, atlas show, schema
    "rules_cmd",  # rules check|eval|export
    "store_cmd",  # ingest, serve, alerts, export, deliver
    "detect_cmd",  # scan-data, scan-model (and detector listing)
    "demo_cmd",  # demo
    "flink_cmd",  # flink run
    "sensor_cmd",  # sensor, detectors fit
]


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"kizashi.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"kizashi.cli.{name}":  # command module not written yet
                continue
            raise
        mod.register(app)


_register_all()


def main() -> None:  # console-script entry point
    # kizashi's own models are small (8x8 digits MLPs): multi-threaded BLAS makes them several
    # times slower, so the CLI runs single-threaded unless KIZASHI_THREADS says otherwise.
    import os

    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ.get("KIZASHI_THREADS", "1")))
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
