"""Convergence, tested with hypothesis: three replicas, random operations of every kind, random
pairwise syncs. Replicas that have exchanged everything show the same library (same digest),
and no write disappears unless a write that had seen it replaced it (else a conflict shows it).

The model tracks, for every field write, which writes its replica had seen when it was made
(knowledge sets, merged by each two-way sync). At the end, the values a field holds must be
exactly the values of the writes no later write had seen: the multi-value register semantics.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from p2psync.engine import registers
from p2psync.errors import P2PSyncError
from p2psync.store.apply import load_ref
from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.sync_support import digest, founded, joined, sync_all

FIELDS = ("title", "year", "abstract")
replica = st.integers(0, 2)


class Replicas(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="p2psync-conv-"))
        a = founded(self.tmp / "a", "A")
        self.libs: list[Library] = [a, joined(a, self.tmp / "b", "B"), joined(a, self.tmp / "c", "C")]
        sync_all(self.libs)
        self.known: list[set[str]] = [set(), set(), set()]  # write ids each replica has applied
        self.writes: list[dict[str, Any]] = []  # {"id", "ref", "field", "value", "seen": set}
        self.deletes: list[dict[str, Any]] = []  # {"ref", "seen": set}
        self.refs: list[str] = []
        self.counter = 0

    def teardown(self) -> None:
        try:
            self.check_final()
        finally:
            for lib in self.libs:
                lib.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- helpers ----------------------------------------------------------------------------

    def _write(self, r: int, ref: str, field: str, value: Any) -> None:
        wid = f"w{len(self.writes)}"
        self.writes.append({"id": wid, "ref": ref, "field": field, "value": value, "seen": set(self.known[r])})
        self.known[r].add(wid)

    def _value(self) -> str:
        self.counter += 1
        return f"{self.counter}"

    def _live(self, r: int) -> list[str]:
        return [x["id"] for x in self.libs[r].list_references()] + [
            x["id"] for x in self.libs[r].list_references(trashed=True)
        ]

    # --- rules ------------------------------------------------------------------------------

    @rule(r=replica)
    def add(self, r: int) -> None:
        title = self._value()
        ref = self.libs[r].add_reference({"title": title})
        self.refs.append(ref)
        self._write(r, ref, "title", title)

    @precondition(lambda self: self.refs)
    @rule(r=replica, i=st.integers(0, 50), field=st.sampled_from(FIELDS), clear=st.booleans())
    def edit(self, r: int, i: int, field: str, clear: bool) -> None:
        ref = self.refs[i % len(self.refs)]
        value = None if clear and field != "title" else self._value()
        try:
            changed = self.libs[r].edit_reference(ref, {field: value})
        except P2PSyncError:
            return  # deleted (or not yet received) here
        if changed:
            self._write(r, ref, field, value)

    # Edits are what conflicts are made of: give them more weight than the other rules.
    @precondition(lambda self: self.refs)
    @rule(r=replica, i=st.integers(0, 50), field=st.sampled_from(FIELDS))
    def edit_more(self, r: int, i: int, field: str) -> None:
        self.edit(r, i, field, False)

    @precondition(lambda self: self.refs)
    @rule(i=replica, j=replica, r=replica, k=st.integers(0, 50), field=st.sampled_from(FIELDS))
    def sync_then_edit(self, i: int, j: int, r: int, k: int, field: str) -> None:
        self.sync(i, j)
        self.edit(r, k, field, False)

    @precondition(lambda self: self.refs)
    @rule(r=replica, i=st.integers(0, 50), restore=st.booleans())
    def trash_or_restore(self, r: int, i: int, restore: bool) -> None:
        ref = self.refs[i % len(self.refs)]
        try:
            if restore:
                self.libs[r].restore_reference(ref)
            else:
                self.libs[r].trash_reference(ref)
        except P2PSyncError:
            pass

    @rule(r=replica)
    def empty_trash(self, r: int) -> None:
        trashed = [x["id"] for x in self.libs[r].list_references(trashed=True)]
        self.libs[r].empty_trash()
        for ref in trashed:
            self.deletes.append({"ref": ref, "seen": set(self.known[r])})

    @rule(r=replica, name=st.sampled_from(["Reading", "Thesis", "Later"]))
    def create_group(self, r: int, name: str) -> None:
        with contextlib.suppress(P2PSyncError):
            self.libs[r].create_group(name)

    @rule(r=replica, name=st.sampled_from(["Reading", "Thesis", "Later"]), new=st.sampled_from(["Done", "Old"]))
    def rename_or_delete_group(self, r: int, name: str, new: str) -> None:
        try:
            if new == "Old":
                self.libs[r].delete_group(name)
            else:
                self.libs[r].rename_group(name, new + name)
        except P2PSyncError:
            pass

    @precondition(lambda self: self.refs)
    @rule(r=replica, i=st.integers(0, 50), name=st.sampled_from(["Reading", "Thesis"]), add=st.booleans())
    def membership(self, r: int, i: int, name: str, add: bool) -> None:
        ref = self.refs[i % len(self.refs)]
        try:
            if add:
                self.libs[r].add_to_group(name, [ref])
            else:
                self.libs[r].remove_from_group(name, [ref])
        except P2PSyncError:
            pass

    @precondition(lambda self: self.refs)
    @rule(r=replica, i=st.integers(0, 50), content=st.binary(max_size=20), remove=st.booleans())
    def attachment(self, r: int, i: int, content: bytes, remove: bool) -> None:
        ref = self.refs[i % len(self.refs)]
        try:
            if remove:
                self.libs[r].remove_attachment(ref, "paper.pdf")
            else:
                source = self.tmp / f"upload-{r}" / "paper.pdf"
                source.parent.mkdir(exist_ok=True)
                source.write_bytes(content)
                self.libs[r].attach(ref, source)
        except P2PSyncError:
            pass

    @rule(r=replica, keep=st.sampled_from(["local", "remote"]))
    def resolve(self, r: int, keep: str) -> None:
        lib = self.libs[r]
        for item in lib.list_conflicts()[:1]:
            try:
                resolved = lib.resolve_conflict(item["id"], keep=keep)
            except P2PSyncError:
                continue
            if "deleted" in resolved and lib.count_references() >= 0 and item["id"] not in self._live(r):
                self.deletes.append({"ref": item["id"], "seen": set(self.known[r])})
                continue
            state = load_ref(lib.db, item["id"]).state
            for field in resolved:
                if field in FIELDS:
                    self._write(r, item["id"], field, registers.resolve(state[field]).value)

    @rule(i=replica, j=replica)
    def sync(self, i: int, j: int) -> None:
        if i == j:
            return
        report = sync_libraries(self.libs[i], self.libs[j])
        assert report.sent_to_a.rejected == [] and report.sent_to_b.rejected == []
        merged = self.known[i] | self.known[j]
        self.known[i], self.known[j] = set(merged), set(merged)

    def check_final(self) -> None:
        sync_all(self.libs)
        digests = {digest(lib) for lib in self.libs}
        assert len(digests) == 1, "replicas that exchanged everything differ"
        lib = self.libs[0]
        for ref in set(self.refs):
            stored = load_ref(lib.db, ref)
            ref_writes = [w for w in self.writes if w["ref"] == ref]
            if stored.num is None or stored.deleted:  # deleted for good: every write to it was seen by some delete
                seen_by_deletes = set().union(*(d["seen"] for d in self.deletes if d["ref"] == ref))
                lost = [w for w in ref_writes if w["id"] not in seen_by_deletes]
                assert not lost, f"writes {lost} vanished without a conflict"
                continue
            for field in FIELDS:
                writes = [w for w in ref_writes if w["field"] == field]
                frontier = [w for w in writes if not any(w["id"] in other["seen"] for other in writes)]
                held = sorted(str(e[3]) for e in stored.state.get(field, []))
                assert sorted(str(w["value"]) for w in frontier) == held, (ref, field)


TestConvergence = Replicas.TestCase
TestConvergence.settings = settings(max_examples=40, stateful_step_count=40, suppress_health_check=list(HealthCheck))
