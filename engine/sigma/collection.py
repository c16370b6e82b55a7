"""RuleSet: Sigma rules loaded from YAML text, files, folders or the bundled pack, compiled once.

Loading is where everything is checked: pySigma parses, every detection compiles to its value
tests (:mod:`.conditions`), correlations are ordered and compiled (:mod:`.correlations`), and
anything kizashi cannot evaluate faithfully is refused here (:class:`RuleLoadError`), never while
events flow. The rule set hands out evaluators::

    rs = RuleSet.bundled()                      # or RuleSet.from_paths([...]) / RuleSet.from_yaml(text)
    ev = rs.stream(lateness=timedelta(0))       # streaming: push events one by one
    results = ev.push(event) + ev.flush()
    results = rs.evaluate_batch(events)         # batch: same results, vectorised
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import ValueListPlaceholderTransformation
from sigma.rule import SigmaRule

from .conditions import CompiledDetection
from .correlations import CompiledCorrelation, dependency_order
from .exceptions import RuleLoadError, UnsupportedRuleError
from .results import RuleResult
from .rule import RuleInfo, rule_key, rule_references
from .stream import StreamEvaluator

if TYPE_CHECKING:
    import pandas as pd

    from .microbatch import MicroBatchEvaluator

_DOC_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)


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
        if collection.errors:
            raise RuleLoadError("; ".join(str(e) for e in collection.errors))
        self.collection = collection
        self.sources = dict(sources or {})
        self.placeholders = dict(placeholders or {})
        self.dedup = dedup
        self.detections: dict[str, CompiledDetection] = self._compile_detections(collection.rules)
        self.correlation_rules: list[SigmaCorrelationRule] = [
            r for r in collection.rules if isinstance(r, SigmaCorrelationRule)
        ]
        self.info: dict[str, RuleInfo] = self._rule_infos(collection.rules, self.correlation_rules)
        self._correlation_order = dependency_order(self.correlation_rules)
        try:  # validate now: unsupported correlations are refused at load time
            self.compile_correlations()
        except UnsupportedRuleError as exc:
            raise RuleLoadError(str(exc)) from None
        #: rules some correlation consumes (their matches go to the correlation driver)
        self.correlated_keys = {rule_key(ref.rule) for rule in self.correlation_rules for ref in (rule.rules or [])}

    def _placeholder_pipeline(self) -> ProcessingPipeline | None:
        """Sigma ``%placeholder%`` values (``expand`` modifier) filled in from ``placeholders``."""
        if not self.placeholders:
            return None
        return ProcessingPipeline(
            items=[ProcessingItem(ValueListPlaceholderTransformation())],
            vars={k: list(v) for k, v in self.placeholders.items()},
        )

    def _compile_detections(self, rules: Sequence[Any]) -> dict[str, CompiledDetection]:
        """Every detection rule compiled; rule keys must be unique across all rules."""
        pipeline = self._placeholder_pipeline()
        seen: set[str] = set()
        detections: dict[str, CompiledDetection] = {}
        for rule in rules:
            key = rule_key(rule)
            if key in seen:
                raise RuleLoadError(f"two rules share the id/name {key!r}")
            seen.add(key)
            if isinstance(rule, SigmaCorrelationRule):
                continue
            if not isinstance(rule, SigmaRule):  # pragma: no cover - pySigma only yields these two kinds
                raise RuleLoadError(f"unsupported rule object {type(rule).__name__}")
            try:
                if pipeline is not None:
                    pipeline.apply(rule)
                detections[key] = CompiledDetection(rule)
            except (SigmaError, UnsupportedRuleError) as exc:
                raise RuleLoadError(str(exc)) from None
        return detections

    @staticmethod
    def _rule_infos(rules: Sequence[Any], correlations: Sequence[SigmaCorrelationRule]) -> dict[str, RuleInfo]:
        """Each rule's info; a rule emits its own results unless every correlation using it has
        ``generate: false``."""
        users: dict[str, list[SigmaCorrelationRule]] = {}
        for corr in correlations:
            for ref in corr.rules or []:
                users.setdefault(rule_key(ref.rule), []).append(corr)
        infos = {}
        for rule in rules:
            key = rule_key(rule)
            used_by = users.get(key, [])
            infos[key] = RuleInfo.of(rule, emits=not used_by or any(u.generate for u in used_by))
        return infos

    def compile_correlations(self) -> list[CompiledCorrelation]:
        """Fresh correlation state machines, in dependency order (inner before outer)."""
        return [CompiledCorrelation(rule, dedup=self.dedup) for rule in self._correlation_order]

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
            rules.extend(collection.rules)
            sources.update(_sources_by_reference(text))
            rules.extend(collection.filters)
        try:
            combined = SigmaCollection(rules)
        except SigmaError as exc:
            raise RuleLoadError(str(exc)) from None
        return cls(combined, sources, **kwargs)

    # -- look-ups ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.info)

    def rule(self, rule_id: str) -> SigmaRule | SigmaCorrelationRule:
        """One rule, by its key (:func:`.rule.rule_key`) or its name."""
        for rule in self.collection.rules:
            if rule_key(rule) == rule_id or rule.name == rule_id:
                return rule
        raise KeyError(f"no rule {rule_id!r} in this rule set")

    def rule_text(self, rule_id: str) -> str:
        """The YAML source of one rule (by id or name)."""
        if rule_id in self.sources:
            return self.sources[rule_id]
        rule = self.rule(rule_id)
        for ref in rule_references(rule):
            if ref in self.sources:
                return self.sources[ref]
        return yaml.safe_dump(rule.to_dict(), sort_keys=False, allow_unicode=True)

    def observing(self) -> RuleSet:
        """This rule set with every detection rule reporting its matches, whatever ``generate`` says:
        the pipeline keeps the matches that are not alerts as risk observations (``info`` of the
        original set still says which rules emit)."""
        import copy
        from dataclasses import replace

        view = copy.copy(self)
        view.info = {k: replace(i, emits=True) if i.correlation_type is None else i for k, i in self.info.items()}
        return view

    # -- evaluation --------------------------------------------------------------------------
    def stream(
        self,
        lateness: timedelta = timedelta(0),
        id_field: str = "id",
        time_field: str = "time",
    ) -> StreamEvaluator:
        return StreamEvaluator(self, lateness=lateness, id_field=id_field, time_field=time_field)

    def microbatch(
        self,
        lateness: timedelta = timedelta(0),
        id_field: str = "id",
        time_field: str = "time",
        *,
        max_events: int = 1024,
        max_ms: float = 100.0,
    ) -> MicroBatchEvaluator:
        """Streaming in micro-batches (``max_events`` or ``max_ms``, whichever first), detection rules
        tested column-wise: the :meth:`stream` evaluator's results, in its order, per batch."""
        from .microbatch import MicroBatchEvaluator

        return MicroBatchEvaluator(self, lateness=lateness, id_field=id_field, time_field=time_field,
                                   max_events=max_events, max_ms=max_ms)

    def evaluate_batch(
        self, events: Iterable[Any] | pd.DataFrame, id_field: str = "id", time_field: str = "time"
    ) -> list[RuleResult]:
        """Evaluate a whole input at once: detection rules as vectorised column masks, correlations
        over the matches in time order. Gives the same results as :meth:`stream` (sorted)."""
        from .batch import BatchEvaluator  # pandas, imported when a batch is evaluated

        return BatchEvaluator(self, id_field=id_field, time_field=time_field).run(events)


def _sources_by_reference(text: str) -> dict[str, str]:
    """Each YAML document of ``text`` under its rule's id and name (for :meth:`RuleSet.rule_text`)."""
    sources = {}
    for doc in _DOC_SPLIT.split(text):
        if not doc.strip() or _is_comment_only(doc):
            continue
        try:
            data = yaml.safe_load(doc)
        except yaml.YAMLError:
            continue
        if isinstance(data, dict):
            for k in ("id", "name"):
                if data.get(k):
                    sources[str(data[k])] = doc.strip() + "\n"
    return sources


def _is_comment_only(doc: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("#") for line in doc.splitlines())
