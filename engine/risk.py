"""Entity risk: observations add risk to their entities (account, model, source address); a risk
correlation raises one alert when an entity's risk, or its count of distinct ATLAS techniques, crosses
a threshold within the risk window. Splunk ES risk-based alerting, written as Sigma.

The part Sigma can express is Sigma: :func:`risk_rules_yaml` turns the thresholds of an
:class:`~kizashi.engine.alerting.AlertingConfig` into Sigma correlation rules (``value_sum`` of
``risk.score``, ``value_count`` of ``atlas.technique``, grouped by the entity's field, ``timespan`` =
the risk window) over *risk records*, and kizashi's own Sigma engine evaluates them. What Sigma cannot
express is kizashi configuration: an observation's points (rule level x detector confidence) and the
fan-out of one observation into one record per entity (and one per technique, so that
``value_count`` counts techniques, not combinations). A firing's chain is the contributing events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from .alerting import AlertingConfig
from .events import DetectionEvent
from .sigma import RuleResult, RuleSet
from .sigma.microbatch import admit_batch
from .sigma.rule import atlas_ids_from_tags

RISK_RULE_PREFIX = "kizashi_risk_"


def risk_rule_name(kind: str, metric: str) -> str:
    return f"{RISK_RULE_PREFIX}{kind}_{metric}"


def _timespan(span: timedelta) -> str:
    """A Sigma timespan (the largest whole unit)."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def risk_rules_yaml(config: AlertingConfig) -> str:
    """The risk correlations of ``config`` as Sigma rules (YAML, one document per rule)."""
    docs: list[str] = []
    bases: set[str] = set()
    for t in config.thresholds:
        for metric, limit, kind_value, condition in (
            ("score", t.score, "score", {"gte": t.score, "field": "risk.score"}),
            ("techniques", t.techniques, "technique", {"gte": t.techniques, "field": "atlas.technique"}),
        ):
            if limit is None:
                continue
            base = f"{RISK_RULE_PREFIX}{t.kind}_{kind_value}_record"
            if base not in bases:
                bases.add(base)
                docs.append(f"""title: Risk record of an {t.kind} ({kind_value})
name: {base}
status: experimental
logsource:
  product: kizashi
  category: risk_observation
detection:
  selection:
    risk.kind: {kind_value}
    risk.object_type: {t.kind}
  condition: selection
level: informational
""")
            cond = "\n".join(f"    {k}: {v}" for k, v in condition.items())
            what = (f"risk of {limit:g} or more" if metric == "score"
                    else f"{limit} or more distinct ATLAS techniques")
            docs.append(f"""title: {t.kind.capitalize()} with {what} within {_timespan(config.risk_window)}
name: {risk_rule_name(t.kind, metric)}
status: experimental
description: Risk-based alerting (kizashi.engine.risk) - the {t.kind}'s observations add up.
correlation:
  type: {"value_sum" if metric == "score" else "value_count"}
  rules:
    - {base}
  group-by:
    - {t.field}
  timespan: {_timespan(config.risk_window)}
  condition:
{cond}
  generate: false
level: {config.risk_level}
""")
    return "---\n".join(docs)


def observation_techniques(event: DetectionEvent, rule_tags: Iterable[str]) -> list[str]:
    """The ATLAS techniques of an observation: the event's, then its rule's tags."""
    techniques = list(event.atlas.techniques)
    for t in atlas_ids_from_tags(rule_tags)[0]:
        if t not in techniques:
            techniques.append(t)
    return techniques


def entities(event: DetectionEvent) -> dict[str, str]:
    """The event's entities by kind (those it names)."""
    found = {"account": event.subject.account, "model": event.target.model, "source": event.subject.source_ip}
    return {k: v for k, v in found.items() if v}


class RiskEngine:
    """Risk records in, risk-correlation results out (a stream; same lateness as the pipeline)."""

    def __init__(self, config: AlertingConfig, *, lateness: timedelta = timedelta(0)):
        self.config = config
        self.kinds = {t.kind: t for t in config.thresholds}
        self.ruleset = RuleSet.from_yaml(risk_rules_yaml(config))
        self.evaluator = self.ruleset.stream(lateness=lateness)

    def records(self, event: DetectionEvent, level: str, tags: Iterable[str]) -> tuple[float, list[dict[str, Any]]]:
        """One observation of ``event`` by a rule of ``level`` and ``tags``: its points and records."""
        points = self.config.points(level, event.severity)
        out: list[dict[str, Any]] = []
        techniques = observation_techniques(event, tags)
        for kind, value in entities(event).items():
            t = self.kinds.get(kind)
            if t is None:
                continue
            base = {"id": event.id, "time": event.time, "risk.object_type": kind, t.field: value}
            if t.score is not None and points > 0:
                out.append({**base, "risk.kind": "score", "risk.score": points})
            if t.techniques is not None:
                out += [{**base, "risk.kind": "technique", "atlas.technique": tech} for tech in techniques]
        return points, out

    def push(self, records: list[Mapping[str, Any]]) -> list[RuleResult]:
        return admit_batch(self.evaluator, sorted(records, key=lambda r: (r["time"], r["id"])))

    def flush(self) -> list[RuleResult]:
        return self.evaluator.flush()
