"""``kizashi rules check|eval|export``: validate, evaluate and convert Sigma rules."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from kizashi.cli.errors import fail
from kizashi.cli.tuning import tune_gc
from kizashi.engine.jsontext import loads  # one JSON text as json.loads reads it, faster
from kizashi.engine.sigma.targets import TARGETS

if TYPE_CHECKING:
    from kizashi.engine.sigma import RuleSet

rules_app = typer.Typer(help="Sigma rules: check, evaluate over events, export to SIEM queries.", no_args_is_help=True)



def _load(paths: list[Path] | None) -> RuleSet:
    from kizashi.engine.sigma import RuleLoadError, RuleSet

    try:
        return RuleSet.from_paths(paths) if paths else RuleSet.bundled()
    except RuleLoadError as exc:
        fail(str(exc))
        raise  # unreachable


@rules_app.command("check")
def check(
    paths: Annotated[list[Path] | None, typer.Argument(help="rule files or folders (default: the bundled pack)")] = None,
    strict: Annotated[bool, typer.Option(help="also require level, falsepositives and an ATLAS tag")] = True,
) -> None:
    """Parse every rule (pySigma + kizashi's evaluator) and validate ATLAS tags offline."""
    from kizashi.engine.sigma import check_atlas_tags

    rs = _load(paths)
    problems: list[str] = []
    for rule in rs.collection.rules:
        label = f"{rule.name or rule.id or rule.title}"
        tags = [f"{t.namespace}.{t.name}" for t in rule.tags]
        problems += [f"{label}: {p}" for p in check_atlas_tags(tags)]
        if strict:
            if not any(t.lower().startswith("atlas.") for t in tags):
                problems.append(f"{label}: no ATLAS tag (atlas.aml.tXXXX)")
            if rule.level is None:
                problems.append(f"{label}: no level")
            if not rule.falsepositives:
                problems.append(f"{label}: no falsepositives")
    for p in problems:
        typer.echo(p, err=True)
    n_corr = len(rs.correlation_rules)
    if problems:
        fail(f"{len(problems)} problem(s) in {len(rs)} rules", 1)
    typer.echo(f"ok: {len(rs) - n_corr} detection rules, {n_corr} correlation rules")


# the flags `rules eval` shares with `flink run` (same flags, same output lines)
EventsOption = Annotated[Path, typer.Option("--events", help="JSON lines file of events ('-' for stdin)")]
RuleFilesOption = Annotated[list[Path] | None, typer.Option("--rules", help="rule file or folder (repeatable)")]
IdFieldOption = Annotated[str, typer.Option("--id-field", help="field holding the event id")]
TimeFieldOption = Annotated[str, typer.Option("--time-field", help="field holding the event time (ISO 8601 or epoch s)")]


@rules_app.command("eval")
def eval_(
    events: EventsOption,
    rules: RuleFilesOption = None,
    id_field: IdFieldOption = "id",
    time_field: TimeFieldOption = "time",
    mode: Annotated[str, typer.Option(help="stream | batch")] = "stream",
    lateness: Annotated[float, typer.Option(help="stream mode: seconds of out-of-order tolerance")] = 0.0,
    batch_events: Annotated[int, typer.Option(help="stream mode: events per micro-batch (at most)")] = 1024,
    batch_ms: Annotated[float, typer.Option(help="stream mode: milliseconds per micro-batch (at most)")] = 100.0,
) -> None:
    """Evaluate rules over events; print one JSON line per result."""
    if mode not in ("stream", "batch"):
        fail(f"--mode must be stream or batch, not {mode!r}")
    if batch_events < 1 or batch_ms < 0:
        fail("--batch-events must be at least 1 and --batch-ms not negative")
    rs = _load(rules)
    stream = sys.stdin if str(events) == "-" else None
    if stream is None and not events.is_file():
        fail(f"{events}: no such file")
    handle = stream or events.open(encoding="utf-8")

    def read():
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                obj = loads(line)
            except ValueError as exc:
                fail(f"{events}:{n}: not valid JSON: {exc}")
            if not isinstance(obj, dict):
                fail(f"{events}:{n}: expected a JSON object, got {type(obj).__name__}")
            yield obj

    out = sys.stdout
    events_in = read()
    restore_gc = tune_gc()
    try:
        if mode == "batch":
            for r in rs.evaluate_batch(list(events_in), id_field=id_field, time_field=time_field):
                out.write(r.to_json() + "\n")
        else:
            ev = rs.microbatch(lateness=timedelta(seconds=lateness), id_field=id_field, time_field=time_field,
                               max_events=batch_events, max_ms=batch_ms)
            # a file is read a batch's worth at a time; stdin event by event (a live source may pause)
            chunks = iter(lambda: list(islice(events_in, batch_events)), []) if stream is None else (
                [obj] for obj in events_in)
            for chunk in chunks:
                results = ev.push_many(chunk)
                if results:
                    out.write("".join(r.to_json() + "\n" for r in results))
                    out.flush()
            out.write("".join(r.to_json() + "\n" for r in ev.flush()))
    finally:
        out.flush()
        restore_gc()
        if stream is None:
            handle.close()


@rules_app.command("export")
def export_(
    target: Annotated[str, typer.Option("--target", help=" | ".join(TARGETS))],
    rules: Annotated[list[Path] | None, typer.Option("--rules", help="rule file or folder (repeatable)")] = None,
    format: Annotated[str, typer.Option("--format", help="text | json")] = "text",
) -> None:
    """Convert rules to SIEM queries (pySigma backends + a kizashi field pipeline; ECS for Elastic)."""
    if target not in TARGETS:
        fail(f"--target must be one of {', '.join(TARGETS)}, not {target!r}")
    from kizashi.engine.sigma.export import ExportError, export

    rs = _load(rules)  # validates everything first
    texts = _texts(rules)
    try:
        queries = export(texts, target)
    except ExportError as exc:
        fail(str(exc))
    del rs
    if format == "json":
        for q in queries:
            typer.echo(json.dumps({"rule": q.rule_id, "name": q.name, "title": q.title, "kind": q.kind,
                                   "producer": q.producer, "query": q.query, "note": q.note}))
        return
    for q in queries:
        if q.producer == "none":
            typer.echo(f"# {q.name or q.rule_id}: skipped: {q.note}", err=True)
            continue
        typer.echo(f"# {q.title} ({q.name or q.rule_id}; {q.kind}; {q.producer})")
        typer.echo(q.query)
        typer.echo("")


def _texts(paths: list[Path] | None) -> list[str]:
    from kizashi.rules import bundled_rules_path

    out = []
    for p in paths or [bundled_rules_path()]:
        p = Path(p)
        files = sorted([*p.rglob("*.yml"), *p.rglob("*.yaml")]) if p.is_dir() else [p]
        out += [f.read_text(encoding="utf-8") for f in files]
    return out


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")
