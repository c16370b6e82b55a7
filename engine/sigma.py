"""kizashi's Sigma rule engine: evaluate Sigma detection and correlation rules natively.

pySigma (< 2) parses the rules; :mod:`.sigma_match` compiles detection rules into predicates and
vectorised masks; :mod:`.sigma_correlate` runs correlation rules over sliding windows. This module
holds the public API::

    rs = RuleSet.bundled()                      # or RuleSet.from_paths([...]) / RuleSet.from_yaml(text)
    ev = rs.stream(lateness=timedelta(0))       # streaming: push events one by one
    results = ev.push(event) + ev.flush()
    results = rs.evaluate_batch(events)         # batch: same results, vectorised
    alerts = results_to_alerts(results, events_by_id)

Specifications: Sigma rules (v2.1) and Sigma correlation rules (v2.1), https://github.com/SigmaHQ/sigma-specification.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import ValueListPlaceholderTransformation
from sigma.rule import SigmaRule

from .events import AtlasTags, DetectionEvent, RuleRef, deterministic_alert_id
from .sigma_correlate import CompiledCorrelation, Firing
from .sigma_match import CompiledDetection, FrameView, UnsupportedRuleError, as_datetime, flatten_json

__all__ = [
    "RuleSet",
    "RuleResult",
    "RuleLoadError",
    "StreamEvaluator",
    "UnsupportedRuleError",
    "results_to_alerts",
    "atlas_ids_from_tags",
    "check_atlas_tags",
]


class RuleLoadError(ValueError):
    """A rule file could not be read or parsed, or it uses something kizashi cannot evaluate."""


# -- results ------------------------------------------------------------------------------------


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat().replace("+00:00", "Z")


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass(slots=True)
class RuleResult:
    """One rule hit: a detection rule matching one event, or a correlation over a chain of events."""

    type: str  # "match" | "correlation"
    id: str  # deterministic: rule, group and chain
    rule_id: str
    rule_name: str | None
    title: str
    level: str
    tags: list[str]
    event_ids: list[str]  # time-ordered
    group: dict[str, Any] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    value: float | None = None
    correlation_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``kizashi rules eval`` prints for this result."""
        out: dict[str, Any] = {"type": self.type, "rule": self.rule_id, "id": self.id}
        if self.type == "match":
            out["event_id"] = self.event_ids[0]
            out["time"] = _iso(self.last_seen)
        else:
            out.update(
                correlation_type=self.correlation_type,
                group=self.group,
                event_ids=self.event_ids,
                first_seen=_iso(self.first_seen),
                last_seen=_iso(self.last_seen),
                value=self.value,
            )
        out.update(name=self.rule_name, title=self.title, level=self.level, tags=self.tags)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str, separators=(",", ":"))

    def sort_key(self) -> tuple:
        return (self.last_seen or datetime.min.replace(tzinfo=UTC), self.type, self.rule_id, self.id)


def atlas_ids_from_tags(tags: Iterable[str]) -> tuple[list[str], list[str]]:
    """``atlas.aml.t0043.002`` / ``atlas.aml.ta0001`` tags -> (technique IDs, tactic IDs)."""
    techniques: list[str] = []
    tactics: list[str] = []
    for tag in tags:
        if not tag.lower().startswith("atlas."):
            continue
        ident = tag.split(".", 1)[1].upper()
        if re.fullmatch(r"AML\.TA\d{4}", ident):
            tactics.append(ident)
        elif re.fullmatch(r"AML\.T\d{4}(\.\d{3})?", ident):
            techniques.append(ident)
    return techniques, tactics


