"""``kizashi ingest | serve | alerts | export``: the store, the pipeline and the SOC formats."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from kizashi.cli.errors import fail
from kizashi.cli.tuning import tune_gc
from kizashi.connectors.registry import FORMATTERS

if TYPE_CHECKING:
    from kizashi.engine.alerting import AlertingConfig
    from kizashi.engine.pipeline import Pipeline, TimeBounds
    from kizashi.engine.sigma import RuleSet
    from kizashi.engine.store import Store

DbOption = Annotated[str | None, typer.Option("--db", help="database URL (default $KIZASHI_DB or sqlite:///kizashi.db)")]
RulesOption = Annotated[list[str] | None, typer.Option("--rules", help="Sigma rule files/folders (default: bundled pack)")]
#: the engine's default (engine.pipeline.DEFAULT_MAX_SKEW; not imported here so the CLI starts fast)
DEFAULT_MAX_SKEW_SECONDS = 300.0
MaxSkewOption = Annotated[float, typer.Option(
    "--max-skew", min=0, help="seconds an event time may be ahead of this host's clock; later events are "
                              "quarantined (they would move the correlation watermark)")]
FloorOption = Annotated[str, typer.Option("--time-floor", help="earliest event time accepted (ISO 8601)")]


def _time_bounds(max_skew: float, floor: str) -> TimeBounds:
    from kizashi.engine.pipeline import TimeBounds

    try:
        t = datetime.fromisoformat(floor.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{floor!r} is not an ISO 8601 time", param_hint="--time-floor") from None
    return TimeBounds(max_skew=timedelta(seconds=max_skew), floor=t if t.tzinfo else t.replace(tzinfo=UTC))


def _choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=option)



AlertingOption = Annotated[str | None, typer.Option(
    "--alerting", help="alerting config TOML: which rules alert, entity risk, suppression "
                       "(default: the bundled pack's SOC defaults with the bundled pack, plain Sigma with --rules)")]


def _ruleset(rules: list[str] | None) -> RuleSet:
    from kizashi.engine.sigma import RuleSet

    return RuleSet.from_paths(rules) if rules else RuleSet.bundled()


def _store(db: str | None):
    from kizashi.engine.store import Store, default_db_url  # SQLAlchemy: only for the commands that use it

    return Store(db or default_db_url())


def _alerting(rules: list[str] | None, path: str | None = None) -> AlertingConfig:
    from kizashi.engine.alerting import AlertingConfig

    if path is not None:
        try:
            return AlertingConfig.from_file(path)
        except (OSError, ValueError, TypeError) as exc:  # tomllib.TOMLDecodeError is a ValueError
            fail(f"--alerting {path}: {exc}")
    return AlertingConfig() if rules else AlertingConfig.bundled()


def parse_since(value: str | None) -> datetime | None:
    """ISO 8601 time, or a relative span like ``24h``, ``7d``, ``30m``."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--since {value!r}: expected ISO 8601 or a span like 24h, 7d")
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def ingest(
    source: Annotated[str, typer.Argument(help="JSON-lines file of kizashi events, or - for stdin")],
    db: DbOption = None,
    rules: RulesOption = None,
    sink: Annotated[list[str] | None, typer.Option("--sink", help="outbox sink names to queue alerts for")] = None,
    batch_size: Annotated[int, typer.Option(help="events per transaction")] = 500,
    mapping: Annotated[str | None, typer.Option(help="YAML field mapping for third-party JSON/CSV records")] = None,
    input_format: Annotated[str, typer.Option("--format", help="jsonl | csv (with --mapping)")] = "jsonl",
    max_skew: MaxSkewOption = DEFAULT_MAX_SKEW_SECONDS,
    time_floor: FloorOption = "2000-01-01T00:00:00Z",
    alerting: AlertingOption = None,
) -> None:
    """Store events (idempotent on id), evaluate the rules, store alerts and risk observations;
    bad lines are quarantined."""
    _choice("--format", input_format, ("jsonl", "csv") if mapping else ("jsonl",))
    if source != "-" and os.path.isdir(source):
        fail(f"{source} is a directory: give a JSON-lines file, or - for stdin")
    bounds = _time_bounds(max_skew, time_floor)
    store = _store(db)
    from kizashi.engine.pipeline import Pipeline

    pipe = Pipeline(store, _ruleset(rules), sinks=sink or [], time_bounds=bounds,
                    alerting=_alerting(rules, alerting))
    if mapping is not None:
        _ingest_mapped(pipe, source, mapping, input_format)
        return
    if source != "-" and not os.path.exists(source):
        fail(f"no such file: {source}")
    restore_gc = tune_gc()
    try:
        if source == "-":
            result = pipe.ingest_lines(sys.stdin, source="stdin", batch_size=batch_size)
        else:
            with open(source, encoding="utf-8", errors="replace") as fh:
                result = pipe.ingest_lines(fh, source=source, batch_size=batch_size)
    finally:
        restore_gc()
    summary = result.summary()
    summary["recovered_alerts"] = len(pipe.recovered_alerts)
    typer.echo(json.dumps(summary))


