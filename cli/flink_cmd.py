"""``kizashi flink run``: the rules (and query-stream detectors) as an Apache Flink job.

Same flags and output lines as ``kizashi rules eval --mode stream``; the job runs in the PyFlink
environment (``.venv-flink``) as a child process (see :mod:`kizashi.scale.launch`, docs/scale.md).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from kizashi.cli.errors import fail
from kizashi.cli.rules_cmd import EventsOption, IdFieldOption, RuleFilesOption, TimeFieldOption
from kizashi.scale.launch import FlinkNotInstalled, read_lines, result_order, run_job

flink_app = typer.Typer(help="Run kizashi's rules as an Apache Flink job (PyFlink, local mode or a cluster).",
                        no_args_is_help=True)



@flink_app.command("run")
def run(
    events: EventsOption,
    rules: RuleFilesOption = None,
    id_field: IdFieldOption = "id",
    time_field: TimeFieldOption = "time",
    mode: Annotated[str, typer.Option(help="stream (the job streams; batch is `rules eval --mode batch`)")] = "stream",
    lateness: Annotated[float, typer.Option(help="seconds of out-of-order tolerance (the watermark's)")] = 0.0,
    parallelism: Annotated[int, typer.Option(help="Flink parallelism")] = 1,
    out: Annotated[Path | None, typer.Option(
        help="keep the job's output folder here (results-*.jsonl, quarantine/, detections/)")] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="checkpoint here (exactly-once output)")] = None,
    checkpoint_interval: Annotated[float, typer.Option(help="seconds between checkpoints")] = 2.0,
    restore: Annotated[Path | None, typer.Option(help="resume from this checkpoint (a chk-N folder)")] = None,
    max_rate: Annotated[float | None, typer.Option(help="replay the events at most this many per second")] = None,
    bundle_size: Annotated[int | None, typer.Option(
        help="records per Python bundle; 1 puts every timer registration in the next checkpoint, at a "
             "tenth of the throughput (docs/scale.md)")] = None,
    queries: Annotated[Path | None, typer.Option(help="raw query records (JSON lines) for --detector")] = None,
    detector: Annotated[Path | None, typer.Option(help="a fitted query-stream detector: the folder `kizashi detectors fit` wrote")] = None,
) -> None:
    """Evaluate rules over events in a Flink job; print one JSON line per result (sorted by time)."""
    if mode != "stream":
        fail(f"--mode must be stream for the Flink job, not {mode!r} (batch: kizashi rules eval --mode batch)")
    if parallelism < 1:
        fail("--parallelism must be >= 1")
    if bundle_size is not None and bundle_size < 1:
        fail("--bundle-size must be >= 1")
    if (queries is None) != (detector is None):
        fail("--queries and --detector go together")
    from kizashi.engine.sigma import RuleLoadError, RuleSet

    try:
        RuleSet.from_paths(rules) if rules else RuleSet.bundled()  # refuse bad rules before starting Java
    except RuleLoadError as exc:
        fail(str(exc))
    from kizashi.rules import bundled_rules_path

    work = Path(tempfile.mkdtemp(prefix="kizashi-flink-"))
    try:
        if str(events) == "-":
            events = work / "stdin.jsonl"
            events.write_bytes(sys.stdin.buffer.read())
        for path in [events, *([queries] if queries else [])]:
            if not path.is_file():
                fail(f"{path}: no such file")
        if detector is not None and not (detector / "detector.json").is_file():
            fail(f"{detector}: not a fitted detector folder (write one with `kizashi detectors fit`)")
        target = out or work / "out"
        args = ["--events", str(events), "--out", str(target), "--id-field", id_field, "--time-field", time_field,
                "--lateness", str(lateness), "--parallelism", str(parallelism)]
        for r in rules or [Path(bundled_rules_path())]:
            args += ["--rules", str(r)]
        if checkpoint_dir:
            args += ["--checkpoint-dir", str(checkpoint_dir), "--checkpoint-interval", str(checkpoint_interval)]
        if restore:
            args += ["--restore", str(restore)]
        if max_rate:
            args += ["--max-rate", str(max_rate)]
        if bundle_size:
            args += ["--bundle-size", str(bundle_size)]
        if queries:
            args += ["--queries", str(queries), "--detector", str(detector)]
        try:
            proc = run_job(args, capture_output=True, text=True)
        except FlinkNotInstalled as exc:
            fail(str(exc))
        if proc.returncode != 0:
            typer.echo(proc.stderr[-4000:] or proc.stdout[-4000:], err=True)
            fail(f"the Flink job failed (exit {proc.returncode})", 1)
        for line in sorted(read_lines(target), key=result_order):
            typer.echo(line)
        bad = read_lines(target / "quarantine", prefix="quarantine")
        for line in bad:
            typer.echo(f"quarantined: {json.loads(line)['reason']}", err=True)
        if bad:
            fail(f"{len(bad)} record(s) quarantined")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def register(app: typer.Typer) -> None:
    app.add_typer(flink_app, name="flink")
