"""The detection-method catalogue: the seed's Table 1 plus the two simple monitors, as data.

The seed's stated use of Table 1 is to choose detection methods from the data a system can
actually collect; :meth:`Catalogue.select` does exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

#: Table 1's four data sources, in the table's column order.
DATA_SOURCES: tuple[str, ...] = ("training_data", "model", "input", "output")
#: CLI spellings (``--have training-data,model,input,output``) -> data source keys.
DATA_SOURCE_ALIASES: dict[str, str] = {
    "training-data": "training_data",
    "training_data": "training_data",
    "training": "training_data",
    "model": "model",
    "trained-model": "model",
    "input": "input",
    "inputs": "input",
    "output": "output",
    "outputs": "output",
}
MARKS = ("target", "needed")
STAGES = ("precursor", "symptom")
ATTACKS = ("evasion", "poisoning", "extraction")


@dataclass(frozen=True, slots=True)
class Method:
    id: str
    ref: int | None
    authors: str | None
    title: str
    venue: str | None
    year: int | None
    stage: str
    attack: str
    goal: str
    goals: tuple[tuple[str, str], ...]
    data: dict[str, str | None]
    atlas: tuple[str, ...]
    implemented_by: str | None

    @property
    def in_table1(self) -> bool:
        return self.ref is not None

    @property
    def required_sources(self) -> set[str]:
        """Every data source marked ● or □."""
        return {k for k, v in self.data.items() if v is not None}

    def serves(self, stage: str | None = None, attack: str | None = None) -> bool:
        return any((stage is None or s == stage) and (attack is None or a == attack) for s, a in self.goals)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "ref": self.ref,
            "authors": self.authors,
            "title": self.title,
            "venue": self.venue,
            "year": self.year,
            "stage": self.stage,
            "attack": self.attack,
            "goal": self.goal,
            "goals": [{"stage": s, "attack": a} for s, a in self.goals],
            "data": dict(self.data),
            "atlas": list(self.atlas),
            "implemented_by": self.implemented_by,
            "in_table1": self.in_table1,
        }


def parse_have(spec: str | list[str] | None) -> set[str]:
    """``"training-data,model"`` -> ``{"training_data", "model"}``; unknown names are an error."""
    if spec is None:
        return set(DATA_SOURCES)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: set[str] = set()
    for item in items:
        item = item.strip().lower()
        if not item:
            continue
        if item not in DATA_SOURCE_ALIASES:
            raise ValueError(
                f"unknown data source {item!r}: expected a comma list of training-data,model,input,output"
            )
        out.add(DATA_SOURCE_ALIASES[item])
    return out


class Catalogue:
    """The methods, in Table 1 order, with selection by goal, technique and available data."""

    def __init__(self, methods: list[Method], *, seed: str = ""):
        self.methods = list(methods)
        self.seed = seed
        self._by_id = {m.id: m for m in self.methods}

    def __iter__(self):
        return iter(self.methods)

    def __len__(self) -> int:
        return len(self.methods)

    def get(self, method_id: str) -> Method:
        try:
            return self._by_id[method_id]
        except KeyError:
            raise KeyError(f"unknown detection method {method_id!r}") from None

    def by_ref(self, ref: int) -> Method:
        for m in self.methods:
            if m.ref == ref:
                return m
        raise KeyError(f"no catalogue method for seed reference [{ref}]")


    def select(
        self,
        *,
        stage: str | None = None,
        attack: str | None = None,
        technique: str | None = None,
        have: set[str] | None = None,
    ) -> list[Method]:
        """Methods serving ``stage``/``attack``, evidencing ``technique`` (or a sub-technique of it),
        and whose every marked data source (● and □) is in ``have``."""
        out = []
        for m in self.methods:
            if not m.serves(stage, attack):
                continue
            if technique is not None and not any(
                t == technique or t.startswith(technique + ".") for t in m.atlas
            ):
                continue
            if have is not None and not m.required_sources <= have:
                continue
            out.append(m)
        return out


def _method_from_dict(d: dict) -> Method:
    data = {k: d["data"].get(k) for k in DATA_SOURCES}
    for k, v in data.items():
        if v is not None and v not in MARKS:
            raise ValueError(f"method {d['id']}: data.{k} must be target, needed or null, not {v!r}")
    if d["stage"] not in STAGES or d["attack"] not in ATTACKS:
        raise ValueError(f"method {d['id']}: bad stage/attack {d['stage']!r}/{d['attack']!r}")
    goals = tuple((g["stage"], g["attack"]) for g in d.get("goals") or [{"stage": d["stage"], "attack": d["attack"]}])
    return Method(
        id=d["id"],
        ref=d.get("ref"),
        authors=d.get("authors"),
        title=d["title"],
        venue=d.get("venue"),
        year=d.get("year"),
        stage=d["stage"],
        attack=d["attack"],
        goal=d.get("goal", ""),
        goals=goals,
        data=data,
        atlas=tuple(d.get("atlas", [])),
        implemented_by=d.get("implemented_by"),
    )


@lru_cache(maxsize=1)
def load_catalogue() -> Catalogue:
    """The bundled catalogue (``mappings/methods.yaml``)."""
    text = resources.files("kizashi.mappings").joinpath("methods.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    return Catalogue([_method_from_dict(d) for d in raw["methods"]], seed=raw.get("seed", ""))
