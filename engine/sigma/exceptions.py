"""The two ways a rule set is refused: a rule kizashi cannot load, or one it cannot evaluate faithfully.

Both are raised when rules are loaded, never while events are evaluated (pySigma keeps its own
``SigmaError`` for what it cannot parse; :class:`~.collection.RuleSet` reports those as RuleLoadError).
"""


class RuleLoadError(ValueError):
    """A rule file could not be read or parsed, or it uses something kizashi cannot evaluate."""


class UnsupportedRuleError(ValueError):
    """pySigma parsed the rule, but kizashi cannot evaluate it faithfully."""
