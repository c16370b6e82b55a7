"""STIX 2.1 bundles: every bundle validates with stix2-validator, ATLAS references come from the shipped
ATLAS data, ids are deterministic so re-sends dedupe."""

from __future__ import annotations

import json

from helpers_alerts import RULE_TEXTS, all_alerts, extraction_alert, hostile_alert
from kizashi.connectors.stix import EXTENSION_DEFINITION_ID, StixFileSink, StixFormatter
from kizashi.mappings import load_atlas
from stix2validator import ValidationOptions, validate_string


def _errors(text: str) -> list[str]:
    result = validate_string(text, ValidationOptions(strict=False))
    errs = [str(e) for e in result.errors]
    for obj in getattr(result, "object_results", None) or []:
        errs += [str(e) for e in obj.errors]
    assert result.is_valid or errs
    return errs if not result.is_valid else errs


def _bundle(alerts, events, **kw):
    return json.loads(StixFormatter(RULE_TEXTS, **kw).render(alerts, events))


def test_every_bundle_validates_without_error():
    alerts, events = all_alerts()
    h, hev = hostile_alert()
    for batch, evs in [(alerts, events), ([h], hev), (alerts[:1], events)]:
        text = StixFormatter(RULE_TEXTS).render(batch, evs)
        result = validate_string(text, ValidationOptions(strict=False))
        assert result.is_valid, _errors(text)


def test_objects_carry_atlas_references_sightings_and_extension():
    alerts, events = all_alerts()
    objs = _bundle(alerts, events)["objects"]
    by_type: dict[str, list[dict]] = {}
    for o in objs:
        by_type.setdefault(o["type"], []).append(o)
    atlas = load_atlas()
    wanted = {t for a in alerts for t in a.atlas.techniques}
    patterns = {o["x_mitre_id"]: o for o in by_type["attack-pattern"]}
    assert set(patterns) == wanted
    for tid, ap in patterns.items():
        ref = ap["external_references"][0]
        assert ref == {"source_name": "mitre-atlas", "external_id": tid, "url": f"https://atlas.mitre.org/techniques/{tid}"}
        assert ap["name"] == atlas.technique(tid).name
        phases = [p["phase_name"] for p in ap["kill_chain_phases"]]
        assert phases == [atlas.tactic(x).shortname for x in atlas.technique(tid).tactics]
    # system identities: kizashi + the protected model
    names = {o["name"] for o in by_type["identity"]}
    assert {"kizashi", "digits-mlp"} <= names
    assert all(o["identity_class"] == "system" for o in by_type["identity"])
    # an indicator per rule that has a text, with the Sigma text as its pattern
    inds = by_type["indicator"]
    assert sorted(i["pattern"] for i in inds) == sorted(RULE_TEXTS.values())
    assert {i["pattern_type"] for i in inds} == {"sigma"}
    assert inds[0]["modified"] >= inds[0]["created"]
    # a sighting and a grouping per alert
    sightings = {s["extensions"][EXTENSION_DEFINITION_ID]["alert_id"]: s for s in by_type["sighting"]}
    assert set(sightings) == {a.id for a in alerts}
    ext = by_type["extension-definition"][0]
    assert ext["id"] == EXTENSION_DEFINITION_ID and ext["extension_types"] == ["property-extension"]
    a0 = alerts[0]
    s0 = sightings[a0.id]
    assert s0["count"] == a0.count == 3
    assert s0["first_seen"].startswith("2026-11-28T01:00:00") and s0["last_seen"].startswith("2026-11-28T01:01:00")
    od = next(o for o in by_type["observed-data"] if o["id"] in s0["observed_data_refs"])
    scos = {o["id"]: o for o in objs if o["id"] in od["object_refs"]}
    assert {(o["type"], o.get("user_id") or o.get("value")) for o in scos.values()} == {
        ("user-account", "acct-7"), ("ipv4-addr", "203.0.113.7")}
    rels = [r for r in by_type["relationship"] if r["relationship_type"] == "indicates"]
    assert {(r["source_ref"], r["target_ref"]) for r in rels if r["source_ref"] == s0["sighting_of_ref"]} == {
        (s0["sighting_of_ref"], patterns[t]["id"]) for t in a0.atlas.techniques}
    assert len(by_type["grouping"]) == len(alerts)
    g = next(g for g in by_type["grouping"] if s0["id"] in g["object_refs"])
    assert g["context"] == "suspicious-activity"
    ids = {o["id"] for o in objs}
    assert all(ref in ids for ref in g["object_refs"])
    # the poisoning rule has no text: its sighting points at its attack-pattern
    poison = next(a for a in alerts if a.rule.id == "kizashi-poisoned-cluster")
    assert sightings[poison.id]["sighting_of_ref"] == patterns["AML.T0020"]["id"]


def test_ids_and_objects_are_deterministic_so_resends_dedupe():
    a, ev = extraction_alert()
    first = _bundle([a], ev)
    again = _bundle([a], ev)
    assert first == again
    other, oev = extraction_alert(n_events=2, start=10)
    both = _bundle([a, other], {**ev, **oev})
    common = {o["id"]: o for o in first["objects"]}
    shared = [o for o in both["objects"] if o["id"] in common]
    assert shared and all(o == common[o["id"]] for o in shared)
    assert len({o["id"] for o in both["objects"]}) == len(both["objects"])


def test_file_sink_overwrites_its_own_bundle_on_resend(tmp_path):
    alerts, events = all_alerts()
    sink = StixFileSink(tmp_path, StixFormatter(RULE_TEXTS))
    sink.send(alerts, events)
    sink.send(alerts, events)
    files = list(tmp_path.glob("bundle--*.json"))
    assert len(files) == 1
    text = files[0].read_text(encoding="utf-8")
    assert validate_string(text, ValidationOptions(strict=False)).is_valid


def test_sco_ids_follow_the_stix_rule_as_the_stix2_library_computes_it():
    import stix2
    from helpers_alerts import HOSTILE
    from kizashi.connectors.stix import sco

    for account in ("acct-7", "x" + HOSTILE + "x", 'q"\\'):
        assert sco("user-account", user_id=account)["id"] == stix2.UserAccount(user_id=account).id
    assert sco("ipv4-addr", value="203.0.113.7")["id"] == stix2.IPv4Address(value="203.0.113.7").id
    assert sco("ipv6-addr", value="2001:db8::42")["id"] == stix2.IPv6Address(value="2001:db8::42").id
