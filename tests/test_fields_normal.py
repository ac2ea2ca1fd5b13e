"""fields.is_normal (the fast check of incoming operations) must agree exactly with its
definition: validate(name, value) returns value unchanged and does not raise."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.errors import InvalidValue
from p2psync.model.fields import FIELDS, MAX_TEXT, is_normal, validate

# Text that is often already normal, often not: spaces, tabs, CR/LF, non-ASCII, lone surrogates.
PIECES = st.sampled_from(["a", "Zoë", " ", "  ", "\t", "\r\n", "\n", "x y", "\ud800", "10.1000/x", "2021", "é"])
TEXT = st.lists(PIECES, max_size=6).map("".join) | st.text(max_size=8)
PERSON_PART = TEXT | st.none() | st.integers()
PERSON = (
    st.fixed_dictionaries({"family": PERSON_PART}, optional={"given": PERSON_PART})
    | st.fixed_dictionaries({"literal": PERSON_PART})
    | st.dictionaries(st.sampled_from(["family", "given", "literal", "x"]), PERSON_PART, max_size=3)
    | TEXT
)
VALUE = (
    st.none()
    | TEXT
    | st.integers(-5, 3000)
    | st.booleans()
    | st.lists(TEXT, max_size=4)
    | st.lists(PERSON, max_size=4)
    | st.just("x" * (MAX_TEXT + 1))
    | st.just(["x" * (MAX_TEXT + 1)])
)


def reference(name: str, value: Any) -> bool:
    try:
        return bool(validate(name, value) == value)
    except InvalidValue:
        return False


@settings(max_examples=4000, derandomize=True)
@given(st.sampled_from(sorted(FIELDS)), VALUE)
def test_is_normal_agrees_with_validate(name: str, value: Any) -> None:
    assert is_normal(name, value) == reference(name, value), (name, value)


def test_the_c_speedups_are_built_here() -> None:
    # tests/test_speedups.py skips without the extension; the first-sync figures count on it, so a
    # failed build (no C compiler, a compile error) must fail the suite here.
    from p2psync.engine import ops

    assert ops._speedups is not None, "p2psync/_speedups.c was not built: is a C compiler installed?"
