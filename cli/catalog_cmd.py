"""``kizashi catalog``, ``kizashi atlas show``, ``kizashi schema``: the taxonomy and Table 1 as a tool."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from kizashi.cli.errors import fail

MARK_GLYPH = {"target": "●", "needed": "□", None: ""}



def catalog(
    stage: Annotated[str | None, typer.Option(help="precursor | symptom")] = None,
    attack: Annotated[str | None, typer.Option(help="evasion | poisoning | extraction")] = None,
    technique: Annotated[str | None, typer.Option(help="ATLAS technique ID (sub-techniques included)")] = None,
    have: Annotated[
        str | None,
        typer.Option(help="comma list of training-data,model,input,output: only methods whose every "
                          "marked data source (● and □) you have"),
    ] = None,
    format: Annotated[str, typer.Option("--format", help="table | json")] = "table",
    atlas_yaml: Annotated[str | None, typer.Option(help="read a newer ATLAS.yaml instead of the bundled 5.6.0")] = None,
) -> None:
    """Detection methods of the seed's Table 1 (plus the two simple monitors), filtered."""
    from kizashi.mappings import load_atlas, load_catalogue
    from kizashi.mappings.catalogue import ATTACKS, DATA_SOURCES, STAGES, parse_have
    from rich.console import Console
    from rich.table import Table

    if stage is not None and stage not in STAGES:
        fail(f"--stage must be one of {', '.join(STAGES)}, not {stage!r}")
    if attack is not None and attack not in ATTACKS:
        fail(f"--attack must be one of {', '.join(ATTACKS)}, not {attack!r}")
    if format not in ("table", "json"):
        fail(f"--format must be table or json, not {format!r}")
    atlas = load_atlas(atlas_yaml)
    if technique is not None and not atlas.has_technique(technique):
        fail(f"unknown ATLAS technique {technique!r} (ATLAS {atlas.version})")
    try:
        have_set = parse_have(have) if have is not None else None
    except ValueError as exc:
        fail(str(exc))
    cat = load_catalogue()
    methods = cat.select(stage=stage, attack=attack,
                         technique=atlas.resolve(technique) if technique else None, have=have_set)
    if format == "json":
        typer.echo(json.dumps([m.to_dict() for m in methods], ensure_ascii=False, indent=2))
        return
    t = Table(title=f"kizashi detection catalogue ({len(methods)} of {len(cat)} methods)")
    for col in ("id", "ref", "stage", "attack", "train", "model", "input", "output", "ATLAS", "detector"):
        t.add_column(col)
    for m in methods:
        t.add_row(m.id, f"[{m.ref}]" if m.ref else "-", m.stage, m.attack,
                  *(MARK_GLYPH[m.data[k]] for k in DATA_SOURCES), " ".join(m.atlas), m.implemented_by or "-")
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
        console = Console(width=200)
    console.print(t)
    typer.echo("● analysed for traces of attack (keep with time and account)   □ needed to detect")


atlas_app = typer.Typer(help="MITRE ATLAS techniques and tactics (bundled 5.6.0 or --atlas-yaml).",
                        no_args_is_help=True)


@atlas_app.command("show")
def atlas_show(
    id: Annotated[str, typer.Argument(help="technique (AML.T0043.001) or tactic (AML.TA0001) ID")],
    format: Annotated[str, typer.Option("--format", help="text | json")] = "text",
    atlas_yaml: Annotated[str | None, typer.Option(help="read a newer ATLAS.yaml")] = None,
) -> None:
    """Name, tactics, parent, sub-techniques and the catalogue methods that evidence an ID."""
    from kizashi.mappings import load_atlas, load_catalogue

    atlas = load_atlas(atlas_yaml)
    if atlas.has_tactic(id):
        tac = atlas.tactic(id)
        techs = [t for t in atlas.techniques.values() if id in t.tactics and not t.parent]
        out = {"id": tac.id, "type": "tactic", "name": tac.name, "shortname": tac.shortname,
               "techniques": [{"id": t.id, "name": t.name} for t in techs]}
    elif atlas.has_technique(id):
        rid = atlas.resolve(id)
        t = atlas.technique(rid)
        methods = [m for m in load_catalogue() if any(x == rid or x.startswith(rid + ".") for x in m.atlas)]
        out = {
            "id": t.id,
            "type": "sub-technique" if t.parent else "technique",
            "name": t.name,
            "display_name": atlas.display_name(t.id),
            "retired_id": id if id != rid else None,
            "tactics": [{"id": x, "name": atlas.tactic(x).name} for x in t.tactics],
            "parent": ({"id": t.parent, "name": atlas.technique(t.parent).name} if t.parent else None),
            "subtechniques": [{"id": s.id, "name": s.name} for s in atlas.subtechniques(t.id)],
            "methods": [{"id": m.id, "ref": m.ref, "implemented_by": m.implemented_by} for m in methods],
            "atlas_version": atlas.version,
        }
    else:
        fail(f"unknown ATLAS ID {id!r} (ATLAS {atlas.version})")
    if format == "json":
        typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    typer.echo(f"{out['id']}  {out.get('display_name', out['name'])}  ({out['type']})")
    if out["type"] == "tactic":
        for t in out["techniques"]:
            typer.echo(f"  {t['id']}  {t['name']}")
        return
    if out["retired_id"]:
        typer.echo(f"  (retired ID {out['retired_id']} now maps here)")
    typer.echo("  tactics: " + ", ".join(f"{x['id']} {x['name']}" for x in out["tactics"]))
    if out["parent"]:
        typer.echo(f"  parent: {out['parent']['id']} {out['parent']['name']}")
    for s in out["subtechniques"]:
        typer.echo(f"  sub-technique: {s['id']} {s['name']}")
    for m in out["methods"]:
        ref = f"[{m['ref']}]" if m["ref"] else "monitor"
        typer.echo(f"  evidenced by: {m['id']} {ref} -> {m['implemented_by'] or 'not implemented'}")


def schema(
    kind: Annotated[str, typer.Argument(help="event | alert")] = "event",
) -> None:
    """Print the JSON Schema of kizashi events (or alerts)."""
    from kizashi.engine.events import alert_json_schema, event_json_schema

    if kind not in ("event", "alert"):
        fail(f"kind must be event or alert, not {kind!r}")
    typer.echo(json.dumps(event_json_schema() if kind == "event" else alert_json_schema(), indent=2))


def register(app: typer.Typer) -> None:
    app.command("catalog")(catalog)
    app.command("schema")(schema)
    app.add_typer(atlas_app, name="atlas")
