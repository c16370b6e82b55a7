"""STIX 2.1 bundles for kizashi alerts (OASIS STIX 2.1, sections 4-7 and 11).

Per alert the bundle carries:

- ``identity`` (class ``system``) for kizashi, the producer, and one per protected model;
- one ``attack-pattern`` per ATLAS technique, with ATLAS's own external reference
  (``source_name: mitre-atlas``, ``external_id``, ``url``), ``x_mitre_id`` and kill-chain phases
  named by the ATLAS tactic shortnames (kill chain ``mitre-atlas``), as the ATLAS STIX data does;
- one ``indicator`` per rule: ``pattern_type: sigma`` and the Sigma rule text as the pattern;
- an ``indicates`` relationship from the indicator to each attack-pattern, and ``targets`` from each
  attack-pattern to the model identity;
- a ``sighting`` of the indicator (count, first/last seen, where sighted = the model), with an
  ``observed-data`` naming ``user-account`` and ``ipv4-addr``/``ipv6-addr`` SCOs;
- a ``grouping`` (context ``suspicious-activity``) of all of the above.

kizashi's own fields (alert id, level, stages, attacks, event ids ...) travel in a property
extension declared by an ``extension-definition`` object.

Every id is a UUIDv5 of what the object stands for (alert id, rule id, ATLAS ID, model id) and every
timestamp comes from the data (alert times, rule ``date``/``modified``), so sending the same alert
twice yields byte-identical objects that a TAXII server or TIP dedupes.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import yaml
from kizashi.connectors.alertview import AlertView, TechniqueInfo, is_ipv4, iso_z, views
from kizashi.connectors.files import write_file
from kizashi.engine.events import Alert, DetectionEvent
from kizashi.mappings import load_atlas

#: Namespace of every kizashi STIX id (uuid5 of the object's natural key).
KIZASHI_STIX_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:kizashi:stix")
#: Creation time of the objects that describe kizashi itself (identity, extension-definition).
KIZASHI_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
EXTENSION_VERSION = "1.0.0"
EXTENSION_SCHEMA = (
    "kizashi alert properties (property-extension on sighting and grouping): alert_id (string), "
    "rule_id (string), rule_type (detection|correlation), level (informational|low|medium|high|critical), "
    "stages (list of precursor|symptom), attacks (list of evasion|poisoning|extraction), models, accounts, "
    "event_ids, detectors, atlas_tactics, atlas_techniques (lists of strings), group_by (list of 'key=value'), "
    "max_score and value (numbers). See kizashi docs/connectors.md."
)
ATLAS_KILL_CHAIN = "mitre-atlas"
MAX_STIX_COUNT = 999_999_999


class RuleTexts(Protocol):
    """Where Sigma rule sources come from (the engine's ``RuleSet`` is one)."""

    def rule_text(self, rule_id: str) -> str:
        """The rule's YAML; ``KeyError`` when it is not there."""
        ...


def stix_id(kind: str, key: str) -> str:
    """Deterministic id ``<kind>--uuid5(kizashi namespace, "<kind>:<key>")``."""
    return f"{kind}--{uuid.uuid5(KIZASHI_STIX_NAMESPACE, f'{kind}:{key}')}"


KIZASHI_IDENTITY_ID = stix_id("identity", "kizashi")
EXTENSION_DEFINITION_ID = stix_id("extension-definition", f"kizashi-alert:{EXTENSION_VERSION}")


class StixFormatter:
    """Alerts -> one STIX 2.1 bundle (JSON).

    ``rule_texts`` maps rule id -> Sigma YAML (the indicator pattern); rules it does not name are
    looked up in ``ruleset`` (anything with ``rule_text(rule_id)``, e.g. the engine's ``RuleSet``)
    when given. A rule without text gets no indicator; its sightings then point at the alert's first
    attack-pattern.
    ``model_identity`` maps model id -> display name, or -> extra identity properties
    (``name``, ``description``, ``contact_information``, ``sectors``).
    """

    name = "stix"
    document = True

    def __init__(
        self,
        rule_texts: Mapping[str, str] | None = None,
        model_identity: Mapping[str, str | Mapping[str, Any]] | None = None,
        *,
        ruleset: RuleTexts | None = None,
        include_extension_definition: bool = True,
        indent: int | None = None,
    ):
        self.rule_texts = dict(rule_texts or {})
        self.ruleset = ruleset
        self.model_identity = dict(model_identity or {})
        self.include_extension_definition = include_extension_definition
        self.indent = indent
        self._rule_dates: dict[str, tuple[datetime, datetime]] = {}  # rule id -> (date, modified)

    # -- public ------------------------------------------------------------------------------
    def render(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> str:
        return json.dumps(self.bundle(alerts, events), indent=self.indent, ensure_ascii=False)

    def bundle(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> dict[str, Any]:
        objects = self.objects(alerts, events)
        key = ",".join(sorted(a.id for a in alerts))
        return {"type": "bundle", "id": stix_id("bundle", key), "objects": objects}

    def objects(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> list[dict[str, Any]]:
        """Every object for ``alerts``, each once, producers and definitions first."""
        out: dict[str, dict[str, Any]] = {}

        def add(obj: dict[str, Any]) -> str:
            out.setdefault(obj["id"], obj)
            return obj["id"]

        add(kizashi_identity())
        if self.include_extension_definition:
            add(extension_definition())
        for v in views(alerts, events):
            self._alert_objects(v, add)
        return list(out.values())

    # -- per alert -----------------------------------------------------------------------------
    def _alert_objects(self, v: AlertView, add) -> None:
        a = v.alert
        created = iso_z(a.created)
        modified = iso_z(max(a.updated, a.created)) if a.updated else created  # an update: same ids
        members: list[str] = []

        model_ids = [add(self.model_identity_object(m)) for m in a.models] or [KIZASHI_IDENTITY_ID]
        members += [m for m in model_ids if m != KIZASHI_IDENTITY_ID]

        patterns = [add(attack_pattern(t)) for t in v.techniques]
        members += patterns

        indicator = self.indicator(a.rule.id, v.title)
        if indicator is not None:
            members.append(add(indicator))
            for ap in patterns:
                members.append(add(relationship("indicates", indicator["id"], ap, indicator["created"])))
        for ap in patterns:
            for mid in model_ids:
                if mid != KIZASHI_IDENTITY_ID:
                    members.append(add(relationship("targets", ap, mid, iso_z(KIZASHI_EPOCH))))

        scos = [add(s) for s in observables(v)]
        observed_refs: list[str] = []
        if scos:
            observed = {
                "type": "observed-data",
                "spec_version": "2.1",
                "id": stix_id("observed-data", a.id),
                "created": created,
                "modified": modified,
                "created_by_ref": KIZASHI_IDENTITY_ID,
                "first_observed": iso_z(a.first_seen),
                "last_observed": iso_z(a.last_seen),
                "number_observed": max(1, min(a.count, MAX_STIX_COUNT)),
                "object_refs": scos,
            }
            observed_refs.append(add(observed))
            members += [observed["id"], *scos]

        sighting_of = indicator["id"] if indicator is not None else (patterns[0] if patterns else None)
        if sighting_of is None:
            raise ValueError(
                f"alert {a.id}: rule {a.rule.id!r} has no rule text and the alert no ATLAS technique, "
                "so the STIX sighting would have nothing to be a sighting of"
            )
        sighting = {
            "type": "sighting",
            "spec_version": "2.1",
            "id": stix_id("sighting", a.id),
            "created": created,
            "modified": modified,
            "created_by_ref": KIZASHI_IDENTITY_ID,
            "description": v.summary(),
            "first_seen": iso_z(a.first_seen),
            "last_seen": iso_z(a.last_seen),
            "count": min(a.count, MAX_STIX_COUNT),
            "sighting_of_ref": sighting_of,
            "where_sighted_refs": model_ids,
            "extensions": {EXTENSION_DEFINITION_ID: extension_properties(v)},
        }
        if observed_refs:
            sighting["observed_data_refs"] = observed_refs
        members.append(add(sighting))

        add({
            "type": "grouping",
            "spec_version": "2.1",
            "id": stix_id("grouping", a.id),
            "created": created,
            "modified": modified,
            "created_by_ref": KIZASHI_IDENTITY_ID,
            "name": f"{v.title} ({a.id})",
            "description": v.summary(),
            "context": "suspicious-activity",
            "object_refs": list(dict.fromkeys(members)),
            "labels": [f"kizashi-level-{a.level}", *(f"kizashi-attack-{x}" for x in a.attacks)],
            "extensions": {EXTENSION_DEFINITION_ID: extension_properties(v)},
        })

    def model_identity_object(self, model: str) -> dict[str, Any]:
        extra = self.model_identity.get(model)
        props: dict[str, Any] = {"name": model, "description": f"Machine-learning model '{model}' protected by kizashi"}
        if isinstance(extra, str):
            props["name"] = extra
        elif isinstance(extra, Mapping):
            unknown = set(extra) - {"name", "description", "contact_information", "sectors"}
            if unknown:
                raise ValueError(f"model_identity[{model!r}]: unknown identity properties {sorted(unknown)}")
            props.update(extra)
        return {
            "type": "identity",
            "spec_version": "2.1",
            "id": stix_id("identity", f"model:{model}"),
            "created": iso_z(KIZASHI_EPOCH),
            "modified": iso_z(KIZASHI_EPOCH),
            "created_by_ref": KIZASHI_IDENTITY_ID,
            "identity_class": "system",
            **props,
        }

    def rule_text(self, rule_id: str) -> str | None:
        text = self.rule_texts.get(rule_id)
        if text is None and self.ruleset is not None:
            try:
                text = self.rule_texts[rule_id] = self.ruleset.rule_text(rule_id)
            except KeyError:
                self.rule_texts[rule_id] = ""
        return text or None

    def indicator(self, rule_id: str, title: str) -> dict[str, Any] | None:
        text = self.rule_text(rule_id)
        if not text:
            return None
        if rule_id not in self._rule_dates:  # parse each rule's YAML once, not once per alert
            self._rule_dates[rule_id] = rule_dates(rule_id, text)
        created, modified = self._rule_dates[rule_id]
        return {
            "type": "indicator",
            "spec_version": "2.1",
            "id": stix_id("indicator", rule_id),
            "created": iso_z(created),
            "modified": iso_z(modified),
            "created_by_ref": KIZASHI_IDENTITY_ID,
            "name": title,
            "indicator_types": ["anomalous-activity"],
            "pattern_type": "sigma",
            "pattern": text,
            "valid_from": iso_z(created),
            "external_references": [{"source_name": "sigma", "external_id": rule_id}],
        }


# -- objects that do not depend on the formatter's settings -----------------------------------

def kizashi_identity() -> dict[str, Any]:
    return {
        "type": "identity",
        "spec_version": "2.1",
        "id": KIZASHI_IDENTITY_ID,
        "created": iso_z(KIZASHI_EPOCH),
        "modified": iso_z(KIZASHI_EPOCH),
        "name": "kizashi",
        "description": "kizashi: detection of attacks on machine-learning systems (evasion, poisoning, extraction)",
        "identity_class": "system",
    }


def extension_definition() -> dict[str, Any]:
    return {
        "type": "extension-definition",
        "spec_version": "2.1",
        "id": EXTENSION_DEFINITION_ID,
        "created": iso_z(KIZASHI_EPOCH),
        "modified": iso_z(KIZASHI_EPOCH),
        "created_by_ref": KIZASHI_IDENTITY_ID,
        "name": "kizashi alert properties",
        "description": "Fields of a kizashi alert that STIX has no property for.",
        "schema": EXTENSION_SCHEMA,
        "version": EXTENSION_VERSION,
        "extension_types": ["property-extension"],
    }


def attack_pattern(t: TechniqueInfo) -> dict[str, Any]:
    """An ATLAS technique as ATLAS's STIX data describes it (ID, name, tactics, parent)."""
    obj: dict[str, Any] = {
        "type": "attack-pattern",
        "spec_version": "2.1",
        "id": stix_id("attack-pattern", t.id),
        "created": iso_z(KIZASHI_EPOCH),
        "modified": iso_z(KIZASHI_EPOCH),
        "created_by_ref": KIZASHI_IDENTITY_ID,
        "name": t.short_name,
        "kill_chain_phases": [{"kill_chain_name": ATLAS_KILL_CHAIN, "phase_name": x.shortname} for x in t.tactics],
        "external_references": [{"source_name": "mitre-atlas", "external_id": t.id, "url": t.url}],
        "x_mitre_id": t.id,
        "x_mitre_version": load_atlas().version,
    }
    if t.parent:
        obj["x_mitre_is_subtechnique"] = True
    return obj


def relationship(kind: str, source: str, target: str, created: str) -> dict[str, Any]:
    return {
        "type": "relationship",
        "spec_version": "2.1",
        "id": stix_id("relationship", f"{kind}:{source}:{target}"),
        "created": created,
        "modified": created,
        "created_by_ref": KIZASHI_IDENTITY_ID,
        "relationship_type": kind,
        "source_ref": source,
        "target_ref": target,
    }


#: STIX 2.1 section 2.9: the namespace of deterministic SCO ids.
SCO_NAMESPACE = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")


def sco(kind: str, **contributing: str) -> dict[str, Any]:
    """An SCO whose id is uuid5(SCO namespace, canonical JSON of its id-contributing properties)
    (STIX 2.1 section 2.9; for string-only objects Python's compact sorted JSON is the RFC 8785 form)."""
    canonical = json.dumps(contributing, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {"type": kind, "spec_version": "2.1", "id": f"{kind}--{uuid.uuid5(SCO_NAMESPACE, canonical)}",
            **contributing}


def observables(v: AlertView) -> list[dict[str, Any]]:
    """``user-account`` and ``ipv4-addr``/``ipv6-addr`` SCOs with STIX's deterministic ids."""
    out = [sco("user-account", user_id=account) for account in v.alert.accounts]
    out += [sco("ipv4-addr" if is_ipv4(ip) else "ipv6-addr", value=ip) for ip in v.source_ips]
    return out


def extension_properties(v: AlertView) -> dict[str, Any]:
    a = v.alert
    props: dict[str, Any] = {
        "extension_type": "property-extension",
        "alert_id": a.id,
        "rule_id": a.rule.id,
        "rule_type": a.rule.type,
        "level": a.level,
        "stages": list(a.stages),
        "attacks": list(a.attacks),
        "models": list(a.models),
        "accounts": list(a.accounts),
        "event_ids": list(a.event_ids),
        "detectors": list(v.detectors),
        "atlas_tactics": list(a.atlas.tactics),
        "atlas_techniques": list(a.atlas.techniques),
        "group_by": [f"{k}={val}" for k, val in a.group.items()],
    }
    if v.max_score is not None:
        props["max_score"] = v.max_score
    if a.value is not None:
        props["value"] = a.value
    return {k: val for k, val in props.items() if val not in ([], None)}


def rule_dates(rule_id: str, text: str) -> tuple[datetime, datetime]:
    """A Sigma rule's ``date`` and ``modified`` (``YYYY-MM-DD`` or ``YYYY/MM/DD``); kizashi's epoch when absent."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"rule {rule_id!r}: rule text is not YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise ValueError(f"rule {rule_id!r}: rule text is not a Sigma rule (a YAML mapping)")

    def when(key: str) -> datetime | None:
        raw = doc.get(key)
        if raw is None:
            return None
        if isinstance(raw, datetime):
            return raw if raw.tzinfo else raw.replace(tzinfo=UTC)
        if isinstance(raw, date):
            return datetime(raw.year, raw.month, raw.day, tzinfo=UTC)
        try:
            d = datetime.strptime(str(raw).replace("/", "-"), "%Y-%m-%d")
        except ValueError:
            raise ValueError(f"rule {rule_id!r}: {key}: {raw!r} is not a date (YYYY-MM-DD)") from None
        return d.replace(tzinfo=UTC)

    created = when("date") or KIZASHI_EPOCH
    modified = when("modified") or created
    return created, max(created, modified)


class StixFileSink:
    """Writes one bundle file per batch into ``directory``; the file is named after the bundle id,
    which derives from the alert ids, so a re-sent batch overwrites its own file (no duplicate)."""

    def __init__(self, directory: str | os.PathLike, formatter: StixFormatter | None = None, *, name: str = "stix-file"):
        self.directory = Path(directory)
        self.formatter = formatter or StixFormatter()
        self.name = name

    def send(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> None:
        if not alerts:
            return
        bundle = self.formatter.bundle(alerts, events)
        write_file(self.name, self.directory / f"{bundle['id']}.json", json.dumps(bundle, indent=1, ensure_ascii=False))

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"StixFileSink(name={self.name!r}, directory={str(self.directory)!r})"
