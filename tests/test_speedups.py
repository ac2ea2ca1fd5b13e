"""p2psync/_speedups.c proves that the fields of an incoming ref.put are in normal form. It must
agree exactly with the Python checks it stands in for (fields.NORMAL_CHECKS and ops' rule for
'added'), and leave to Python every field it does not prove."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.engine import ops
from p2psync.errors import InvalidInput
from p2psync.model.fields import FIELDS, MAX_LONG, MAX_TEXT, NORMAL_CHECKS

speedups = pytest.importorskip("p2psync._speedups") if ops._speedups is None else ops._speedups


def test_the_extension_is_built_here() -> None:
    # The first-sync target (docs/performance.md) counts on it: a failed build must show up here.
    assert ops._speedups is not None, "p2psync/_speedups.c was not built: is a C compiler installed?"


class Text(str):
    """A str subclass: validate accepts it but it is not the exact type a JSON decoder makes."""


WHITE = ["\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u1680", "\u2000", "\u2028", "\u3000"]
PIECES = st.sampled_from(
    ["a", "Zoë", " ", "  ", "x y", "\ud800", "\udfff", "\x00", "\x7f", "10.", "10.1000/x", "2021", "2021-02", "-0",
     "1a", "A", "in press", "IN PRESS", "n.d.", "N.D.", "Submitted", "forthcoming", "\u0130", "\u212a", "\uff12",
     "𝒳", *WHITE]
)
TEXT = st.lists(PIECES, max_size=6).map("".join) | st.text(max_size=8)
PART = TEXT | st.none() | st.integers(-1, 1)
PERSON = (
    st.fixed_dictionaries({"family": PART}, optional={"given": PART})
    | st.fixed_dictionaries({"literal": PART})
    | st.dictionaries(st.sampled_from(["family", "given", "literal", "x"]), PART, max_size=3)
    | TEXT
)
VALUE = (
    TEXT
    | TEXT.map(Text)
    | st.integers(-5, 3000)
    | st.sampled_from([0, 2**53, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, True, False, 1.0])
    | st.lists(TEXT, max_size=4)
    | st.lists(st.sampled_from(["a", "b", "a b"]), max_size=4)
    | st.lists(PERSON, max_size=4)
    | st.tuples(TEXT)
    | st.just("x" * MAX_TEXT)
    | st.just("x" * (MAX_TEXT + 1))
    | st.just(["x" * (MAX_TEXT + 1)])
    | st.just("x" * MAX_LONG)
    | st.just("x" * (MAX_LONG + 1))
)
NAMES = st.sampled_from([*sorted(FIELDS), "added", "trashed", "deleted", "nonsense"])


def python_proves(name: str, value: Any) -> bool:
    """What the Python path of ops._check_ref_fields accepts without a question."""
    if value is None:
        return False  # left to Python, whose rule depends on the field
    if name == "added":
        return type(value) is int and 0 <= value <= ops.MAX_INT
    checker = NORMAL_CHECKS.get(name)
    return checker is not None and checker(value)


@settings(max_examples=6000, derandomize=True)
@given(NAMES, VALUE | st.none())
def test_proves_exactly_what_python_accepts(name: str, value: Any) -> None:
    unproven = speedups.unproven_fields({name: value})
    assert (unproven is None) == python_proves(name, value), (name, value)
    assert unproven in (None, [name])


@settings(max_examples=500, derandomize=True)
@given(st.dictionaries(NAMES, VALUE | st.none(), max_size=6))
def test_lists_what_it_did_not_prove_in_order(values: dict[str, Any]) -> None:
    expected = [name for name, value in values.items() if not python_proves(name, value)]
    assert speedups.unproven_fields(values) == (expected or None)


@settings(max_examples=1500, derandomize=True)
@given(st.dictionaries(NAMES, VALUE | st.none(), min_size=1, max_size=4))
def test_ops_check_gives_the_same_verdict_without_it(values: dict[str, Any]) -> None:
    op = {"op": "ref.put", "ref": "a" * 16, "fields": values, "seen": {}}

    def verdict() -> str:
        try:
            ops.check(op)
        except InvalidInput as exc:
            return str(exc)
        return "ok"

    with_c = verdict()
    saved = ops._speedups
    ops._speedups = None
    try:
        assert verdict() == with_c
    finally:
        ops._speedups = saved


def test_refuses_what_is_not_a_dict() -> None:
    with pytest.raises(TypeError):
        speedups.unproven_fields([("title", "x")])  # type: ignore[arg-type]
