"""STIX 2.1 bundles: validated by stix2-validator, ATLAS attack-patterns, indicators, sightings."""

from __future__ import annotations

import json

import pytest
from _connector_alerts import RULE_TEXTS, all_alerts
from kizashi.connectors.stix import StixFileSink, StixFormatter
from stix2validator import validate_string


@pytest.fixture(scope="module")
def bundle_text():
    alerts, events = all_alerts()
    return StixFormatter(rule_texts=RULE_TEXTS).render(alerts, events)


def objects_of(bundle, kind):
    return [o for o in bundle["objects"] if o["type"] == kind]


def test_bundle_validates_without_error(bundle_text):
    result = validate_string(bundle_text)
    assert result.is_valid, [str(e) for e in result.errors]
    assert not result.errors


def test_attack_patterns_reuse_atlas_reference(bundle_text, shared_dir):
    b = json.loads(bundle_text)
    atlas_bundle = json.loads((shared_dir / "atlas" / "stix-atlas.json").read_text(encoding="utf-8"))
    ref_by_id = {}
    for o in atlas_bundle["objects"]:
        if o["type"] == "attack-pattern":
            r = next(x for x in o["external_references"] if x["source_name"] == "mitre-atlas")
            ref_by_id[r["external_id"]] = (o["name"], r["url"])
    aps = objects_of(b, "attack-pattern")
    assert aps
    alerts, _ = all_alerts()
    wanted = {t for a in alerts for t in a.atlas.techniques}
    assert {ap["x_mitre_id"] for ap in aps} == wanted
    for ap in aps:
        ref = next(x for x in ap["external_references"] if x["source_name"] == "mitre-atlas")
        assert ref["external_id"] == ap["x_mitre_id"]
        assert ref["url"] == ref_by_id[ap["x_mitre_id"]][1]


def test_indicator_sighting_grouping_per_alert(bundle_text):
    b = json.loads(bundle_text)
    alerts, _ = all_alerts()
    indicators = objects_of(b, "indicator")
    assert {i["pattern_type"] for i in indicators} == {"sigma"}
    assert {i["pattern"] for i in indicators} == set(RULE_TEXTS.values())
    sightings = objects_of(b, "sighting")
    assert len(sightings) == len(alerts)
    assert sorted(s["count"] for s in sightings) == sorted(a.count for a in alerts)
    assert all(s["where_sighted_refs"] and s["observed_data_refs"] for s in sightings if s.get("observed_data_refs"))
    assert len(objects_of(b, "grouping")) == len(alerts)
    rels = objects_of(b, "relationship")
    assert any(r["relationship_type"] == "indicates" for r in rels)
    ids = {o["id"] for o in b["objects"]}
    for r in rels:
        assert r["source_ref"] in ids and r["target_ref"] in ids


def test_deterministic_ids_and_file_sink_dedupes(tmp_path):
    alerts, events = all_alerts()
    f = StixFormatter(rule_texts=RULE_TEXTS)
    a = json.loads(f.render(alerts, events))
    b = json.loads(f.render(alerts, events))
    assert [o["id"] for o in a["objects"]] == [o["id"] for o in b["objects"]]
    sink = StixFileSink(tmp_path, f)
    sink.send(alerts, events)
    sink.send(alerts, events)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and validate_string(files[0].read_text()).is_valid
