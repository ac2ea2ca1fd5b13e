"""canonical.py uses orjson for speed; hold it to the standard library's json, which is what the
spec's rules (protocol/changesets.md §2) describe: sorted keys, compact, UTF-8 kept as is."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.engine import canonical

# Any code point but a lone surrogate (which has no canonical form at all).
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=30,
)


def reference(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@settings(max_examples=2000, derandomize=True)
@given(VALUES)
def test_canonical_matches_the_standard_library(value: Any) -> None:
    assert canonical.dumps(value) == reference(value)
    assert canonical.encode(value) == reference(value).encode("utf-8")
    assert canonical.loads(canonical.encode(value)) == value


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '"\\ud800"', '{"a":1} x', "[" * 2000 + "]" * 2000])
def test_what_has_no_canonical_form_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        canonical.encode(canonical.loads(text))
