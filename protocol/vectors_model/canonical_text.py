"""Canonical JSON (changesets.md §2), written from the spec's words, independently of json.dumps:
keys sorted by code point, no white space, UTF-8 kept as is, the short escapes and \\u00XX for
other control characters, integers only.
"""

from __future__ import annotations

from typing import Any

Json = Any

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _spec_text(value: Json) -> str:
    """Canonical JSON as protocol/changesets.md describes it, written independently of json.dumps."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        out = []
        for ch in value:
            if ch in _SHORT_ESCAPES:
                out.append(_SHORT_ESCAPES[ch])
            elif ord(ch) < 0x20:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(value, list):
        return "[" + ",".join(_spec_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(_spec_text(k) + ":" + _spec_text(value[k]) for k in sorted(value)) + "}"
    raise TypeError(f"not a protocol value: {value!r}")


def encode(value: Json) -> bytes:
    """canonical(value) in UTF-8. A value with no canonical form (a float, a lone surrogate)
    raises TypeError or ValueError (UnicodeEncodeError)."""
    return _spec_text(value).encode("utf-8")