def check_atlas_tags(tags: Iterable[str]) -> list[str]:
    """Problems with a rule's ``atlas.*`` tags (offline, against :func:`kizashi.mappings.load_atlas`):
    the namespace is ``atlas`` with lower-case IDs, and every ID must exist in the catalogue."""
    from kizashi.mappings import load_atlas

    atlas = load_atlas()
    problems = []
    for tag in tags:
        if not tag.lower().startswith("atlas."):
            continue
        ident = tag.split(".", 1)[1]
        if tag != tag.lower():
            problems.append(f"ATLAS tag {tag!r} must be lower-case ({tag.lower()!r})")
        up = ident.upper()
        if re.fullmatch(r"AML\.TA\d{4}", up):
            if not atlas.has_tactic(up):
                problems.append(f"ATLAS tag {tag!r}: unknown tactic {up} (ATLAS {atlas.version})")
        elif re.fullmatch(r"AML\.T\d{4}(\.\d{3})?", up):
            if not atlas.has_technique(up):
                problems.append(f"ATLAS tag {tag!r}: unknown technique {up} (ATLAS {atlas.version})")
        else:
            problems.append(f"ATLAS tag {tag!r} is not atlas.aml.tNNNN[.NNN] or atlas.aml.taNNNN")
    return problems


def results_to_alerts(results: Iterable[RuleResult], events_by_id: Mapping[str, Any]) -> list:
    """Rule results -> :class:`kizashi.engine.events.Alert` objects carrying the whole chain.

    The alert's level is the rule's; its ATLAS techniques are the union of the chain's events'
    techniques and the rule's ATLAS tags (tactics likewise). A result whose events are not all in
    ``events_by_id`` raises ``KeyError`` naming the missing ids.
    """
    from .events import Alert

    alerts = []
    for r in results:
        missing = [i for i in r.event_ids if i not in events_by_id]
        if missing:
            raise KeyError(f"result {r.id} of rule {r.rule_id}: events not given: {missing[:5]}")
        events = [_as_detection_event(events_by_id[i]) for i in r.event_ids]
        alert = Alert.from_events(
            rule=RuleRef(
                id=r.rule_id,
                name=r.rule_name,
                title=r.title,
                type="detection" if r.type == "match" else "correlation",
                correlation_type=r.correlation_type,
            ),
            events=events,
            level=r.level,
            group=r.group,
            value=r.value,
            alert_id=r.id,
            tags=r.tags,
        )
        techniques, tactics = atlas_ids_from_tags(r.tags)
        if techniques or tactics:
            merged_t = list(alert.atlas.techniques) + [t for t in techniques if t not in alert.atlas.techniques]
            alert.atlas = AtlasTags(tactics=list(alert.atlas.tactics) + tactics, techniques=merged_t)
        alerts.append(alert)
    return alerts


def _as_detection_event(value: Any) -> DetectionEvent:
    if isinstance(value, DetectionEvent):
        return value
    return DetectionEvent.parse(value)


# -- rule set --------------------------------------------------------------------------------------

_DOC_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)


def _rule_key(rule: SigmaRule | SigmaCorrelationRule) -> str:
    if rule.id is not None:
        return str(rule.id)
    if rule.name:
        return str(rule.name)
    return str(rule.title)


@dataclass(slots=True)
class _RuleInfo:
    key: str
    name: str | None
    title: str
    level: str
    tags: list[str]
    emits: bool
    correlation_type: str | None = None


