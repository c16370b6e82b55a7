"""Sigma detection rules compiled into predicates over flat events (one event, or a whole DataFrame).

pySigma parses the rule and applies the value modifiers; this module walks the resulting condition
tree (``ConditionAND``/``OR``/``NOT`` over field/value and keyword leaves, Sigma specification 2.1,
"Detection") and turns every leaf into a *value test*: a plain Python function of one field value.
The same value test serves both modes:

* :meth:`CompiledDetection.match` tests one flat event (a ``dict``);
* :meth:`CompiledDetection.mask` tests a pandas DataFrame column by column: each column is
  factorised, the value test runs once per *distinct* value and the result is broadcast back with
  numpy, so streaming and batch agree by construction.

Semantics (also in ``docs/rules.md``): string comparisons are case-insensitive unless ``cased`` or
``re`` is used; ``*``/``?`` and their escapes are exactly pySigma's parse; a list-valued field
matches if any element matches; a missing field never matches a value (``null`` tests for it).
Anything the evaluator cannot honour is refused when the rule is loaded (:class:`UnsupportedRuleError`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from ipaddress import ip_address
from typing import Any

import numpy as np
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
    TimestampPart,
)

from .exceptions import UnsupportedRuleError
from .normalise import as_datetime, as_number, as_text, is_missing

ValueTest = Callable[[Any], bool]
EventTest = Callable[[Mapping[str, Any]], bool]

#: distinct values remembered per leaf before the memo is cleared (bounds memory on unique ids)
MEMO_LIMIT = 65536


# -- value tests ----------------------------------------------------------------------------------


def sigma_string_regex(value: SigmaString, *, cased: bool) -> re.Pattern[str]:
    """A SigmaString (plain parts and wildcards, escapes already resolved by pySigma) as a regex."""
    parts = []
    for part in value.s:
        if part is SpecialChars.WILDCARD_MULTI:
            parts.append(".*")
        elif part is SpecialChars.WILDCARD_SINGLE:
            parts.append(".")
        elif isinstance(part, Placeholder):
            raise UnsupportedRuleError(
                f"unresolved placeholder %{part.name}% (expand modifier): give its values with "
                f"RuleSet(..., placeholders={{{part.name!r}: [...]}})"
            )
        else:
            parts.append(re.escape(part))
    flags = re.DOTALL | (0 if cased else re.IGNORECASE)
    return re.compile("".join(parts), flags)


def _string_test(value: SigmaString) -> ValueTest:
    cased = isinstance(value, SigmaCasedString)
    if not value.contains_special() and not any(isinstance(p, Placeholder) for p in value.s):
        plain = "".join(p for p in value.s if isinstance(p, str))  # escapes resolved (to_plain re-escapes)
        if cased:
            return lambda v: as_text(v) == plain
        folded = plain.lower()
        return lambda v: as_text(v).lower() == folded
    pattern = sigma_string_regex(value, cased=cased)
    return lambda v: pattern.fullmatch(as_text(v)) is not None


def _number_test(value: SigmaNumber) -> ValueTest:
    expected = float(value.number)

    def test(v: Any) -> bool:
        number = as_number(v)
        return number is not None and number == expected

    return test


def _bool_test(value: SigmaBool) -> ValueTest:
    expected = bool(value.boolean)

    def test(v: Any) -> bool:
        if isinstance(v, bool):
            return v is expected
        if isinstance(v, str):
            return v.strip().lower() == ("true" if expected else "false")
        return False

    return test


_RE_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: re.IGNORECASE,
    SigmaRegularExpressionFlag.MULTILINE: re.MULTILINE,
    SigmaRegularExpressionFlag.DOTALL: re.DOTALL,
}


def _regex_test(value: SigmaRegularExpression) -> ValueTest:
    flags = 0
    for flag in value.flags:
        flags |= _RE_FLAGS[flag]
    pattern = re.compile(str(value.regexp), flags)
    return lambda v: pattern.search(as_text(v)) is not None


def _cidr_test(value: SigmaCIDRExpression) -> ValueTest:
    network = value.network

    def test(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        try:
            return ip_address(v.strip()) in network
        except ValueError:
            return False

    return test


_COMPARE = {
    CompareOperators.LT: lambda a, b: a < b,
    CompareOperators.LTE: lambda a, b: a <= b,
    CompareOperators.GT: lambda a, b: a > b,
    CompareOperators.GTE: lambda a, b: a >= b,
    CompareOperators.NEQ: lambda a, b: a != b,
}


def _compare_test(value: SigmaCompareExpression) -> ValueTest:
    limit = float(value.number.number)
    op = _COMPARE[value.op]

    def test(v: Any) -> bool:
        number = as_number(v)
        return number is not None and op(number, limit)

    return test


_TIMESTAMP_PART: dict[TimestampPart, Callable[[datetime], int]] = {
    TimestampPart.MINUTE: lambda d: d.minute,
    TimestampPart.HOUR: lambda d: d.hour,
    TimestampPart.DAY: lambda d: d.day,
    TimestampPart.WEEK: lambda d: d.isocalendar()[1],
    TimestampPart.MONTH: lambda d: d.month,
    TimestampPart.YEAR: lambda d: d.year,
}


def _timestamp_part_test(value: SigmaTimestampPart) -> ValueTest:
    part = _TIMESTAMP_PART[value.timestamp_part]
    expected = int(value.number)

    def test(v: Any) -> bool:
        when = as_datetime(v)
        return when is not None and part(when) == expected

    return test


def value_test(value: Any) -> ValueTest:
    """The test one Sigma value (after modifiers) applies to one scalar field value."""
    if isinstance(value, SigmaTimestampPart):  # a SigmaNumber subclass: check first
        return _timestamp_part_test(value)
    if isinstance(value, SigmaString):
        return _string_test(value)
    if isinstance(value, SigmaBool):
        return _bool_test(value)
    if isinstance(value, SigmaNumber):
        return _number_test(value)
    if isinstance(value, SigmaRegularExpression):
        return _regex_test(value)
    if isinstance(value, SigmaCIDRExpression):
        return _cidr_test(value)
    if isinstance(value, SigmaCompareExpression):
        return _compare_test(value)
    if isinstance(value, SigmaExpansion):
        tests = [value_test(v) for v in value.values]
        return lambda v: any(t(v) for t in tests)
    raise UnsupportedRuleError(f"values of type {type(value).__name__} cannot be evaluated by kizashi")


def any_element(test: ValueTest) -> ValueTest:
    """Lift a scalar test to a field value: missing never matches, a list matches if any element does."""

    def lifted(v: Any) -> bool:
        if is_missing(v):
            return False
        if isinstance(v, list | tuple):
            return any(test(x) for x in v if not is_missing(x))
        if isinstance(v, Mapping):
            return False
        return test(v)

    return lifted


def memoised(test: ValueTest) -> ValueTest:
    """Remember the answer per distinct hashable value (detector names, stages, accounts repeat)."""
    memo: dict[Any, bool] = {}

    def cached(v: Any) -> bool:
        try:
            return memo[v]
        except KeyError:
            result = memo[v] = test(v)
            if len(memo) > MEMO_LIMIT:
                memo.clear()
            return result
        except TypeError:  # unhashable (a list)
            return test(v)

    return cached


# -- condition tree -> plan ------------------------------------------------------------------------


class Node:
    """A compiled condition node: ``match(event)`` for one flat event, ``mask(frame)`` for many,
    ``closure()`` the same predicate as one flat closure (the streaming hot path)."""

    def match(self, event: Mapping[str, Any]) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def closure(self) -> EventTest:
        return self.match

    def mask(self, frame: FrameView) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class _JunctionNode(Node):
    """AND / OR over several nodes (subclasses say which)."""

    _reduce: Callable[[Iterable[bool]], bool]  # all | any
    _start: bool  # the mask before any argument: all True for AND, all False for OR
    _combine: Callable[..., np.ndarray]  # np.logical_and | np.logical_or

    def __init__(self, args: list[Node]):
        self.args = args

    @staticmethod
    def _pair(f: EventTest, g: EventTest) -> EventTest:  # pragma: no cover - abstract
        raise NotImplementedError

    def match(self, event):
        return self._reduce(a.match(event) for a in self.args)

    def closure(self):
        fns = [a.closure() for a in self.args]
        if len(fns) == 1:
            return fns[0]
        if len(fns) == 2:
            return self._pair(*fns)
        reduce = self._reduce
        return lambda e: reduce(f(e) for f in fns)

    def mask(self, frame):
        out = np.full(frame.n, self._start, dtype=bool)
        for a in self.args:
            self._combine(out, a.mask(frame), out=out)
        return out


class AndNode(_JunctionNode):
    _reduce = staticmethod(all)
    _start = True
    _combine = staticmethod(np.logical_and)

    @staticmethod
    def _pair(f, g):
        return lambda e: f(e) and g(e)


class OrNode(_JunctionNode):
    _reduce = staticmethod(any)
    _start = False
    _combine = staticmethod(np.logical_or)

    @staticmethod
    def _pair(f, g):
        return lambda e: f(e) or g(e)


class NotNode(Node):
    def __init__(self, arg: Node):
        self.arg = arg

    def match(self, event):
        return not self.arg.match(event)

    def closure(self):
        f = self.arg.closure()
        return lambda e: not f(e)

    def mask(self, frame):
        return ~self.arg.mask(frame)


class FieldValueNode(Node):
    """``field`` holds a value passing ``test`` (any element of a list)."""

    def __init__(self, field: str, test: ValueTest):
        self.field = field
        self.test = memoised(any_element(test))

    def match(self, event):
        return self.test(event.get(self.field))

    def closure(self):
        field, test = self.field, self.test
        return lambda e: test(e.get(field))

    def mask(self, frame):
        return frame.apply(self.field, self.test)


class NullNode(Node):
    """``field: null`` -- the field is absent or null."""

    def __init__(self, field: str):
        self.field = field

    def match(self, event):
        return is_missing(event.get(self.field))

    def mask(self, frame):
        return frame.apply(self.field, is_missing)


class ExistsNode(Node):
    """``field|exists: true/false``."""

    def __init__(self, field: str, wanted: bool):
        self.field = field
        self.wanted = wanted

    def _test(self, v: Any) -> bool:
        return (not is_missing(v)) is self.wanted

    def match(self, event):
        return self._test(event.get(self.field))

    def mask(self, frame):
        return frame.apply(self.field, self._test)


class FieldRefNode(Node):
    """``field|fieldref: other`` (optionally startswith/endswith/contains): compares two fields."""

    def __init__(self, field: str, ref: SigmaFieldReference):
        self.field = field
        self.other = ref.field
        self.starts = ref.starts_with
        self.ends = ref.ends_with

    def _pair(self, a: Any, b: Any) -> bool:
        if is_missing(a) or is_missing(b) or isinstance(a, list | tuple | Mapping) or isinstance(
            b, list | tuple | Mapping
        ):
            return False
        left, right = as_text(a).lower(), as_text(b).lower()
        if self.starts and self.ends:
            return right in left
        if self.starts:
            return left.startswith(right)
        if self.ends:
            return left.endswith(right)
        return left == right

    def match(self, event):
        return self._pair(event.get(self.field), event.get(self.other))

    def mask(self, frame):
        left, right = frame.column(self.field), frame.column(self.other)
        return np.fromiter((self._pair(a, b) for a, b in zip(left, right, strict=True)), bool, frame.n)


class KeywordNode(Node):
    """A field-less (keyword) value: matches if any field of the event holds it."""

    def __init__(self, test: ValueTest):
        self.test = memoised(any_element(test))

    def match(self, event):
        return any(self.test(v) for v in event.values() if not isinstance(v, Mapping))

    def mask(self, frame):
        out = np.zeros(frame.n, dtype=bool)
        for name in frame.columns:
            out |= frame.apply(name, self.test)
        return out


def compile_condition(node: Any) -> Node:
    """pySigma's postprocessed condition tree -> :class:`Node` tree."""
    if isinstance(node, ConditionAND):
        return AndNode([compile_condition(a) for a in node.args])
    if isinstance(node, ConditionOR):
        return OrNode([compile_condition(a) for a in node.args])
    if isinstance(node, ConditionNOT):
        return NotNode(compile_condition(node.args[0]))
    if isinstance(node, ConditionFieldEqualsValueExpression):
        value = node.value
        if isinstance(value, SigmaNull):
            return NullNode(node.field)
        if isinstance(value, SigmaExists):
            return ExistsNode(node.field, bool(value.exists))
        if isinstance(value, SigmaFieldReference):
            return FieldRefNode(node.field, value)
        return FieldValueNode(node.field, value_test(value))
    if isinstance(node, ConditionValueExpression):
        if isinstance(node.value, SigmaNull | SigmaExists | SigmaFieldReference):
            raise UnsupportedRuleError(f"a keyword (field-less) value cannot be {type(node.value).__name__}")
        return KeywordNode(value_test(node.value))
    raise UnsupportedRuleError(f"condition element {type(node).__name__} cannot be evaluated by kizashi")


