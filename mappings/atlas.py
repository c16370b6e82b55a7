"""The MITRE ATLAS taxonomy kizashi needs: tactics in kill-chain order, techniques and sub-techniques.

kizashi ships identifiers, names, tactics and parents only (``atlas.json``, generated from ATLAS
5.6.0 by :func:`atlas_from_yaml`), never MITRE's descriptions. A user can point kizashi at a newer
full ``ATLAS.yaml`` (``KIZASHI_ATLAS_YAML`` or ``load_atlas(path)``) to refresh the mapping without
a new kizashi release. Everything is keyed on IDs: ATLAS renamed techniques across versions.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

TECHNIQUE_ID = re.compile(r"^AML\.T\d{4}(\.\d{3})?$")
TACTIC_ID = re.compile(r"^AML\.TA\d{4}$")

#: IDs ATLAS retired, mapped to their replacement (kept so old events and rules still resolve).
RETIRED_TECHNIQUES: dict[str, str] = {
    "AML.T0045": "AML.T0048.004",  # ML Intellectual Property Theft -> External Harms: AI IP Theft
}


@dataclass(frozen=True, slots=True)
class AtlasTactic:
    id: str
    name: str
    shortname: str


@dataclass(frozen=True, slots=True)
class AtlasTechnique:
    id: str
    name: str
    tactics: tuple[str, ...]
    parent: str | None = None


@dataclass(slots=True)
class AtlasCatalog:
    """ATLAS tactics and techniques keyed by ID."""

    version: str
    tactics: dict[str, AtlasTactic]  # insertion order = kill-chain order
    techniques: dict[str, AtlasTechnique]
    retired: dict[str, str] = field(default_factory=lambda: dict(RETIRED_TECHNIQUES))

    # -- look-ups --------------------------------------------------------------------------
    def resolve(self, technique_id: str) -> str:
        """The current ID for ``technique_id`` (follows the retired-ID table)."""
        seen = set()
        while technique_id in self.retired and technique_id not in self.techniques:
            if technique_id in seen:  # pragma: no cover - defensive against a cyclic table
                break
            seen.add(technique_id)
            technique_id = self.retired[technique_id]
        return technique_id

    def technique(self, technique_id: str) -> AtlasTechnique:
        tid = self.resolve(technique_id)
        try:
            return self.techniques[tid]
        except KeyError:
            raise KeyError(f"unknown ATLAS technique {technique_id!r} (ATLAS {self.version})") from None

    def tactic(self, tactic_id: str) -> AtlasTactic:
        try:
            return self.tactics[tactic_id]
        except KeyError:
            raise KeyError(f"unknown ATLAS tactic {tactic_id!r} (ATLAS {self.version})") from None

    def has_technique(self, technique_id: str) -> bool:
        return self.resolve(technique_id) in self.techniques

    def has_tactic(self, tactic_id: str) -> bool:
        return tactic_id in self.tactics

    def subtechniques(self, technique_id: str) -> list[AtlasTechnique]:
        tid = self.resolve(technique_id)
        return [t for t in self.techniques.values() if t.parent == tid]

    def display_name(self, technique_id: str) -> str:
        """"Parent: Child" for sub-techniques, as ATLAS displays them."""
        t = self.technique(technique_id)
        if t.parent:
            return f"{self.techniques[t.parent].name}: {t.name}"
        return t.name

    def tactics_for(self, technique_ids) -> list[str]:
        """Union of the tactics of ``technique_ids``, in kill-chain order."""
        wanted = set()
        for tid in technique_ids:
            wanted.update(self.technique(tid).tactics)
        return [t for t in self.tactics if t in wanted]

    def tactic_order(self, tactic_id: str) -> int:
        return list(self.tactics).index(tactic_id)

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "source": "MITRE ATLAS (https://atlas.mitre.org), Apache-2.0; identifiers and names only",
            "version": self.version,
            "tactics": [{"id": t.id, "name": t.name, "shortname": t.shortname} for t in self.tactics.values()],
            "techniques": [
                {"id": t.id, "name": t.name, "tactics": list(t.tactics), "parent": t.parent}
                for t in self.techniques.values()
            ],
            "retired": dict(self.retired),
        }

    @classmethod
    def from_dict(cls, data: dict) -> AtlasCatalog:
        tactics = {t["id"]: AtlasTactic(t["id"], t["name"], t["shortname"]) for t in data["tactics"]}
        techniques = {
            t["id"]: AtlasTechnique(t["id"], t["name"], tuple(t["tactics"]), t.get("parent"))
            for t in data["techniques"]
        }
        retired = dict(RETIRED_TECHNIQUES)
        retired.update(data.get("retired", {}))
        return cls(version=str(data["version"]), tactics=tactics, techniques=techniques, retired=retired)


def shortname(tactic_name: str) -> str:
    """ATLAS Navigator / STIX tactic shortname: ``AI Model Access`` -> ``ai-model-access``."""
    return re.sub(r"[^a-z0-9]+", "-", tactic_name.lower()).strip("-")


def atlas_from_yaml(path: str | os.PathLike) -> AtlasCatalog:
    """Read a full MITRE ``ATLAS.yaml`` (atlas-data ``dist/ATLAS.yaml``, format 4/5).

    Sub-techniques carry no ``tactics`` in that file; they inherit their parent's, as the ATLAS
    STIX bundle assigns them.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read ATLAS data from {path}: {exc}") from exc
    if not isinstance(data, dict) or "matrices" not in data:
        raise ValueError(f"{path}: not an ATLAS.yaml (no 'matrices' key)")
    matrix = data["matrices"][0]
    tactics: dict[str, AtlasTactic] = {}
    for t in matrix.get("tactics", []):
        tactics[t["id"]] = AtlasTactic(t["id"], t["name"], shortname(t["name"]))
    raw = {t["id"]: t for t in matrix.get("techniques", []) if t.get("object-type", "technique") == "technique"}
    techniques: dict[str, AtlasTechnique] = {}
    for tid in sorted(raw):
        t = raw[tid]
        parent = t.get("subtechnique-of")
        own = t.get("tactics") or (raw.get(parent, {}).get("tactics") if parent else None) or []
        ordered = tuple(x for x in tactics if x in set(own))
        techniques[tid] = AtlasTechnique(tid, t["name"], ordered, parent)
    return AtlasCatalog(version=str(data.get("version", "unknown")), tactics=tactics, techniques=techniques)


@lru_cache(maxsize=8)
def _load_cached(path: str | None) -> AtlasCatalog:
    if path is None:
        text = resources.files("kizashi.mappings").joinpath("atlas.json").read_text(encoding="utf-8")
        return AtlasCatalog.from_dict(json.loads(text))
    p = Path(path)
    if p.suffix.lower() == ".json":
        return AtlasCatalog.from_dict(json.loads(p.read_text(encoding="utf-8")))
    return atlas_from_yaml(p)


def load_atlas(path: str | os.PathLike | None = None) -> AtlasCatalog:
    """The ATLAS catalogue: ``path`` (ATLAS.yaml or kizashi atlas.json), else ``$KIZASHI_ATLAS_YAML``,
    else the bundled 5.6.0 mapping."""
    if path is None:
        path = os.environ.get("KIZASHI_ATLAS_YAML") or None
    return _load_cached(str(path) if path is not None else None)