class RuleSet:
    """A collection of Sigma rules compiled for evaluation (detections and correlations)."""

    def __init__(
        self,
        collection: SigmaCollection,
        sources: Mapping[str, str] | None = None,
        *,
        placeholders: Mapping[str, Sequence[str]] | None = None,
        dedup: bool = True,
    ):
        self.collection = collection
        self.sources = dict(sources or {})
        self.placeholders = dict(placeholders or {})
        self.dedup = dedup
        self._match_id_prefix: dict[str, Any] = {}
        if collection.errors:
            raise RuleLoadError("; ".join(str(e) for e in collection.errors))
        pipeline = None
        if self.placeholders:
            pipeline = ProcessingPipeline(
                items=[ProcessingItem(ValueListPlaceholderTransformation())],
                vars={k: list(v) for k, v in self.placeholders.items()},
            )
        self.detections: dict[str, CompiledDetection] = {}
        self.correlation_rules: list[SigmaCorrelationRule] = []
        self.info: dict[str, _RuleInfo] = {}
        referenced_by: dict[str, list[SigmaCorrelationRule]] = {}
        for rule in collection.rules:
            key = _rule_key(rule)
            if key in self.info:
                raise RuleLoadError(f"two rules share the id/name {key!r}")
            if isinstance(rule, SigmaCorrelationRule):
                self.correlation_rules.append(rule)
                for ref in rule.rules or []:
                    referenced_by.setdefault(_rule_key(ref.rule), []).append(rule)
            elif isinstance(rule, SigmaRule):
                try:
                    if pipeline is not None:
                        pipeline.apply(rule)
                    self.detections[key] = CompiledDetection(rule)
                except (SigmaError, UnsupportedRuleError) as exc:
                    raise RuleLoadError(str(exc)) from None
            else:  # pragma: no cover - pySigma only yields these two kinds
                raise RuleLoadError(f"unsupported rule object {type(rule).__name__}")
        for rule in collection.rules:
            key = _rule_key(rule)
            users = referenced_by.get(key, [])
            emits = not users or any(u.generate for u in users)
            self.info[key] = _RuleInfo(
                key=key,
                name=rule.name,
                title=rule.title,
                level=str(rule.level.name.lower()) if rule.level else "medium",
                tags=[f"{t.namespace}.{t.name}" for t in rule.tags],
                emits=emits,
                correlation_type=rule.type.name.lower() if isinstance(rule, SigmaCorrelationRule) else None,
            )
        # correlations in dependency order (inner before outer)
        order: list[SigmaCorrelationRule] = []
        seen: set[str] = set()

        def visit(rule: SigmaCorrelationRule, stack: tuple[str, ...]) -> None:
            key = _rule_key(rule)
            if key in seen:
                return
            if key in stack:
                raise RuleLoadError(f"correlation {rule.title!r} references itself through {stack}")
            for ref in rule.rules or []:
                if isinstance(ref.rule, SigmaCorrelationRule):
                    visit(ref.rule, (*stack, key))
            seen.add(key)
            order.append(rule)

        for rule in self.correlation_rules:
            visit(rule, ())
        self._correlation_order = order
        try:
            for rule in order:  # validate now: unsupported correlations are refused at load time
                self._compile_correlation(rule)
        except UnsupportedRuleError as exc:
            raise RuleLoadError(str(exc)) from None
        self.correlated_keys = {
            _rule_key(ref.rule) for rule in self.correlation_rules for ref in (rule.rules or [])
        }

    def _compile_correlation(self, rule: SigmaCorrelationRule) -> CompiledCorrelation:
        return CompiledCorrelation(
            rule, _rule_key(rule), [_rule_key(ref.rule) for ref in rule.rules], dedup=self.dedup
        )

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, text: str, **kwargs: Any) -> RuleSet:
        return cls._from_texts([(text, None)], **kwargs)

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path], **kwargs: Any) -> RuleSet:
        """Rules from YAML files and folders (``*.yml``/``*.yaml``, recursively), in one collection so
        correlations resolve whatever the file order."""
        texts = []
        for p in paths:
            p = Path(p)
            if p.is_dir():
                files = sorted([*p.rglob("*.yml"), *p.rglob("*.yaml")])
            elif p.is_file():
                files = [p]
            else:
                raise RuleLoadError(f"{p}: no such file or directory")
            for f in files:
                try:
                    texts.append((f.read_text(encoding="utf-8"), str(f)))
                except (OSError, UnicodeDecodeError) as exc:
                    raise RuleLoadError(f"{f}: cannot read: {exc}") from None
        if not texts:
            raise RuleLoadError("no rule files found in " + ", ".join(str(p) for p in paths))
        return cls._from_texts(texts, **kwargs)

    @classmethod
    def bundled(cls, **kwargs: Any) -> RuleSet:
        """The rule pack shipped in ``kizashi.rules``."""
        from kizashi.rules import bundled_rules_path

        return cls.from_paths([bundled_rules_path()], **kwargs)

    @classmethod
    def _from_texts(cls, texts: list[tuple[str, str | None]], **kwargs: Any) -> RuleSet:
        rules: list[Any] = []
        sources: dict[str, str] = {}
        for text, path in texts:
            where = path or "<yaml>"
            try:
                collection = SigmaCollection.from_yaml(text, resolve_references=False)
            except (SigmaError, yaml.YAMLError) as exc:
                raise RuleLoadError(f"{where}: {exc}") from None
            if collection.errors:
                raise RuleLoadError(f"{where}: " + "; ".join(str(e) for e in collection.errors))
            docs = [d for d in _DOC_SPLIT.split(text) if d.strip() and not _is_comment_only(d)]
            for rule in collection.rules:
                rules.append(rule)
            for doc in docs:
                try:
                    data = yaml.safe_load(doc)
                except yaml.YAMLError:
                    continue
                if isinstance(data, dict):
                    for k in ("id", "name"):
                        if data.get(k):
                            sources[str(data[k])] = doc.strip() + "\n"
            rules.extend(collection.filters)
        try:
            combined = SigmaCollection(rules)
        except SigmaError as exc:
            raise RuleLoadError(str(exc)) from None
        return cls(combined, sources, **kwargs)

    # -- look-ups ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.info)

    def rule_ids(self) -> list[str]:
        return list(self.info)

    def rule_text(self, rule_id: str) -> str:
        """The YAML source of one rule (by id or name)."""
        if rule_id in self.sources:
            return self.sources[rule_id]
        for rule in self.collection.rules:
            if _rule_key(rule) == rule_id or rule.name == rule_id:
                for k in (str(rule.id) if rule.id else None, rule.name):
                    if k and k in self.sources:
                        return self.sources[k]
                return yaml.safe_dump(rule.to_dict(), sort_keys=False, allow_unicode=True)
        raise KeyError(f"no rule {rule_id!r} in this rule set")

    def rule(self, rule_id: str) -> SigmaRule | SigmaCorrelationRule:
        for rule in self.collection.rules:
            if _rule_key(rule) == rule_id or rule.name == rule_id:
                return rule
        raise KeyError(f"no rule {rule_id!r} in this rule set")

    # -- evaluation --------------------------------------------------------------------------
    def stream(
        self,
        lateness: timedelta = timedelta(0),
        id_field: str = "id",
        time_field: str = "time",
    ) -> StreamEvaluator:
        return StreamEvaluator(self, lateness=lateness, id_field=id_field, time_field=time_field)

    def evaluate_batch(
        self, events: Iterable[Any] | pd.DataFrame, id_field: str = "id", time_field: str = "time"
    ) -> list[RuleResult]:
        """Evaluate a whole input at once: detection rules as vectorised column masks, correlations
        over the matches in time order. Gives the same results as :meth:`stream` (sorted)."""
        return BatchEvaluator(self, id_field=id_field, time_field=time_field).run(events)

    # -- results -------------------------------------------------------------------------------
    def match_result(self, key: str, event_id: str, ts: float | None) -> RuleResult:
        info = self.info[key]
        when = _dt(ts)
        prefix = self._match_id_prefix.get(key)
        if prefix is None:  # the hash state of deterministic_alert_id(key, {}, ...) before the event id
            prefix = self._match_id_prefix[key] = hashlib.sha256(key.encode() + b"\x00" + b"{}")
        h = prefix.copy()
        h.update(b"\x00" + str(event_id).encode())
        return RuleResult(
            type="match",
            id="alert-" + h.hexdigest()[:32],
            rule_id=key,
            rule_name=info.name,
            title=info.title,
            level=info.level,
            tags=list(info.tags),
            event_ids=[event_id],
            first_seen=when,
            last_seen=when,
        )

    def correlation_result(self, firing: Firing) -> RuleResult:
        key = firing.correlation.key
        info = self.info[key]
        ids = list(dict.fromkeys(c[1] for c in firing.chain))
        return RuleResult(
            type="correlation",
            id=deterministic_alert_id(key, firing.group, ids),
            rule_id=key,
            rule_name=info.name,
            title=info.title,
            level=info.level,
            tags=list(info.tags),
            event_ids=ids,
            group=dict(firing.group),
            first_seen=_dt(firing.chain[0][0] if firing.chain else firing.first_ts),
            last_seen=_dt(firing.ts),
            value=firing.value,
            correlation_type=info.correlation_type,
        )


