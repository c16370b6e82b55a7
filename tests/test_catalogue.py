"""The shipped catalogue equals the seed's Table 1 cell by cell (parsed from the seed itself)."""

from __future__ import annotations

import re

import pytest
from kizashi.mappings import load_atlas, load_catalogue
from kizashi.mappings.catalogue import DATA_SOURCES, parse_have

GLYPH = {"●": "target", "□": "needed", "": None}
GOAL_STAGE = {"前兆検知": "precursor", "兆候検知": "symptom"}


def parse_table1(seed_text: str) -> list[dict]:
    """Rows of Table 1 as the seed prints them: goal, target attack, method, four data cells."""
    start = seed_text.index("表 1. 検知に使用するデータについて")
    rows, stage, goal = [], None, None
    for line in seed_text[start:].splitlines():
        m = re.search(r"\[(\d+)\]", line)
        if not m or "\t" not in line:
            continue
        cells = line.split("\t")
        if cells[0].strip():
            stage = GOAL_STAGE[cells[0].strip()]
        if cells[1].strip():
            goal = cells[1].strip()
        marks = [c.strip() for c in cells[3:7]] + [""] * (4 - len(cells[3:7]))
        rows.append({"ref": int(m.group(1)), "stage": stage, "goal": goal, "method": cells[2].strip(),
                     "data": dict(zip(DATA_SOURCES, (GLYPH[x] for x in marks), strict=True))})
    return rows


GOAL_ATTACK = {"敵対的サンプル 作成の検知": "evasion", "データ汚染（精 度劣化）の検知": "poisoning",
               "バックドアの検 知": "poisoning", "敵対的サンプル 入力の検知": "evasion",
               "バックドアトリ ガーの検知": "poisoning", "モデル抽出攻撃 の検知": "extraction"}


def test_table1_has_22_methods(seed_text):
    rows = parse_table1(seed_text)
    assert len(rows) == 22
    cat = load_catalogue()
    assert sorted(m.ref for m in cat if m.in_table1) == sorted(r["ref"] for r in rows)


def test_catalogue_equals_table1_cell_by_cell(seed_text):
    cat = load_catalogue()
    for row in parse_table1(seed_text):
        m = cat.by_ref(row["ref"])
        assert m.stage == row["stage"], m.id
        assert m.attack == GOAL_ATTACK[row["goal"]], m.id
        assert m.data == row["data"], f"{m.id}: {m.data} != Table 1 {row['data']}"
        assert row["method"].split()[0] in m.authors, m.id  # first author's surname


def test_monitors_present_and_not_in_table1():
    cat = load_catalogue()
    monitors = [m for m in cat if not m.in_table1]
    assert {m.id for m in monitors} == {"monitor-query-rate", "monitor-label-distribution", "gao2019-strip",
                                       "tran2018-spectral-signature", "chen2018-activation-clustering",
                                       "kizashi-artifact-scan"}
    qr = cat.get("monitor-query-rate")
    assert qr.serves("symptom", "extraction") and qr.serves("precursor", "evasion")


def test_every_catalogue_technique_is_atlas_560(atlas_yaml):
    from kizashi.mappings import atlas_from_yaml

    ref = atlas_from_yaml(atlas_yaml)
    assert ref.version == "5.6.0"
    for m in load_catalogue():
        assert m.atlas, m.id
        for t in m.atlas:
            assert t in ref.techniques, f"{m.id}: {t} not in ATLAS 5.6.0"


def test_select_by_have_is_subset_rule():
    cat = load_catalogue()
    only_input = cat.select(have={"input"})
    assert {m.id for m in only_input} == {"juuti2019-prada", "monitor-query-rate"}
    everything = cat.select(have=set(DATA_SOURCES))
    assert len(everything) == len(cat)
    no_training = cat.select(have={"model", "input", "output"})
    assert {m.ref for m in no_training if m.ref} == {22, 23, 36}
    for m in cat.select(have={"training_data", "input"}):
        assert m.required_sources <= {"training_data", "input"}


def test_select_by_stage_attack_technique():
    cat = load_catalogue()
    ext = cat.select(stage="symptom", attack="extraction")
    assert {m.ref for m in ext} == {36, 37, 38, 39, None}
    crafted = cat.select(technique="AML.T0043")  # parent matches sub-techniques too
    assert any("AML.T0043.004" in m.atlas for m in crafted)
    assert all(any(t.startswith("AML.T0043") for t in m.atlas) for m in crafted)


def test_parse_have_rejects_unknown():
    assert parse_have("training-data, output") == {"training_data", "output"}
    with pytest.raises(ValueError, match="unknown data source 'gpu'"):
        parse_have("input,gpu")


def test_implemented_by_names_exist_in_registry():
    from kizashi import detectors

    names = set(detectors.available())
    for m in load_catalogue():
        if m.implemented_by is not None:
            assert m.implemented_by in names, f"{m.id}: implemented_by {m.implemented_by} is not registered"
            assert detectors.get(m.implemented_by).method == m.id


def test_shipped_atlas_matches_reference(atlas_yaml):
    """Every ID kizashi ships exists in ATLAS.yaml with the same name, tactics and parent."""
    import yaml

    raw = yaml.safe_load(atlas_yaml.read_text(encoding="utf-8"))["matrices"][0]
    ref_tech = {t["id"]: t for t in raw["techniques"]}
    ref_tactics = [t["id"] for t in raw["tactics"]]
    shipped = load_atlas()
    assert shipped.version == "5.6.0"
    assert list(shipped.tactics) == ref_tactics
    assert len(shipped.techniques) == len(ref_tech) == 170
    for tid, t in shipped.techniques.items():
        r = ref_tech[tid]
        assert t.name == r["name"]
        assert t.parent == r.get("subtechnique-of")
        own = r.get("tactics") or ref_tech[r["subtechnique-of"]]["tactics"]
        assert set(t.tactics) == set(own)
        assert list(t.tactics) == [x for x in ref_tactics if x in own]  # kill-chain order


def test_shipped_atlas_matches_tsv(shared_dir):
    shipped = load_atlas()
    lines = (shared_dir / "atlas" / "tactics_techniques.tsv").read_text(encoding="utf-8").splitlines()[1:]
    for line in lines:
        tid, name, tactics, parent = line.split("\t")
        t = shipped.technique(tid)
        assert (t.name, ",".join(t.tactics), t.parent or "") == (name, tactics, parent)


def test_retired_ids_and_loader_reads_yaml(atlas_yaml, tmp_path):
    from kizashi.mappings import atlas_from_yaml

    shipped = load_atlas()
    assert shipped.resolve("AML.T0045") == "AML.T0048.004"
    assert shipped.technique("AML.T0045").name == "AI Intellectual Property Theft"
    # a "newer" ATLAS.yaml: the loader reads it, new technique available
    text = atlas_yaml.read_text(encoding="utf-8").replace("version: 5.6.0", "version: 9.9.9", 1)
    text = text.replace("  techniques:\n", "  techniques:\n  - id: AML.T9999\n    name: Brand New\n"
                        "    object-type: technique\n    tactics:\n    - AML.TA0011\n", 1)
    newer = tmp_path / "ATLAS.yaml"
    newer.write_text(text, encoding="utf-8")
    cat = load_atlas(newer)
    assert cat.version == "9.9.9" and cat.technique("AML.T9999").tactics == ("AML.TA0011",)
    assert atlas_from_yaml(newer).has_technique("AML.T0043.001")
    with pytest.raises(ValueError, match="not an ATLAS.yaml"):
        bad = tmp_path / "bad.yaml"
        bad.write_text("a: 1\n")
        atlas_from_yaml(bad)
