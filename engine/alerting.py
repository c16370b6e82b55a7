"""What reaches the SOC: which rule results are alerts and which stay observations, how observations
add risk to entities, and how long an alert stays one incident. One configuration,
:class:`AlertingConfig`; the bundled pack's SOC defaults are ``rules/alerting.toml``.

The models are what SIEMs already do: Splunk Enterprise Security's risk-based alerting (detections
add risk to a risk object; a notable event only when its risk or its diversity of tactics crosses a
threshold), Elastic's alert suppression (one alert per rule and group-by values per window, with a
count) and Sigma's correlation ``generate`` flag (a correlation's base rules do not report their own
matches unless a correlation using them says ``generate: true``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from .events import SEVERITIES

#: risk points of an observation by its rule's level (Splunk ES's default risk scores are similar)
DEFAULT_LEVEL_POINTS = {"informational": 1.0, "low": 5.0, "medium": 10.0, "high": 25.0, "critical": 50.0}
#: the detector's confidence in its finding, read from the event's severity, as a factor
DEFAULT_CONFIDENCE = {"informational": 0.25, "low": 0.5, "medium": 1.0, "high": 1.5, "critical": 2.0}
#: entity kinds: the flat event field naming the entity
ENTITY_FIELDS = {"account": "account.id", "model": "model.id", "source": "source.ip"}


@dataclass(frozen=True)
class RiskThreshold:
    """When an entity kind raises a risk alert: its risk (sum of points in the window) reaches
    ``score``, or its observations carry ``techniques`` distinct ATLAS techniques. ``None`` = never
    (the risk is still computed and stored with each observation)."""

    kind: str
    score: float | None = None
    techniques: int | None = None

    @property
    def field(self) -> str:
        return ENTITY_FIELDS[self.kind]


@dataclass
class AlertingConfig:
    """Which results alert, entity risk and suppression.

    * ``alert`` / ``observe``: rule ids or names whose results alert / stay observations (these win);
    * ``default``: what a detection rule used by no correlation does (``alert`` = plain Sigma);
      a correlation's base rule alerts only if a correlation using it has ``generate: true``;
      a correlation result alerts unless listed in ``observe``;
    * ``risk_window``: how long an observation's risk counts (a sliding window: Sigma ``timespan``);
    * ``thresholds``: per entity kind (account, model, source), see :class:`RiskThreshold`;
    * ``suppression_window``: a result of the same rule and group within this time of an alert's
      ``last_seen`` updates that alert; ``suppress_by``: the group of a detection rule's alert.
    """

    default: str = "alert"
    alert: list[str] = field(default_factory=list)
    observe: list[str] = field(default_factory=list)
    risk_window: timedelta = timedelta(hours=24)
    level_points: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LEVEL_POINTS))
    confidence: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CONFIDENCE))
    thresholds: list[RiskThreshold] = field(default_factory=list)
    risk_level: str = "high"
    suppression_window: timedelta = timedelta(hours=24)
    suppress_by: list[str] = field(default_factory=lambda: ["account.id", "model.id"])

    def __post_init__(self) -> None:
        if self.default not in ("alert", "observe"):
            raise ValueError(f"default must be 'alert' or 'observe', not {self.default!r}")
        if self.risk_level not in SEVERITIES:
            raise ValueError(f"risk_level must be one of {SEVERITIES}")
        for name, table in (("level_points", self.level_points), ("confidence", self.confidence)):
            unknown = set(table) - set(SEVERITIES)
            if unknown:
                raise ValueError(f"{name}: unknown levels {sorted(unknown)}")
            if any(not isinstance(v, int | float) or v < 0 for v in table.values()):
                raise ValueError(f"{name}: values must be non-negative numbers")
        for t in self.thresholds:
            if t.kind not in ENTITY_FIELDS:
                raise ValueError(f"risk threshold for unknown entity kind {t.kind!r} (one of {sorted(ENTITY_FIELDS)})")
        for name, span in (("risk_window", self.risk_window), ("suppression_window", self.suppression_window)):
            if span <= timedelta(0):
                raise ValueError(f"{name} must be positive")

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AlertingConfig:
        """From the TOML/JSON shape of ``rules/alerting.toml`` (windows in seconds)."""
        known = {"default", "alert", "observe", "risk", "suppression"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown alerting settings {sorted(unknown)}")
        risk = dict(data.get("risk", {}))
        sup = dict(data.get("suppression", {}))
        thresholds = [RiskThreshold(kind, t.get("score"), t.get("techniques"))
                      for kind, t in dict(risk.pop("entities", {})).items()]
        kwargs: dict[str, Any] = {k: data[k] for k in ("default", "alert", "observe") if k in data}
        if "window_s" in risk:
            kwargs["risk_window"] = timedelta(seconds=float(risk.pop("window_s")))
        for k in ("level_points", "confidence"):
            if k in risk:
                kwargs[k] = {**(DEFAULT_LEVEL_POINTS if k == "level_points" else DEFAULT_CONFIDENCE), **risk.pop(k)}
        if "level" in risk:
            kwargs["risk_level"] = risk.pop("level")
        if risk:
            raise ValueError(f"unknown risk settings {sorted(risk)}")
        if "window_s" in sup:
            kwargs["suppression_window"] = timedelta(seconds=float(sup.pop("window_s")))
        if "by" in sup:
            kwargs["suppress_by"] = list(sup.pop("by"))
        if sup:
            raise ValueError(f"unknown suppression settings {sorted(sup)}")
        return cls(thresholds=thresholds, **kwargs)

    @classmethod
    def from_file(cls, path: str | Path) -> AlertingConfig:
        with open(path, "rb") as fh:
            return cls.from_mapping(tomllib.load(fh))

    @classmethod
    def bundled(cls) -> AlertingConfig:
        """The bundled rule pack's SOC defaults (``rules/alerting.toml``)."""
        from kizashi.rules import bundled_alerting_path

        return cls.from_file(bundled_alerting_path())

    # -- decisions ---------------------------------------------------------------------------
    def delivers(self, result_type: str, info: Any, *, correlated: bool) -> bool:
        """Does a result of the rule ``info`` (a :class:`~kizashi.engine.sigma.RuleInfo` as the rule
        set reports it: ``emits`` honours ``generate``; ``correlated``: some correlation uses the
        rule) reach the SOC as an alert?"""
        names = {info.key, info.name}
        if names & set(self.observe):
            return False
        if names & set(self.alert):
            return True
        if result_type == "correlation":
            return True
        return info.emits if correlated else self.default == "alert"

    def points(self, level: str, severity: str) -> float:
        """Risk an observation adds: its rule level's points times the detector's confidence."""
        return self.level_points.get(level, 0.0) * self.confidence.get(severity, 1.0)

    @property
    def risk_enabled(self) -> bool:
        return any(t.score is not None or t.techniques is not None for t in self.thresholds)