def _is_comment_only(doc: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in doc.splitlines())


# -- shared correlation driver ---------------------------------------------------------------------


class _Correlator:
    """Feeds matched records to the compiled correlations in time order and collects results.

    A record is ``(ts, event_id, arrival, matched rule keys, field values)``: records are ordered by
    time, then event id (so the arrival order of simultaneous events does not matter), then arrival.
    """

    SWEEP_BUDGET = 8  # groups swept per correlation and released timestamp

    def __init__(self, ruleset: RuleSet):
        self.ruleset = ruleset
        self.correlations = [ruleset._compile_correlation(r) for r in ruleset._correlation_order]
        self.consumers: dict[str, list[CompiledCorrelation]] = {}
        for corr in self.correlations:
            for key in set(corr.ref_keys):
                self.consumers.setdefault(key, []).append(corr)
        self.needed_fields = sorted({f for c in self.correlations for f in c.needed_fields()})
        self.released_ts: float | None = None
        self._users: dict[tuple, list[CompiledCorrelation]] = {}

    def release(self, ts: float, records: list[tuple]) -> list[RuleResult]:
        """Process all records at one timestamp (sorted by event id, then arrival)."""
        for rts, eid, _arrival, keys, values in records:
            users = self._users.get(keys)
            if users is None:  # the correlations consuming any of these rules, each once
                users = self._users[keys] = list(
                    {id(c): c for k in keys for c in self.consumers.get(k, ())}.values()
                )
            chain = [(rts, eid)]
            for corr in users:
                corr.add(rts, eid, chain, keys, values)
        results: list[RuleResult] = []
        for corr in self.correlations:
            if not corr.pending:
                continue
            for firing in corr.advance(ts):
                if self.ruleset.info[corr.key].emits:
                    results.append(self.ruleset.correlation_result(firing))
                order = firing.chain[-1][1] if firing.chain else ""
                for outer in self.consumers.get(corr.key, ()):
                    outer.add(firing.ts, order, firing.chain, [corr.key], firing.group)
        if self.released_ts is None or ts > self.released_ts:
            self.released_ts = ts
        for corr in self.correlations:  # a few idle groups per step: bounded state, no long pauses
            corr.evict_some(self.released_ts, self.SWEEP_BUDGET)
        return results

    def evict(self) -> None:
        if self.released_ts is not None:
            for corr in self.correlations:
                corr.evict(self.released_ts)

    def state_size(self) -> int:
        return sum(c.state_size() for c in self.correlations)


