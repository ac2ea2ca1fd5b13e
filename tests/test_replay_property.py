"""Replaying the change log into an empty store gives exactly the store's tables.

Hypothesis drives a random series of mutations through the public Library API (every kind of
operation, including no-ops and refused ones); the log, replayed elsewhere, must rebuild the same
replicated tables and the same search index. This is what "nothing is changed without being
logged" means, tested.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psync.errors import P2PSyncError
from p2psync.store.library import Library
from tests.support import replay, snapshot

words = st.text(alphabet="abcdéüøßxyz ", min_size=1, max_size=12).filter(lambda s: s.strip())
people = st.lists(
    st.one_of(
        st.builds(lambda f, g: {"family": f.strip(), "given": g.strip()}, words, words),
        st.builds(lambda n: {"literal": n.strip()}, words),
    ),
    max_size=3,
)
field_values = st.one_of(
    st.tuples(st.just("title"), words),
    st.tuples(st.just("abstract"), st.one_of(words, st.none())),
    st.tuples(st.just("authors"), people),
    st.tuples(st.just("keywords"), st.lists(words, max_size=3)),
    st.tuples(st.just("year"), st.sampled_from(["1999", "2021a", "in press", None])),
    st.tuples(st.just("notes"), st.one_of(words, st.none())),
)
action = st.one_of(
    st.tuples(st.just("add"), st.dictionaries(st.sampled_from(["title", "abstract"]), words, min_size=1)),
    st.tuples(st.just("edit"), st.integers(0, 9), st.lists(field_values, min_size=1, max_size=3)),
    st.tuples(st.just("trash"), st.integers(0, 9)),
    st.tuples(st.just("restore"), st.integers(0, 9)),
    st.tuples(st.just("empty")),
    st.tuples(st.just("group"), words),
    st.tuples(st.just("rename"), st.integers(0, 4), words),
    st.tuples(st.just("ungroup"), st.integers(0, 4)),
    st.tuples(st.just("member"), st.integers(0, 4), st.lists(st.integers(0, 9), min_size=1, max_size=3)),
    st.tuples(st.just("unmember"), st.integers(0, 4), st.lists(st.integers(0, 9), min_size=1, max_size=3)),
    st.tuples(st.just("attach"), st.integers(0, 9), st.sampled_from(["a.pdf", "b.pdf"]), st.binary(max_size=64)),
    st.tuples(st.just("detach"), st.integers(0, 9), st.sampled_from(["a.pdf", "b.pdf"])),
)


def run(library: Library, scratch: Path, step: tuple) -> None:
    refs = [r[0] for r in library.db.execute("SELECT id FROM refs ORDER BY num")]
    groups = [g[0] for g in library.db.execute("SELECT id FROM groups ORDER BY id")]
    pick = lambda items, i: items[i % len(items)] if items else None  # noqa: E731
    kind = step[0]
    if kind == "add":
        library.add_reference(step[1])
    elif kind == "edit" and refs:
        library.edit_reference(pick(refs, step[1]), dict(step[2]))
    elif kind == "trash" and refs:
        library.trash_reference(pick(refs, step[1]))
    elif kind == "restore" and refs:
        library.restore_reference(pick(refs, step[1]))
    elif kind == "empty":
        library.empty_trash()
    elif kind == "group":
        library.create_group(step[1])
    elif kind == "rename" and groups:
        library.rename_group(pick(groups, step[1]), step[2])
    elif kind == "ungroup" and groups:
        library.delete_group(pick(groups, step[1]))
    elif kind == "member" and groups and refs:
        library.add_to_group(pick(groups, step[1]), [pick(refs, i) for i in step[2]])
    elif kind == "unmember" and groups and refs:
        library.remove_from_group(pick(groups, step[1]), [pick(refs, i) for i in step[2]])
    elif kind == "attach" and refs:
        source = scratch / step[2]
        source.write_bytes(step[3])
        library.attach(pick(refs, step[1]), source)
    elif kind == "detach" and refs:
        library.remove_attachment(pick(refs, step[1]), step[2])


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=1, max_size=25))
def test_replayed_log_rebuilds_identical_tables(steps: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "scratch").mkdir()
        library = Library.create(root / "lib")
        try:
            for step in steps:
                before = snapshot(library)
                try:
                    run(library, root / "scratch", step)
                except P2PSyncError:
                    # A refused mutation (a conflict, a missing attachment...) changes nothing.
                    assert snapshot(library) == before
            replica = replay(library, root / "replica")
            try:
                assert snapshot(replica) == snapshot(library)
            finally:
                replica.close()
        finally:
            library.close()
