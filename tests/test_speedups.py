"""p2psync/_speedups.c proves that the fields of an incoming ref.put are in normal form. It must
agree exactly with the Python checks it stands in for (fields.NORMAL_CHECKS and ops' rule for
'added'), and leave to Python every field it does not prove."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.engine import changesets, ops
from p2psync.engine.canonical import encode
from p2psync.errors import InvalidInput
from p2psync.model.fields import FIELDS, MAX_LONG, MAX_TEXT, NORMAL_CHECKS

speedups: Any = ops._speedups
# Every other test here is about the extension; without it they have nothing to test.
pytestmark = pytest.mark.skipif(speedups is None, reason="p2psync/_speedups.c is not built")


class Text(str):
    """A str subclass: validate accepts it but it is not the exact type a JSON decoder makes."""


WHITE = ["\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u1680", "\u2000", "\u2028", "\u3000"]
PIECES = st.sampled_from(
    [
        "a",
        "Zoë",
        " ",
        "  ",
        "x y",
        "\ud800",
        "\udfff",
        "\x00",
        "\x7f",
        "10.",
        "10.1000/x",
        "2021",
        "2021-02",
        "-0",
        "1a",
        "A",
        "in press",
        "IN PRESS",
        "n.d.",
        "N.D.",
        "Submitted",
        "forthcoming",
        "\u0130",
        "\u212a",
        "\uff12",
        "𝒳",
        *WHITE,
    ]
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


def assert_same_without_c(outcome: Callable[[], Any]) -> None:
    """outcome() gives the same with the C proof as with the Python checks alone."""
    with_c = outcome()
    saved = ops._speedups
    ops._speedups = None
    try:
        assert outcome() == with_c
    finally:
        ops._speedups = saved


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

    assert_same_without_c(verdict)


def test_refuses_what_is_not_a_dict() -> None:
    with pytest.raises(TypeError):
        speedups.unproven_fields([("title", "x")])  # type: ignore[arg-type]


# --- whole entries: changesets.parse with and without the C proof of leading ref.puts ----------

DEVICE = "D" * 32
REF = st.sampled_from(["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbb27", "aaaaaaaaaaaaaaa8", "AAAAAAAAAAAAAAAA", "short", 7])
GOOD_FIELDS = st.fixed_dictionaries(
    {"type": st.just("book"), "title": st.sampled_from(["A title", "Zoë"])},
    optional={"added": st.integers(0, 2**53), "year": st.just("2020")},
)
REF_PUT = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["ref.put", "ref.put", "ref.delete", "group.put", 5]),
        "ref": REF,
        "fields": GOOD_FIELDS | st.dictionaries(NAMES, VALUE | st.none(), max_size=2),
        "seen": st.just({}) | st.just({"title": [[DEVICE, 1]]}) | st.just([]),
    },
    optional={"extra": st.just(1)},
)


VALID_REF_PUT = st.builds(
    lambda ref, fields: {"op": "ref.put", "ref": ref, "fields": fields, "seen": {}},
    st.sampled_from(["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbb27"]),
    GOOD_FIELDS,
)


@st.composite
def entry_lists(draw: Any) -> list[Any]:
    # Mostly valid ref.puts, so that runs of proven entries end at every kind of flaw.
    op_strategy = st.sampled_from(["valid"] * 6 + ["any", "value"])
    kinds = draw(st.lists(op_strategy, min_size=1, max_size=6))
    ops_ = [draw(VALID_REF_PUT if k == "valid" else REF_PUT if k == "any" else VALUE) for k in kinds]
    entries: list[Any] = []
    for seq, op in enumerate(ops_, start=1):
        shape = draw(st.sampled_from(["good"] * 8 + ["seq", "ts", "bool", "short", "tuple", "big"]))
        ts = 1000 + seq
        item: Any = [seq, ts, op]
        if shape == "seq":
            item = [seq + 1, ts, op]
        elif shape == "ts":
            item = [seq, -1, op]
        elif shape == "bool":
            item = [True if seq == 1 else seq, ts, op]
        elif shape == "short":
            item = [seq, ts]
        elif shape == "tuple":
            item = {"seq": seq}
        elif shape == "big":
            item = [seq, 2**53 + 1, op]
        entries.append(item)
    return entries


@settings(max_examples=1500, derandomize=True)
@given(entry_lists())
def test_parse_gives_the_same_result_without_it(entries: list[Any]) -> None:
    body = {"v": changesets.VERSION, "lib": "L" * 32, "author": DEVICE, "seq": [1, len(entries)], "prev": None}
    body |= {"deps": {}, "entries": entries}
    try:
        wire = encode({"body": body, "sig": base64.b64encode(b"\0" * 64).decode()})
    except TypeError:  # a value JSON cannot hold (a tuple key, say): nothing to parse
        return

    def outcome() -> Any:
        try:
            cs = changesets.parse(wire, "L" * 32)
        except changesets.ChangeSetRejected as exc:
            return (exc.reason, exc.message)
        return (cs.entries, cs.body_bytes)

    assert_same_without_c(outcome)


def test_a_run_of_proven_entries_ends_at_the_first_flaw() -> None:
    good = {"op": "ref.put", "ref": "a" * 16, "fields": {"type": "book", "title": "T"}, "seen": {}}
    flawed = [
        {**good, "seen": {"title": [["D" * 32, 1]]}},  # has seen something: Python checks causality
        {**good, "ref": "A" * 16},
        {**good, "fields": {"type": "book", "date": "2020-13-01"}},
        {**good, "fields": {"type": "book", "title": " T"}},
        {**good, "extra": 1},
        {**good, "op": "ref.delete"},
    ]
    for flaw in flawed:
        entries = [[1, 5, good], [2, 5, good], [3, 5, flaw], [4, 5, good]]
        assert speedups.proven_ref_puts(entries, 1) == 2, flaw
    assert speedups.proven_ref_puts([[1, 5, good], [2, 5, good]], 1) == 2
    assert speedups.proven_ref_puts([[1, 5, good]], 2) == 0  # the body says it starts at 2


def test_max_ts_given_to_c_is_the_engine_limit() -> None:
    ok = [[1, changesets.MAX_TS, {"op": "ref.put", "ref": "a" * 16, "fields": {"type": "book"}, "seen": {}}]]
    over = [[1, changesets.MAX_TS + 1, ok[0][2]]]
    assert speedups.proven_ref_puts(ok, 1) == 1
    assert speedups.proven_ref_puts(over, 1) == 0
    assert speedups.proven_ref_puts(ok * 2, 1) == 1  # the second one's seq is not 2
