"""CLI: catalog, atlas show, schema (in-process through Typer's runner)."""

from __future__ import annotations

import json

from kizashi.cli.main import app
from typer.testing import CliRunner

runner = CliRunner()


def run(*args):
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_catalog_have_input_json():
    code, out, _ = run("catalog", "--have", "input", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert {r["id"] for r in rows} == {"juuti2019-prada", "monitor-query-rate"}
    for r in rows:
        assert set(r) >= {"id", "ref", "stage", "attack", "data", "atlas", "implemented_by"}
        assert set(r["data"]) == {"training_data", "model", "input", "output"}
        assert all(v in ("target", "needed", None) for v in r["data"].values())


def test_catalog_filters_compose():
    code, out, _ = run("catalog", "--stage", "precursor", "--attack", "poisoning", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert sorted(r["ref"] for r in rows if r["ref"] is not None) == [18, 19, 20, 21, 22, 23]
    assert all(r["stage"] == "precursor" and r["attack"] == "poisoning" for r in rows)
    code, out, _ = run("catalog", "--technique", "AML.T0043.004", "--format", "json")
    rows = json.loads(out)
    assert [r["ref"] for r in rows if r["in_table1"]] == [34]
    assert {r["id"] for r in rows if not r["in_table1"]} == {"gao2019-strip"}


def test_catalog_table_and_errors():
    code, out, _ = run("catalog")
    assert code == 0 and "Table" not in out and "●" in out
    code, _, err = run("catalog", "--stage", "later")
    assert code == 2 and "--stage must be one of precursor, symptom" in err
    code, _, err = run("catalog", "--have", "input,gpu")
    assert code == 2 and "unknown data source 'gpu'" in err
    code, _, err = run("catalog", "--technique", "AML.T0999")
    assert code == 2 and "unknown ATLAS technique" in err


def test_atlas_show_technique_and_tactic():
    code, out, _ = run("atlas", "show", "AML.T0043.001", "--format", "json")
    assert code == 0
    d = json.loads(out)
    assert d["name"] == "Black-Box Optimization" and d["parent"]["id"] == "AML.T0043"
    assert [t["id"] for t in d["tactics"]] == ["AML.TA0001"]
    assert {m["ref"] for m in d["methods"]} >= {10, 11}
    code, out, _ = run("atlas", "show", "AML.T0043")
    assert code == 0 and "AML.T0043.004" in out
    code, out, _ = run("atlas", "show", "AML.TA0000")
    assert code == 0 and "AML.T0040" in out
    code, _, err = run("atlas", "show", "AML.T0000.999")
    assert code == 2 and "unknown ATLAS ID" in err


def test_schema_prints_json_schema():
    code, out, _ = run("schema")
    s = json.loads(out)
    assert code == 0 and {"detector", "stage", "attack", "atlas", "score"} <= set(s["properties"])
    code, out, _ = run("schema", "alert")
    assert "event_ids" in json.loads(out)["properties"]