class CompiledDetection:
    """One Sigma detection rule as a predicate (``match``) and a vectorised mask (``mask``)."""

    def __init__(self, rule: SigmaRule):
        self.rule = rule
        where = f"rule {rule.title!r}" + (f" ({rule.source.path})" if rule.source and rule.source.path else "")
        try:
            roots = [c.parsed for c in rule.detection.parsed_condition]
            nodes = [compile_condition(r) for r in roots]
        except UnsupportedRuleError as exc:
            raise UnsupportedRuleError(f"{where}: {exc}") from None
        # a list of conditions is a disjunction (each would be a query of its own)
        self.root: Node = nodes[0] if len(nodes) == 1 else OrNode(nodes)
        self.match: EventTest = self.root.closure()


    def mask(self, frame: FrameView) -> np.ndarray:
        return self.root.mask(frame)


# -- vectorised view over a DataFrame -------------------------------------------------------------


class FrameView:
    """A DataFrame of flat events seen column by column; each column is factorised once and every
    value test runs once per distinct value (numpy broadcasts the answers back to the rows)."""

    def __init__(self, frame: Any):
        self.frame = frame
        self.n = len(frame)
        self.columns = [str(c) for c in frame.columns]
        self._factors: dict[str, tuple[np.ndarray, list[Any]]] = {}

    def column(self, name: str) -> Iterable[Any]:
        if name not in self.frame.columns:
            return [None] * self.n
        return self.frame[name].tolist()

    def factor(self, name: str) -> tuple[np.ndarray, list[Any]]:
        if name not in self._factors:
            import pandas as pd  # the batch evaluator's frames are pandas; the stream path never gets here

            series = self.frame[name]
            if isinstance(series.dtype, pd.CategoricalDtype):
                codes = series.cat.codes.to_numpy()
                uniques = list(series.cat.categories)
            else:
                values = series.to_numpy(dtype=object)
                if series.dtype == object and any(isinstance(v, list) for v in values):
                    # lists are unhashable: factorise them as tuples (a 1-D object array of tuples)
                    values = np.fromiter(
                        (tuple(v) if isinstance(v, list) else v for v in values), dtype=object, count=len(values)
                    )
                codes, uniq = pd.factorize(values, use_na_sentinel=True)
                uniques = list(uniq)
            self._factors[name] = (codes, uniques)
        return self._factors[name]

    def apply(self, name: str, test: ValueTest) -> np.ndarray:
        if name not in self.frame.columns:
            return np.full(self.n, bool(test(None)))
        codes, uniques = self.factor(name)
        answers = np.fromiter((bool(test(u)) for u in uniques), dtype=bool, count=len(uniques))
        answers = np.append(answers, bool(test(None)))  # code -1: missing
        return answers[codes]