def _ingest_mapped(pipe: Pipeline, source: str, mapping: str, fmt: str) -> None:
    import yaml
    from kizashi.connectors.adapters import AdapterError, FieldMapping, read_records

    if fmt not in ("jsonl", "csv"):
        fail(f"--format must be jsonl or csv, not {fmt!r}")
    try:
        fm = FieldMapping.from_yaml(open(mapping, encoding="utf-8").read())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        fail(f"mapping {mapping}: {exc}")
    if source == "-":
        text = sys.stdin.read()
    elif os.path.exists(source):
        text = open(source, encoding="utf-8", errors="replace").read()
    else:
        fail(f"no such file: {source}")
    events, rejects = [], []
    for item in fm.convert(read_records(text, fmt)):
        if isinstance(item, AdapterError):
            rejects.append((item.raw, str(item)))
        else:
            events.append(item)
    pipe.store.quarantine_many(rejects, source=source)
    result = pipe.ingest(events, source=source)
    summary = result.summary()
    summary["quarantined"] += len(rejects)
    typer.echo(json.dumps(summary))


def serve(
    db: DbOption = None,
    rules: RulesOption = None,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port", min=0, max=65535)] = 8787,
    token_env: Annotated[str, typer.Option(help="environment variable holding the bearer token")] = "KIZASHI_TOKEN",
    max_body: Annotated[int, typer.Option(help="maximum request body in bytes")] = 10 * 1024 * 1024,
    max_records: Annotated[int, typer.Option(help="maximum records per request")] = 10_000,
    header_timeout: Annotated[float, typer.Option(help="seconds for a request's line and headers")] = 10.0,
    body_timeout: Annotated[float, typer.Option(help="seconds for a request's body")] = 30.0,
) -> None:
    """HTTP ingest endpoint: POST /events (JSON object, array or JSON lines)."""
    from kizashi.connectors.http_ingest import IngestApp
    from kizashi.sensor.asgi import Limits, bind, run

    if not 0 < port < 65536:
        fail(f"--port {port} is out of range")
    token = os.environ.get(token_env)
    if token is not None and not token.strip():
        fail(f"${token_env} is set but empty: set a token, or unset it to run without auth on loopback")
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        fail(f"refusing to listen on {host} without a token: set ${token_env}")
    if max_body < 1 or max_records < 1 or header_timeout <= 0 or body_timeout <= 0:
        fail("--max-body, --max-records and the timeouts must be positive")
    store = _store(db)
    from kizashi.engine.pipeline import Pipeline

    pipe = Pipeline(store, _ruleset(rules), alerting=_alerting(rules))
    app = IngestApp(lambda evs: pipe.ingest(evs).summary(),
                    lambda rejects: store.quarantine_many(rejects, source="http"),
                    token=token, max_records=max_records)
    try:
        sock = bind(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    h, p = sock.getsockname()[:2]
    typer.echo(json.dumps({"listening": f"http://{h}:{p}/events", "auth": token is not None}), err=True)
    limits = Limits(header_timeout=header_timeout, body_timeout=body_timeout, max_body=max_body,
                    request_timeout=body_timeout + 120)
    restore_gc = tune_gc()
    try:
        run(app, sock, limits)
    finally:
        restore_gc()


def terminal_text(value: str):
    """``value`` as a rich Text that is never parsed as markup, with control characters (terminal
    escapes, bidi overrides, line breaks) shown as ``\\x..`` escapes."""
    import unicodedata

    from rich.text import Text

    return Text("".join(ch if unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp") else
                        ch.encode("unicode_escape").decode("ascii") for ch in value))


alerts_app = typer.Typer(help="Alerts in the store.", no_args_is_help=True)


@alerts_app.command("list")
def alerts_list(
    db: DbOption = None,
    since: Annotated[str | None, typer.Option(help="ISO time or span (24h, 7d)")] = None,
    format: Annotated[str, typer.Option("--format", help="table | json")] = "table",
    correlated: Annotated[bool, typer.Option(help="only correlation alerts")] = False,
    observations: Annotated[bool, typer.Option("--observations", help="the risk observations (rule results "
                                               "that are not alerts, every detection match) instead")] = False,
) -> None:
    """List alerts (oldest first), or with --observations the risk observations."""
    _choice("--format", format, ("table", "json"))
    if observations:
        _list_observations(_store(db), parse_since(since), format)
        return
    alerts = _store(db).list_alerts(since=parse_since(since))
    if correlated:
        alerts = [a for a in alerts if a.rule.type == "correlation"]
    if format == "json":
        for a in alerts:
            typer.echo(a.to_json())
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{len(alerts)} alert(s)")
    for col in ("first seen", "level", "rule", "group", "events", "ATLAS"):
        t.add_column(col)
    for a in alerts:  # attacker-controlled values (the group's account id) are shown as data, never as markup
        t.add_row(*(terminal_text(c) for c in (
            a.first_seen.strftime("%Y-%m-%d %H:%M:%S"), a.level, a.rule.title or a.rule.name or a.rule.id,
            ", ".join(f"{k}={v}" for k, v in a.group.items()), str(a.count), " ".join(a.atlas.techniques))))
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(t)


def _list_observations(store: Store, since: datetime | None, format: str) -> None:
    rows = store.list_observations(since=since)
    if format == "json":
        for o in rows:
            typer.echo(json.dumps(o, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{len(rows)} observation(s)")
    for col in ("time", "level", "rule", "entities", "risk", "events"):
        t.add_column(col)
    for o in rows:
        t.add_row(str(o.get("time") or o.get("last_seen") or "")[:19].replace("T", " "), o["level"],
                  o.get("name") or o["rule"], ", ".join(f"{k}={v}" for k, v in o["entities"].items()),
                  f"{o['risk']:g}", str(len(o["event_ids"])))
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(t)


@alerts_app.command("risk-rules")
def alerts_risk_rules(alerting: AlertingOption = None) -> None:
    """The entity-risk thresholds as Sigma correlation rules (value_sum / value_count over risk
    records), as the pipeline evaluates them."""
    from kizashi.engine.risk import risk_rules_yaml

    typer.echo(risk_rules_yaml(_alerting(None, alerting)), nl=False)


@alerts_app.command("show")
def alerts_show(alert_id: str, db: DbOption = None) -> None:
    """One alert with its chain of events (JSON)."""
    store = _store(db)
    a = store.get_alert(alert_id)
    if a is None:
        fail(f"no alert with id {alert_id!r}")
    events = store.get_events(a.event_ids)
    out = a.to_dict()
    out["events"] = [events[i].to_dict() for i in a.event_ids if i in events]
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False))


def export(
    fmt: Annotated[str, typer.Argument(help=f"{' | '.join(FORMATTERS)} (alerts = kizashi JSON lines)")],
    db: DbOption = None,
    since: Annotated[str | None, typer.Option(help="ISO time or span (24h, 7d)")] = None,
    out: Annotated[str | None, typer.Option("--out", help="output file (default stdout)")] = None,
    rules: RulesOption = None,
) -> None:
    """Export stored alerts in a SOC format."""
    if fmt not in FORMATTERS:
        fail(f"format must be one of {', '.join(FORMATTERS)}, not {fmt!r}")
    store = _store(db)
    alerts = store.list_alerts(since=parse_since(since))
    events = store.get_events(eid for a in alerts for eid in a.event_ids)
    text = render(fmt, alerts, events, _ruleset(rules))
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        typer.echo(text, nl=not text.endswith("\n"))


def render(fmt: str, alerts, events, ruleset: RuleSet | None = None) -> str:
    """Render alerts with the registered formatter ``fmt`` (STIX indicators carry the rules' text)."""
    try:
        from kizashi.connectors.registry import formatter

        f = formatter(fmt, ruleset=ruleset)
    except ImportError as exc:
        fail(f"the {fmt} connector is not available in this build: {exc}")
    return f.render(alerts, events)


def deliver_cmd(
    sinks: Annotated[str, typer.Option("--sinks", help="sinks YAML file (secrets as ${ENV_VAR})")],
    db: DbOption = None,
    batch_size: Annotated[int, typer.Option(help="alerts per request")] = 100,
) -> None:
    """Drain the outbox: send every pending alert to every configured sink (retries with backoff)."""
    from kizashi.connectors.config import load_sinks
    from kizashi.connectors.outbox import deliver

    try:
        configured = load_sinks(sinks)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    store = _store(db)
    try:
        report = deliver(store, configured, batch_size=batch_size)
    finally:
        for s in configured:
            s.close()
    typer.echo(json.dumps(report.to_dict()))
    if report.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("serve")(serve)
    app.command("export")(export)
    app.command("deliver")(deliver_cmd)
    app.add_typer(alerts_app, name="alerts")
