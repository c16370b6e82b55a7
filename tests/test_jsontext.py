"""kizashi.engine.jsontext reads JSON exactly as ``json.loads`` does: the same values (types
included) or the same error message, over generated documents and the texts where orjson and the
standard library part ways (integers beyond 64 bits, NaN, lone surrogates, control characters)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kizashi.engine.jsontext import loads, loads_checked

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(allow_nan=True),
                     st.text())
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=5), inner, max_size=4)),
                       max_leaves=20)


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def _outcome(f, text):
    try:
        return "ok", f(text)
    except (ValueError, RecursionError) as exc:
        return "error", f"{type(exc).__name__}: {exc}"


def _check(text) -> None:
    got, want = _outcome(loads, text), _outcome(json.loads, text)
    assert got[0] == want[0], (text, got, want)
    assert _same(got[1], want[1]) if got[0] == "ok" else got[1] == want[1]


@settings(max_examples=400, deadline=None)
@given(value=_values, ascii_only=st.booleans())
def test_documents_read_as_json_loads_reads_them(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)
    _check(text)
    _check(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet='{}[]":,.-+eE0123456789 \\/nultrfaNIiy\x00\x01\ud800\udc00\u00e9', max_size=30))
def test_arbitrary_texts_give_the_same_value_or_the_same_error(text):
    _check(text)


@pytest.mark.parametrize("text", [
    "18446744073709551616", "-9999999999999999999", '{"n": 123456789012345678901234567890}',
    "NaN", "[Infinity, -Infinity]", "1e400", '"\\ud800"', '"\ud800"', '{"a": "x\ny"}', "[1,]", '{"a":1,"a":2}',
    "\ufeff{}", "[" * 5000 + "]" * 5000,
], ids=lambda text: repr(text[:24]))
def test_where_orjson_and_the_standard_library_differ(text):
    _check(text)


@pytest.mark.parametrize("value", [bytearray(b'{"a": [1, 2.5, "x"]}'), memoryview(b"{}"), 3, None])
def test_other_inputs_behave_as_with_json_loads(value):
    def outcome(f):
        try:
            return "ok", f(value)
        except Exception as exc:  # noqa: BLE001 - the kind and message are what is compared
            return type(exc).__name__, str(exc)

    assert outcome(loads) == outcome(json.loads)


def test_unicode_is_checked_only_when_orjson_read_the_text():
    assert loads_checked('{"a": "\\ud83d\\ude00"}') == ({"a": "\U0001F600"}, True)
    assert loads_checked('{"a": "\\ud800"}') == ({"a": "\ud800"}, False)
    assert loads_checked("NaN")[1] is False