# -- streaming -----------------------------------------------------------------------------------


def normalise_event(event: Any) -> dict[str, Any]:
    """A DetectionEvent (its flat form), a flat dict, or a nested JSON object -> flat dict."""
    if isinstance(event, DetectionEvent):
        return event.flat()
    if isinstance(event, dict):
        for v in event.values():
            if isinstance(v, dict):
                return flatten_json(event)
        return event  # already flat: read, never modified
    if isinstance(event, Mapping):
        return normalise_event(dict(event))
    if isinstance(event, str | bytes):
        return normalise_event(json.loads(event))
    raise TypeError(f"an event must be a DetectionEvent or a JSON object, not {type(event).__name__}")


def content_id(flat: Mapping[str, Any]) -> str:
    """A deterministic id for an event without one (hash of its canonical JSON)."""
    text = json.dumps(flat, sort_keys=True, default=str, separators=(",", ":"))
    return "ev-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def event_timestamp(value: Any) -> float | None:
    when = as_datetime(value)
    return None if when is None else round(when.timestamp(), 6)


class StreamEvaluator:
    """Push events one by one; detection matches come back at once, correlation results as soon as
    their condition holds (events are reordered within ``lateness``; a timestamp is complete once a
    later one, beyond the lateness, has arrived, or at :meth:`flush`)."""

    def __init__(self, ruleset: RuleSet, *, lateness: timedelta, id_field: str, time_field: str):
        self.ruleset = ruleset
        self.lateness = lateness.total_seconds()
        self.id_field = id_field
        self.time_field = time_field
        self.correlator = _Correlator(ruleset)
        self.heap: list[tuple] = []
        self.max_ts: float | None = None
        self.seq = 0
        self.stats = {"events": 0, "untimed": 0, "late": 0}
        self._detections = list(ruleset.detections.items())

    def push(self, event: Any) -> list[RuleResult]:
        flat = normalise_event(event)
        eid = flat.get(self.id_field)
        eid = content_id(flat) if eid is None or eid == "" else str(eid)
        ts = event_timestamp(flat.get(self.time_field))
        seq = self.seq
        self.seq += 1
        self.stats["events"] += 1
        results: list[RuleResult] = []
        matched = []
        info = self.ruleset.info
        correlated = self.ruleset.correlated_keys
        for key, det in self._detections:
            if det.match(flat):
                if info[key].emits:
                    results.append(self.ruleset.match_result(key, eid, ts))
                if key in correlated:
                    matched.append(key)
        if ts is None:
            self.stats["untimed"] += 1
            return results
        if matched:
            values = {f: flat.get(f) for f in self.correlator.needed_fields}
            record = (ts, eid, seq, tuple(matched), values)
            released = self.correlator.released_ts
            if released is not None and ts <= released:
                self.stats["late"] += 1
                results.extend(self.correlator.release(ts, [record]))
            else:
                heapq.heappush(self.heap, record)
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
        results.extend(self._release(self.max_ts - self.lateness, inclusive=False))
        return results

    def _release(self, watermark: float, *, inclusive: bool) -> list[RuleResult]:
        results: list[RuleResult] = []
        heap = self.heap
        while heap and (heap[0][0] < watermark or (inclusive and heap[0][0] <= watermark)):
            ts = heap[0][0]
            batch = []
            while heap and heap[0][0] == ts:
                batch.append(heapq.heappop(heap))
            results.extend(self.correlator.release(ts, batch))
        return results

    def flush(self) -> list[RuleResult]:
        """End of input: release everything held back for lateness."""
        results = self._release(float("inf"), inclusive=True)
        self.correlator.evict()
        return results

    def state_size(self) -> int:
        """Entries held in correlation windows plus events held back for lateness."""
        return self.correlator.state_size() + len(self.heap)

    # -- persistence ---------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Correlation state as bytes (compressed JSON, no code): restore it after a restart."""
        state = {
            "version": 1,
            "rules": sorted(self.ruleset.info),
            "heap": [list(r[:3]) + [list(r[3]), r[4]] for r in self.heap],
            "max_ts": self.max_ts,
            "seq": self.seq,
            "released_ts": self.correlator.released_ts,
            "stats": self.stats,
            "correlations": {c.key: c.dump() for c in self.correlator.correlations},
        }
        return zlib.compress(json.dumps(state, default=str, separators=(",", ":")).encode())

    def restore(self, data: bytes) -> None:
        try:
            state = json.loads(zlib.decompress(data))
        except (zlib.error, ValueError) as exc:
            raise ValueError(f"not a kizashi stream snapshot: {exc}") from None
        if state.get("version") != 1:
            raise ValueError("unsupported snapshot version")
        if state["rules"] != sorted(self.ruleset.info):
            raise ValueError("the snapshot was taken with a different rule set")
        self.heap = [(r[0], r[1], r[2], tuple(r[3]), r[4]) for r in state["heap"]]
        heapq.heapify(self.heap)
        self.max_ts = state["max_ts"]
        self.seq = state["seq"]
        self.stats = dict(state["stats"])
        self.correlator.released_ts = state["released_ts"]
        for corr in self.correlator.correlations:
            corr.load(state["correlations"].get(corr.key, []))


