"""Canonical JSON: one byte string for one value, on every machine.

Keys sorted (by code point), no insignificant white space, UTF-8 kept as is, no floats (every
number the library stores is an integer), so that two machines that hold the same state hold the
same bytes. orjson produces exactly these bytes (tests/test_canonical.py holds it to the standard
library's json with sort_keys, compact separators and ensure_ascii=False) at a tenth of the cost,
which matters when a first sync encodes every reference of a library.
"""

from __future__ import annotations

from typing import Any

import orjson

_SORTED = orjson.OPT_SORT_KEYS


def encode(value: Any) -> bytes:
    return orjson.dumps(value, option=_SORTED)


def dumps(value: Any) -> str:
    return orjson.dumps(value, option=_SORTED).decode("utf-8")


def loads(raw: bytes | str) -> Any:
    """Decode JSON text. Raises ValueError (orjson.JSONDecodeError) on anything that is not
    strict JSON: NaN, lone surrogates and trailing garbage are refused, and integers beyond 64
    bits decode as floats, which every schema check then refuses."""
    return orjson.loads(raw)
