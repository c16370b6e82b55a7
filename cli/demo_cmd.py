"""``kizashi demo``: the command; the run itself lives in :mod:`.demo_run` (imported when the command runs,
so ``kizashi --help`` does not load the simulated world, ART or the detectors)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    out: Annotated[Path, typer.Option("--out", help="output directory")] = Path("kizashi-demo"),
    seed: Annotated[int, typer.Option(help="random seed (the run is deterministic for a seed)")] = 0,
    db: Annotated[str | None, typer.Option("--db", help="store URL (default: a SQLite file in --out)")] = None,
    benign_accounts: Annotated[int, typer.Option("--benign-accounts", "--benign", help="number of benign accounts")] = 60,
    quick: Annotated[bool, typer.Option("--quick", help="a smaller day: 20 benign accounts")] = False,
) -> None:
    """Real attacks on a real model, caught by kizashi, end to end (about 20 s on two cores)."""
    if benign_accounts < 1:
        typer.echo("error: --benign-accounts must be at least 1", err=True)
        raise typer.Exit(2)
    if quick:
        benign_accounts = min(benign_accounts, 20)
    from rich.console import Console
    from rich.table import Table

    from .demo_run import run_demo

    console = Console(stderr=True)
    with console.status("starting") as status:
        summary = run_demo(out, seed=seed, db=db, n_benign=benign_accounts,
                           progress=lambda name: status.update(f"[bold]{name}"))
    t = Table(title=f"kizashi demo — {summary['queries']} queries, {summary['events']} events, "
                    f"{summary['alerts']} alerts ({summary['correlated_alerts']} correlated)")
    for col in ("campaign", "detected", "first precursor", "correlated alert", "succeeded before alert", "ATLAS"):
        t.add_column(col)
    for key, c in summary["campaigns"].items():
        t.add_row(f"{key}: {c['name']}", "yes" if c["detected"] else "NO",
                  f"{(c['first_precursor_time'] or '-')[11:19]} ({c['first_precursor_detector'] or '-'})",
                  f"{(c['correlated_alert_time'] or '-')[11:19]} after {c['correlated_alert_query_count']} queries",
                  f"{c['succeeded_before_correlated_alert']}/{c['attack_inputs_succeeded']}",
                  " ".join(c["techniques_in_alert"]))
    console.print(t)
    b = summary["benign"]
    console.print(f"benign accounts: {b['accounts_with_any_event']} with any event, "
                  f"{len(b['accounts_in_correlated_alerts'])} in a correlated alert, "
                  f"{summary['soc']['benign_accounts_in_delivered_alerts']} in a delivered alert")
    console.print(f"delivered to the SOC: {summary['soc']['delivered_alerts']} alerts; "
                  f"{summary['observations']} risk observations kept")
    console.print(f"outputs in {out}/ (report.html, summary.json, events.jsonl, alerts.jsonl, stix-bundle.json, "
                  f"navigator-layer.json, alerts.cef, observations.jsonl) — {summary['wall_time_s']} s")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