# -- batch -----------------------------------------------------------------------------------------


class BatchEvaluator:
    """Whole-input evaluation: one vectorised mask per detection rule over a DataFrame, then the
    correlations over the matched rows in time order."""

    def __init__(self, ruleset: RuleSet, *, id_field: str, time_field: str):
        self.ruleset = ruleset
        self.id_field = id_field
        self.time_field = time_field

    def frame(self, events: Iterable[Any] | pd.DataFrame) -> pd.DataFrame:
        if isinstance(events, pd.DataFrame):
            return events.reset_index(drop=True)
        rows = [normalise_event(e) for e in events]
        return pd.DataFrame(rows, dtype=object) if rows else pd.DataFrame()

    def run(self, events: Iterable[Any] | pd.DataFrame) -> list[RuleResult]:
        frame = self.frame(events)
        n = len(frame)
        if n == 0:
            return []
        view = FrameView(frame)
        ids = self._ids(frame)
        ts = self._times(frame)
        info = self.ruleset.info
        results: list[RuleResult] = []
        masks: dict[str, np.ndarray] = {}
        for key, det in self.ruleset.detections.items():
            mask = det.mask(view)
            masks[key] = mask
            if info[key].emits:
                for row in np.flatnonzero(mask):
                    t = ts[row]
                    results.append(self.ruleset.match_result(key, ids[row], None if np.isnan(t) else float(t)))
        correlated = [k for k in masks if k in self.ruleset.correlated_keys]
        if correlated:
            results.extend(self._correlate(frame, ids, ts, {k: masks[k] for k in correlated}))
        results.sort(key=RuleResult.sort_key)
        return results

    def _ids(self, frame: pd.DataFrame) -> list[str]:
        if self.id_field in frame.columns:
            raw = frame[self.id_field].tolist()
        else:
            raw = [None] * len(frame)
        out = []
        for i, v in enumerate(raw):
            if v is None or v == "" or (isinstance(v, float) and np.isnan(v)):
                flat = {k: val for k, val in frame.iloc[i].items() if not _isna(val)}
                out.append(content_id(flat))
            else:
                out.append(str(v))
        return out

    def _times(self, frame: pd.DataFrame) -> np.ndarray:
        if self.time_field not in frame.columns:
            return np.full(len(frame), np.nan)
        col = frame[self.time_field]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            return np.round(col.to_numpy(dtype=float), 6)
        if pd.api.types.is_datetime64_any_dtype(col):
            c = col.dt.tz_localize("UTC") if col.dt.tz is None else col.dt.tz_convert("UTC")
            out = c.astype("int64").to_numpy() / 1e9
            out[c.isna().to_numpy()] = np.nan
            return np.round(out, 6)
        codes, uniques = pd.factorize(col.astype(object).to_numpy(), use_na_sentinel=True)
        parsed = np.array([np.nan if (t := event_timestamp(u)) is None else t for u in uniques] + [np.nan])
        return parsed[codes]

    def _correlate(self, frame, ids, ts, masks: dict[str, np.ndarray]) -> list[RuleResult]:
        correlator = _Correlator(self.ruleset)
        keys = list(masks)
        # which rules matched each row, as a bit pattern (one small tuple per distinct pattern)
        pattern = np.zeros(len(ts), dtype=np.int64)
        for i, k in enumerate(keys):
            pattern |= masks[k].astype(np.int64) << i
        rows = np.flatnonzero((pattern != 0) & ~np.isnan(ts))
        if rows.size == 0:
            return []
        id_keys = np.array([ids[r] for r in rows.tolist()], dtype=str)
        rows = rows[np.lexsort((rows, id_keys, ts[rows]))]  # time, then event id, then input order
        matched_of = {
            int(p): tuple(k for i, k in enumerate(keys) if int(p) >> i & 1) for p in np.unique(pattern[rows])
        }
        columns = {}
        for f in correlator.needed_fields:
            if f in frame.columns:
                columns[f] = [_plain(v) for v in frame[f].to_numpy(dtype=object)[rows].tolist()]
            else:
                columns[f] = [None] * len(rows)
        names = list(columns)
        col_lists = [columns[f] for f in names]
        results: list[RuleResult] = []
        batch: list[tuple] = []
        current: float | None = None
        for j, (row, t, p) in enumerate(zip(rows.tolist(), ts[rows].tolist(), pattern[rows].tolist(), strict=True)):
            if current is not None and t != current:
                results.extend(correlator.release(current, batch))
                batch = []
            current = t
            values = {f: col[j] for f, col in zip(names, col_lists, strict=True)}
            batch.append((t, ids[row], row, matched_of[p], values))
        if batch:
            results.extend(correlator.release(current, batch))
        return results


def _isna(value: Any) -> bool:
    if isinstance(value, list | tuple | dict):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    if value is None or (type(value) is float and value != value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
        return None if isinstance(value, float) and value != value else value
    if value is pd.NaT or value is pd.NA:
        return None
    return value
