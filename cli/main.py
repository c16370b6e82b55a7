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
    "catalog_cmd",
]


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"kizashi.cli.{name}").register(app)


_register_all()


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
