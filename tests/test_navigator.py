"""ATLAS Navigator layer (format 4.3, domain atlas-atlas) and the PNG heatmap."""

from __future__ import annotations

import json
import struct

import pytest
from kizashi.connectors.navigator import NavigatorFormatter, render_heatmap_png
from kizashi.engine import Alert, DetectionEvent, RuleRef


def event(eid, techniques, stage="symptom", attack="evasion", t="2026-11-28T00:00:00Z"):
    return DetectionEvent.parse({
        "id": eid, "time": t, "detector": {"id": "kizashi.x", "name": "x"}, "stage": stage, "attack": attack,
        "atlas": {"techniques": techniques}, "subject": {"account": "acct"}, "score": 1.0,
    })


@pytest.fixture(scope="module")
def alerts():
    a1 = Alert.from_events(rule=RuleRef(id="r1", title="Extraction then evasion", type="correlation"),
                           events=[event("e1", ["AML.T0024.002", "AML.T0040"], attack="extraction"),
                                   event("e2", ["AML.T0015"], t="2026-11-28T01:00:00Z")])
    a2 = Alert.from_events(rule=RuleRef(id="r2", title="Adversarial input"), events=[event("e3", ["AML.T0015"])])
    return [a1, a2]


@pytest.fixture(scope="module")
def stix_shortnames(shared_dir):
    bundle = json.loads((shared_dir / "atlas" / "stix-atlas.json").read_text(encoding="utf-8"))
    tactics = {o["external_references"][0]["external_id"]: o["x_mitre_shortname"]
               for o in bundle["objects"] if o["type"] == "x-mitre-tactic"}
    phases = {}
    for o in bundle["objects"]:
        if o["type"] == "attack-pattern":
            ext = next(r["external_id"] for r in o["external_references"] if r["source_name"] == "mitre-atlas")
            phases[ext] = {p["phase_name"] for p in o.get("kill_chain_phases", [])}
    return tactics, phases


def test_layer_scores_counts_and_rules(alerts, stix_shortnames):
    layer = json.loads(NavigatorFormatter().render(alerts, {}))
    assert layer["versions"]["layer"] == "4.3" and layer["domain"] == "atlas-atlas"
    assert layer["versions"]["attack"] == "5.6.0"
    scored = {(t["techniqueID"], t["tactic"]): t for t in layer["techniques"] if "score" in t}
    by_tech = {}
    for (tid, _), t in scored.items():
        by_tech[tid] = t["score"]
    assert by_tech == {"AML.T0015": 2, "AML.T0024.002": 1, "AML.T0040": 1}
    assert "Extraction then evasion" in scored[("AML.T0015", "impact")]["comment"]
    assert "Adversarial input" in scored[("AML.T0015", "impact")]["comment"]
    # every (technique, tactic) pair is one the ATLAS STIX bundle itself has (independent source)
    _, phases = stix_shortnames
    for tid, tac in scored:
        assert tac in phases[tid], (tid, tac)
    # AML.T0015 sits under all three of its tactics
    assert {tac for tid, tac in scored if tid == "AML.T0015"} == phases["AML.T0015"]
    # the parent of a scored sub-technique is listed expanded
    parent = [t for t in layer["techniques"] if t["techniqueID"] == "AML.T0024"]
    assert parent and all(p["showSubtechniques"] for p in parent)
    assert layer["gradient"]["maxValue"] == 2


def test_tactic_shortnames_match_stix_bundle(stix_shortnames):
    from kizashi.mappings import load_atlas

    tactics, _ = stix_shortnames
    assert {t.id: t.shortname for t in load_atlas().tactics.values()} == tactics


def test_empty_layer_is_valid(alerts):
    layer = NavigatorFormatter().layer([])
    assert layer["techniques"] == [] and layer["gradient"]["maxValue"] == 1


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_heatmap_png(alerts, tmp_path):
    path = tmp_path / "heat.png"
    data = render_heatmap_png(alerts, str(path))
    assert path.read_bytes() == data
    w, h = png_size(data)
    assert w > 800 and h > 100
    assert render_heatmap_png([]) != data  # the picture depends on the alerts
