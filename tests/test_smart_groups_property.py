"""Convergence of smart groups, group sets and the library's name, tested with hypothesis: three
replicas make random edits of every new kind (create, rename, delete, change a search, file a
group in a set, delete a set, rename the library) between random pairwise syncs through signed
change sets; once all have exchanged everything they show the same groups, sets and name, and
hold the same replicated rows."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psync.errors import P2PSyncError
from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.support import snapshot
from tests.sync_support import digest, founded, joined, sync_all

GROUPS = ("Alpha", "Beta", "Gamma")
SETS = ("One", "Two")
WORDS = ("neur", "cortex", "mouse", "synap")

action = st.one_of(
    st.tuples(st.just("group"), st.sampled_from(GROUPS), st.sampled_from((None, *WORDS))),
    st.tuples(st.just("rename"), st.sampled_from(GROUPS), st.sampled_from(GROUPS)),
    st.tuples(st.just("delete"), st.sampled_from(GROUPS), st.none()),
    st.tuples(st.just("query"), st.sampled_from(GROUPS), st.sampled_from(WORDS)),
    st.tuples(st.just("file"), st.sampled_from(GROUPS), st.sampled_from((None, *SETS))),
    st.tuples(st.just("set"), st.sampled_from(SETS), st.none()),
    st.tuples(st.just("set rename"), st.sampled_from(SETS), st.sampled_from(SETS)),
    st.tuples(st.just("set delete"), st.sampled_from(SETS), st.none()),
    st.tuples(st.just("library"), st.sampled_from(("Home", "Lab", "Thesis")), st.none()),
    st.tuples(st.just("sync"), st.integers(0, 2), st.none()),
)


def _do(library: Library, kind: str, a: Any, b: Any) -> None:
    if kind == "group":
        library.groups.create(a, query=b)
    elif kind == "rename":
        library.groups.rename(a, b)
    elif kind == "delete":
        library.groups.delete(a)
    elif kind == "query":
        library.groups.set_query(a, b)
    elif kind == "file":
        library.groups.file_many([a], b)
    elif kind == "set":
        library.sets.create(a)
    elif kind == "set rename":
        library.sets.rename(a, b)
    elif kind == "set delete":
        library.sets.delete(a)
    elif kind == "library":
        library.rename(a)


def _shown(library: Library) -> Any:
    groups = [(g.id, g.name, g.references, g.query, g.set) for g in library.groups.rows(system=False)]
    sets = [(s.id, s.name, [g.id for g in s.groups]) for s in library.sets.rows()]
    return groups, sets, library.name


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2), action), min_size=1, max_size=30))
def test_replicas_that_exchanged_everything_show_the_same_groups_sets_and_name(
    steps: list[tuple[int, tuple[str, Any, Any]]],
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="p2psync-smart-"))
    libs: list[Library] = []
    try:
        a = founded(tmp / "a", "A")
        libs = [a, joined(a, tmp / "b", "B"), joined(a, tmp / "c", "C")]
        for lib in libs:
            lib.add_reference({"type": "journal_article", "title": "Neural cortex of the mouse"})
        for who, (kind, x, y) in steps:
            if kind == "sync":
                if who != x:
                    sync_libraries(libs[who], libs[x])
                continue
            with contextlib.suppress(P2PSyncError):  # a name taken, a group gone: refused, nothing logged
                _do(libs[who], kind, x, y)
        sync_all(libs)
        shown = [_shown(lib) for lib in libs]
        if not any(kind == "library" for _, (kind, _x, _y) in steps):
            # (before any rename each device shows the name it was made with: the helper's A, B, C)
            shown = [(groups, sets, "") for groups, sets, _name in shown]
        assert shown[0] == shown[1] == shown[2]
        assert digest(libs[0]) == digest(libs[1]) == digest(libs[2])
        rows = [snapshot(lib) for lib in libs]
        for table in ("groups", "group_sets", "library_name", "memberships"):
            assert rows[0][table] == rows[1][table] == rows[2][table], table
    finally:
        for lib in libs:
            lib.close()
        shutil.rmtree(tmp, ignore_errors=True)
