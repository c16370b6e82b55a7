"""JSON text read exactly as the standard library's ``json.loads`` reads it, several times faster.

orjson gives the same Python values as ``json.loads`` for every document it accepts, with one
exception: an integer beyond 64 bits becomes a float. A text holding a run of 19 or more digits
(every such integer has one) and any text orjson refuses (``NaN``, ``Infinity``, a lone UTF-16
surrogate, nesting past its limit) is read by ``json.loads`` instead, so the value, or the error and
its message, is the standard library's. ``tests/test_jsontext.py`` checks this against ``json.loads``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19  # 19 digits in a row: every integer orjson would read as a float has them
_BYTES = (bytes, bytearray)  # anything else goes to json.loads as it is (which says what it accepts)


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``, the same value or the same error."""
    return loads_checked(text)[0]


def loads_checked(text: str | bytes) -> tuple[Any, bool]:
    """``(json.loads(text), unicode_checked)``: ``unicode_checked`` is True when orjson read the
    text, which it does only if every string in it is valid Unicode (no lone surrogate)."""
    raw = text.encode("utf-8", "surrogatepass") if type(text) is str else text
    if type(raw) in _BYTES and _LONG_RUN not in raw.translate(_DIGITS_TO_ZERO):  # a lookup per byte, in C
        try:
            return orjson.loads(raw), True
        except orjson.JSONDecodeError:
            pass
    return json.loads(text), False
