"""How every ``kizashi`` command reports misuse: one ``error:`` line (whitespace folded, so a message
with line breaks cannot become several lines or spoof one) and an exit status, 2 unless said."""

from __future__ import annotations

import typer

#: exit status of a misused command (as click's usage errors)
MISUSE = 2


def one_line(exc: BaseException | str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 500 else text[:500] + "..."


def fail(msg: str, code: int = MISUSE) -> None:
    typer.echo(f"error: {one_line(msg)}", err=True)
    raise typer.Exit(code)
