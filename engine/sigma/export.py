"""Export kizashi Sigma rules to SIEM queries through the pySigma backends.

A kizashi processing pipeline maps the flat field dictionary to the target's names (ECS for the
Elastic targets: ``account.id`` -> ``user.id``, ``atlas.technique`` -> ``threat.technique.id``,
kizashi-only fields under ``kizashi.*``). All rules go into one collection, ordered detections first
and correlations in dependency order, so references resolve whatever the file order.

Where the upstream backends fail, kizashi writes the query itself:

* ``temporal_ordered`` for Splunk: ``multisearch`` tags each step, ``streamstats time_window=...``
  keeps the steps of the sliding window ending at every event (anchored at events, as kizashi and
  Sigma define it), and a regular expression tests that the steps occur in order;
* ``temporal_ordered`` for ES|QL (two steps): per group and time bucket, the first step's earliest
  time precedes the second step's latest time (ES|QL has no sliding window: fixed buckets);
* ``temporal_ordered`` for EQL: ``sequence by <fields> with maxspan=<timespan> [any where ...] ...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule, SigmaCorrelationType
from sigma.exceptions import SigmaError
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import FieldMappingTransformation
from sigma.rule import SigmaRule

from .correlations import dependency_order
from .exceptions import RuleLoadError
from .rule import rule_key
from .targets import TARGETS

#: kizashi flat field -> ECS (Elastic Common Schema) field; unlisted fields go under ``kizashi.``
ECS_FIELDS: dict[str, str] = {
    "id": "event.id",
    "time": "@timestamp",
    "account.id": "user.id",
    "source.ip": "source.ip",
    "session.id": "kizashi.session.id",
    "atlas.technique": "threat.technique.id",
    "atlas.tactic": "threat.tactic.id",
    "score": "event.risk_score",
    "detector.name": "observer.product",
    "detector.id": "observer.name",
    "detector.version": "observer.version",
}

KIZASHI_FIELDS = (
    "detector.method", "stage", "attack", "model.id", "model.version", "model.endpoint",
    "data.training_data", "data.model", "data.input", "data.output", "threshold", "severity",
)


class ExportError(ValueError):
    """A rule cannot be converted for the requested target."""


@dataclass(slots=True)
class ExportedQuery:
    rule_id: str
    name: str | None
    title: str
    kind: str  # "detection" | "correlation"
    query: str
    producer: str  # "pysigma", "kizashi" (own query where the backend fails) or "none" (not convertible)
    note: str | None = None


def field_mapping(target: str) -> dict[str, str]:
    if target in ("esql", "eql", "lucene"):
        mapping = dict(ECS_FIELDS)
        for f in KIZASHI_FIELDS:
            mapping.setdefault(f, f"kizashi.{f}")
        return mapping
    return {}


def kizashi_pipeline(target: str) -> ProcessingPipeline:
    """Field names for ``target`` (ECS for Elastic targets; Splunk and SQLite keep kizashi's names)."""
    mapping = field_mapping(target)
    items = [ProcessingItem(FieldMappingTransformation(mapping), identifier="kizashi_fields")] if mapping else []
    return ProcessingPipeline(name=f"kizashi {target} field mapping", priority=20, items=items)


def _backend(target: str):
    # the backends are imported when a query is converted (``kizashi rules export``), not at start-up
    from sigma.backends.elasticsearch import EqlBackend, ESQLBackend, LuceneBackend
    from sigma.backends.splunk import SplunkBackend
    from sigma.backends.sqlite import sqliteBackend

    pipeline = kizashi_pipeline(target)
    if target == "splunk":
        return SplunkBackend(pipeline)
    if target == "esql":
        return ESQLBackend(pipeline)
    if target == "eql":
        return EqlBackend(pipeline)
    if target == "lucene":
        return LuceneBackend(pipeline)
    if target == "sqlite":
        return sqliteBackend(pipeline, table="logs", timestamp_field="time", event_id_field="id")
    raise ExportError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")


def ordered_collection(texts: list[str]) -> SigmaCollection:
    """All rules in one collection: detections first, correlations after what they reference."""
    rules: list[Any] = []
    for text in texts:
        rules.extend(SigmaCollection.from_yaml(text, resolve_references=False).rules)
    collection = SigmaCollection(rules, resolve_references=False)
    for rule in rules:
        if isinstance(rule, SigmaCorrelationRule):
            rule.resolve_rule_references(collection)
    correlations = [r for r in rules if isinstance(r, SigmaCorrelationRule)]
    order: list[Any] = [r for r in rules if isinstance(r, SigmaRule)] + dependency_order(correlations)
    collection.rules = order
    return collection


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def export(texts: list[str], target: str) -> list[ExportedQuery]:
    """Convert every rule in ``texts`` (YAML documents) for ``target``."""
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    try:
        collection = ordered_collection(texts)
    except (SigmaError, RuleLoadError) as exc:
        raise ExportError(str(exc)) from None
    backend = _backend(target)
    # the pipeline must be applied to every rule first (correlations reuse the base rules' output)
    base_queries: dict[str, list[str]] = {}
    out: list[ExportedQuery] = []
    for rule in collection.rules:
        if isinstance(rule, SigmaRule):
            # a base rule of `generate: false` correlations is still exported: its matches are the
            # risk observations kizashi keeps (pySigma would convert it for the correlation only)
            rule._output = True
            try:
                queries = [str(q) for q in backend.convert_rule(rule)]
            except SigmaError as exc:
                raise ExportError(f"rule {rule.title!r}: {target}: {exc}") from None
            base_queries[rule_key(rule)] = queries
            out.append(ExportedQuery(rule_key(rule), rule.name, rule.title, "detection", "\n".join(queries), "pysigma"))
    for rule in collection.rules:
        if not isinstance(rule, SigmaCorrelationRule):
            continue
        refused = _refused(rule, target)
        if refused:
            out.append(ExportedQuery(rule_key(rule), rule.name, rule.title, "correlation", "", "none", refused))
            continue
        own = _own_correlation_query(rule, target, base_queries)
        if own is not None:
            out.append(ExportedQuery(rule_key(rule), rule.name, rule.title, "correlation", own, "kizashi"))
            continue
        try:
            queries = [str(q) for q in backend.convert_correlation_rule(rule)]
        except (SigmaError, NotImplementedError) as exc:
            note = f"the {target} backend cannot convert {rule.type.name.lower()} correlations: {exc}"
            out.append(ExportedQuery(rule_key(rule), rule.name, rule.title, "correlation", "", "none", note))
            continue
        out.append(ExportedQuery(rule_key(rule), rule.name, rule.title, "correlation", "\n".join(queries), "pysigma",
                                 APPROXIMATIONS.get((target, rule.type.name.lower()), APPROXIMATIONS.get(target))))
    return out


#: what the upstream backend's correlation query does differently from Sigma's sliding windows
APPROXIMATIONS = {
    "splunk": "fixed time buckets (bin _time span=...), not windows sliding with each event",
    "esql": "fixed time buckets (date_trunc), not windows sliding with each event",
    ("eql", "temporal"): "EQL samples have no time window: the timespan is not enforced",
}


def _refused(rule: SigmaCorrelationRule, target: str) -> str | None:
    """Conversions kizashi refuses because the upstream output means something else."""
    if target == "eql" and rule.type != SigmaCorrelationType.TEMPORAL_ORDERED and rule.type != SigmaCorrelationType.TEMPORAL:
        return (f"EQL cannot express {rule.type.name.lower()}; the backend's 'sequence ... by <field> with runs=N' "
                "counts repeated events of one value (the opposite of a distinct count) and is rejected by EQL parsers")
    return None


def _group_fields(rule: SigmaCorrelationRule, target: str) -> list[str]:
    mapping = field_mapping(target)
    if any(True for _ in rule.aliases):
        raise ExportError(f"correlation {rule.title!r}: aliases are not supported in kizashi's own {target} query")
    return [mapping.get(g, g) for g in rule.group_by or []]


def _step_queries(rule: SigmaCorrelationRule, base_queries: dict[str, list[str]]) -> list[str]:
    steps = []
    for ref in rule.rules:
        if isinstance(ref.rule, SigmaCorrelationRule):
            raise ExportError(f"correlation {rule.title!r}: a temporal_ordered step over a correlation cannot be exported")
        queries = base_queries[rule_key(ref.rule)]
        steps.append(" OR ".join(f"({q})" for q in queries) if len(queries) > 1 else queries[0])
    return steps


def _own_correlation_query(rule: SigmaCorrelationRule, target: str, base: dict[str, list[str]]) -> str | None:
    """kizashi's query where the backend fails (temporal_ordered for Splunk, ES|QL and EQL)."""
    if rule.type != SigmaCorrelationType.TEMPORAL_ORDERED or target not in ("splunk", "esql", "eql"):
        return None
    steps = _step_queries(rule, base)
    groups = _group_fields(rule, target)
    span = rule.timespan.seconds
    if target == "eql":
        by = f" by {', '.join(groups)}" if groups else ""
        body = "\n".join(f"  [any where {q}]" for q in steps)
        return f"sequence{by} with maxspan={_span(span)}\n{body}"
    if target == "splunk":
        subs = " ".join(f"[search {q} | eval sigma_step={i + 1}]" for i, q in enumerate(steps))
        by = f" by {', '.join(groups)}" if groups else ""
        pattern = ",".join(str(i + 1) for i in range(len(steps)))
        regex = ",(.*,)?".join(str(i + 1) for i in range(len(steps)))
        return (
            f"| multisearch {subs}\n"
            f"| sort 0 _time\n"
            f"| streamstats time_window={span}s list(sigma_step) as sigma_steps{by}\n"
            f"| eval sigma_sequence=\",\".mvjoin(sigma_steps, \",\").\",\"\n"
            f"| where match(sigma_sequence, \",{regex},\")\n"
            f"| eval sigma_rule=\"{rule.name or rule_key(rule)}\", sigma_order=\"{pattern}\""
        )
    # ES|QL: fixed buckets of the timespan; exact ordering test for two steps
    if len(steps) != 2:
        raise ExportError(
            f"correlation {rule.title!r}: ES|QL export of temporal_ordered supports two steps, not {len(steps)}"
        )
    group_list = ", ".join([*groups, f"sigma_bucket = BUCKET(@timestamp, {span} seconds)"])
    first, second = steps
    return (
        "FROM *\n"
        f"| WHERE ({first}) OR ({second})\n"
        f"| EVAL sigma_step = CASE({first}, 1, {second}, 2, 0)\n"
        "| EVAL sigma_t1 = CASE(sigma_step == 1, @timestamp), sigma_t2 = CASE(sigma_step == 2, @timestamp)\n"
        f"| STATS sigma_first = MIN(sigma_t1), sigma_last = MAX(sigma_t2) BY {group_list}\n"
        "| WHERE sigma_first IS NOT NULL AND sigma_last IS NOT NULL AND sigma_first < sigma_last"
    )

