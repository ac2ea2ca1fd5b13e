"""Canonical JSON: one byte string for one value, on every machine.

Keys sorted, no insignificant white space, UTF-8 kept as is, no floats (every number the library
stores is an integer), so that two machines that hold the same state hold the same bytes.
"""

from __future__ import annotations

import json
from typing import Any


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(value: Any) -> bytes:
    return dumps(value).encode("utf-8")
