"""kizashi's Sigma rule engine: evaluate Sigma detection and correlation rules natively.

pySigma (< 2) parses the rules; kizashi evaluates them, one concept per module:

* :mod:`.rule` -- a rule's identity (:func:`rule_key`), what results say about it, ATLAS tags;
* :mod:`.normalise` -- events and field values as the evaluator reads them;
* :mod:`.conditions` -- detection conditions as value tests (one test serves stream and batch);
* :mod:`.correlations` -- the correlation state machine and the driver that chains correlations;
* :mod:`.collection` -- :class:`RuleSet`: loading, checking and compiling rules;
* :mod:`.stream` / :mod:`.batch` -- the two evaluators (same results);
* :mod:`.results` -- :class:`RuleResult` and alerts; :mod:`.export` -- SIEM queries (pySigma backends).

::

    rs = RuleSet.bundled()                      # or RuleSet.from_paths([...]) / RuleSet.from_yaml(text)
    ev = rs.stream(lateness=timedelta(0))       # streaming: push events one by one
    results = ev.push(event) + ev.flush()
    results = rs.evaluate_batch(events)         # batch: same results, vectorised
    alerts = results_to_alerts(results, events_by_id)

Specifications: Sigma rules (v2.1) and Sigma correlation rules (v2.1), https://github.com/SigmaHQ/sigma-specification.
"""

from .batch import BatchEvaluator
from .collection import RuleSet
from .correlations import CompiledCorrelation, Correlator, Firing
from .exceptions import RuleLoadError, UnsupportedRuleError
from .results import RuleResult, results_to_alerts
from .rule import RuleInfo, atlas_ids_from_tags, check_atlas_tags, rule_key
from .stream import StreamEvaluator

__all__ = [
    "BatchEvaluator",
    "CompiledCorrelation",
    "Correlator",
    "Firing",
    "RuleInfo",
    "RuleLoadError",
    "RuleResult",
    "RuleSet",
    "StreamEvaluator",
    "UnsupportedRuleError",
    "atlas_ids_from_tags",
    "check_atlas_tags",
    "results_to_alerts",
    "rule_key",
]
