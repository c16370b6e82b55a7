"""A rule's identity and what results report about it (title, level, tags), and its ATLAS tags.

:func:`rule_key` is the one place a rule gets its identity: results, alert ids, correlation slots,
snapshots and SIEM exports all name a rule by it, so they cannot disagree. ATLAS tags follow the
Sigma tag convention ``namespace.name`` with the namespace ``atlas`` (``atlas.aml.t0043.002``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sigma.correlations import SigmaCorrelationRule

_TACTIC = re.compile(r"AML\.TA\d{4}")
_TECHNIQUE = re.compile(r"AML\.T\d{4}(\.\d{3})?")


def rule_key(rule: Any) -> str:
    """A rule's identity: its id, else its name, else its title."""
    if rule.id is not None:
        return str(rule.id)
    if rule.name:
        return str(rule.name)
    return str(rule.title)


def rule_references(rule: Any) -> list[str]:
    """What other rules may call this rule by (Sigma references a rule by id or by name)."""
    return [str(v) for v in (getattr(rule, "id", None), getattr(rule, "name", None)) if v]


def rule_tags(rule: Any) -> list[str]:
    """A rule's tags as written (``namespace.name``)."""
    return [f"{t.namespace}.{t.name}" for t in rule.tags]


@dataclass(slots=True)
class RuleInfo:
    """What a result says about its rule; ``emits`` is False for a rule only used by correlations that
    do not ``generate`` their base rules' matches."""

    key: str
    name: str | None
    title: str
    level: str
    tags: list[str]
    emits: bool
    correlation_type: str | None = None

    @classmethod
    def of(cls, rule: Any, *, emits: bool) -> RuleInfo:
        return cls(
            key=rule_key(rule),
            name=rule.name,
            title=rule.title,
            level=str(rule.level.name.lower()) if rule.level else "medium",
            tags=rule_tags(rule),
            emits=emits,
            correlation_type=rule.type.name.lower() if isinstance(rule, SigmaCorrelationRule) else None,
        )


def _atlas_ids(tags: Iterable[str]) -> Iterable[tuple[str, str, str | None]]:
    """(tag, ID in upper case, "tactic" | "technique" | None) for each ``atlas.*`` tag."""
    for tag in tags:
        if not tag.lower().startswith("atlas."):
            continue
        ident = tag.split(".", 1)[1].upper()
        kind = "tactic" if _TACTIC.fullmatch(ident) else "technique" if _TECHNIQUE.fullmatch(ident) else None
        yield tag, ident, kind


def atlas_ids_from_tags(tags: Iterable[str]) -> tuple[list[str], list[str]]:
    """``atlas.aml.t0043.002`` / ``atlas.aml.ta0001`` tags -> (technique IDs, tactic IDs)."""
    techniques, tactics = _atlas_ids_of(tuple(tags))
    return list(techniques), list(tactics)


@lru_cache(maxsize=4096)
def _atlas_ids_of(tags: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The split for one rule's tags, once per rule (every observation of the rule asks again)."""
    techniques: list[str] = []
    tactics: list[str] = []
    for _tag, ident, kind in _atlas_ids(tags):
        if kind == "tactic":
            tactics.append(ident)
        elif kind == "technique":
            techniques.append(ident)
    return tuple(techniques), tuple(tactics)


def check_atlas_tags(tags: Iterable[str]) -> list[str]:
    """Problems with a rule's ``atlas.*`` tags (offline, against :func:`kizashi.mappings.load_atlas`):
    the namespace is ``atlas`` with lower-case IDs, and every ID must exist in the catalogue."""
    from kizashi.mappings import load_atlas

    atlas = load_atlas()
    problems = []
    for tag, up, kind in _atlas_ids(tags):
        if tag != tag.lower():
            problems.append(f"ATLAS tag {tag!r} must be lower-case ({tag.lower()!r})")
        if kind == "tactic":
            if not atlas.has_tactic(up):
                problems.append(f"ATLAS tag {tag!r}: unknown tactic {up} (ATLAS {atlas.version})")
        elif kind == "technique":
            if not atlas.has_technique(up):
                problems.append(f"ATLAS tag {tag!r}: unknown technique {up} (ATLAS {atlas.version})")
        else:
            problems.append(f"ATLAS tag {tag!r} is not atlas.aml.tNNNN[.NNN] or atlas.aml.taNNNN")
    return problems
