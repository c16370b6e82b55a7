"""``kizashi`` console script.

Each command group lives in its own module with a ``register(app)`` function; this file only
assembles them, so command modules stay independent of each other. :func:`main` is the one error
boundary: misuse (bad arguments, unreadable or malformed files, an unusable store, a port in use)
is answered with one ``error:`` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib

import typer
from kizashi.cli.errors import MISUSE, one_line

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
        importlib.import_module(f"kizashi.cli.{name}").register(app)


_register_all()


def _operator_errors() -> tuple[type[BaseException], ...]:
    """What an operator's mistake raises (as opposed to a bug in kizashi)."""
    import yaml
    from sqlalchemy.exc import ArgumentError, OperationalError

    return (OSError, ValueError, OverflowError, yaml.YAMLError, ArgumentError, OperationalError)


def main(argv: list[str] | None = None) -> None:  # console-script entry point
    """Run the CLI inside the error boundary; ``KIZASHI_DEBUG=1`` shows tracebacks instead."""
    # kizashi's own models are small (8x8 digits MLPs): multi-threaded BLAS makes them several
    # times slower, so the CLI runs single-threaded unless KIZASHI_THREADS says otherwise.
    import os
    import sys

    import typer._click as click  # noqa: PLC2701 - the click typer ships (echo only)
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ.get("KIZASHI_THREADS", "1")))
    if os.environ.get("KIZASHI_DEBUG"):
        app(args=argv)
        return
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # click's usage errors (exit 2) and other ClickExceptions
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        click.echo(f"error: {where}{one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except _operator_errors() as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(MISUSE)
    except Exception as exc:  # noqa: BLE001 - a bug: still one line; KIZASHI_DEBUG=1 shows where
        click.echo(f"error: internal error: {type(exc).__name__}: {one_line(exc)} "
                   "(rerun with KIZASHI_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
