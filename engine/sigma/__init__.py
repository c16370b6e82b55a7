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

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .batch import BatchEvaluator
    from .collection import RuleSet
    from .correlations import CompiledCorrelation, Correlator, Firing
    from .exceptions import RuleLoadError, UnsupportedRuleError
    from .microbatch import MicroBatchEvaluator
    from .results import RuleResult, results_to_alerts
    from .rule import RuleInfo, atlas_ids_from_tags, check_atlas_tags, rule_key
    from .stream import StreamEvaluator

#: public name -> defining module, imported on first use (the batch evaluator needs pandas, results
#: the pydantic event model: ``kizashi rules eval`` on a few events should not pay for either)
_HOME = {
    "BatchEvaluator": "batch",
    "CompiledCorrelation": "correlations",
    "Correlator": "correlations",
    "Firing": "correlations",
    "MicroBatchEvaluator": "microbatch",
    "RuleInfo": "rule",
    "RuleLoadError": "exceptions",
    "RuleResult": "results",
    "RuleSet": "collection",
    "StreamEvaluator": "stream",
    "UnsupportedRuleError": "exceptions",
    "atlas_ids_from_tags": "rule",
    "check_atlas_tags": "rule",
    "results_to_alerts": "results",
    "rule_key": "rule",
}

__all__ = [
    "BatchEvaluator",
    "CompiledCorrelation",
    "Correlator",
    "Firing",
    "MicroBatchEvaluator",
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


def __getattr__(name: str):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
