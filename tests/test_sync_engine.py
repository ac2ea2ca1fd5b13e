"""The sync engine end to end in one process: real stores, real signatures, no sockets."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from p2psync.engine import changesets
from p2psync.errors import Conflict, InvalidValue
from p2psync.store import sync
from p2psync.store.library import IN_CONFLICT, Library
from p2psync.store.sync import changesets_since, receive, seal, sync_libraries, version_vector
from tests.support import snapshot
from tests.sync_support import digest, founded, joined, sync_all


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Library, Library]:
    a = founded(tmp_path / "a", "home")
    b = joined(a, tmp_path / "b", "work")
    yield a, b
    a.close()
    b.close()


def test_new_empty_machine_receives_everything(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    ids = a.add_references({"title": f"Paper {i}", "abstract": "x" * 2000} for i in range(2500))
    group = a.create_group("Reading")
    a.add_to_group(group, ids[:10])
    a.trash_reference(ids[-1])
    b = joined(a, tmp_path / "b", "laptop")
    assert digest(a) == digest(b)
    assert b.info()["references"] == 2499 and b.info()["trash"] == 1
    # Large work was cut into bounded change sets.
    sizes = [len(w) for w in changesets_since(a, {})]
    assert len(sizes) > 3 and max(sizes) <= changesets.MAX_BYTES


def test_every_kind_of_change_travels_both_ways(pair: tuple[Library, Library], tmp_path: Path) -> None:
    a, b = pair
    ref = a.add_reference({"title": "T", "authors": [{"family": "Curie"}]})
    sync_libraries(a, b)
    b.edit_reference(ref, {"year": "1903"})
    g = b.create_group("Chemistry")
    b.add_to_group(g, [ref])
    pdf = tmp_path / "p.pdf"
    pdf.write_bytes(b"%PDF")
    b.attach(ref, pdf)
    sync_libraries(a, b)
    record = a.get_reference(ref)
    assert record["year"] == "1903" and [x["name"] for x in record["groups"]] == ["Chemistry"]
    assert [x["name"] for x in a.list_attachments(ref, scan=False)] == ["p.pdf"]
    a.trash_reference(ref)
    sync_libraries(a, b)
    assert b.count_references(trashed=True) == 1
    b.restore_reference(ref)
    b.trash_reference(ref)
    b.empty_trash()
    sync_libraries(a, b)
    assert a.info()["references"] == 0 and a.info()["trash"] == 0
    assert digest(a) == digest(b)
    assert sync_libraries(a, b).sent_to_a.applied == 0  # nothing left to move


def test_concurrent_edits_merge_per_field(pair: tuple[Library, Library]) -> None:
    a, b = pair
    ref = a.add_reference({"title": "Original"})
    sync_libraries(a, b)
    a.edit_reference(ref, {"volume": "12"})
    b.edit_reference(ref, {"issue": "3"})
    sync_libraries(a, b)
    for lib in (a, b):
        record = lib.get_reference(ref)
        assert record["volume"] == "12" and record["issue"] == "3" and "conflicts" not in record


def test_same_value_on_both_sides_is_no_conflict(pair: tuple[Library, Library]) -> None:
    a, b = pair
    ref = a.add_reference({"title": "Original"})
    sync_libraries(a, b)
    a.edit_reference(ref, {"title": "Fixed"})
    b.edit_reference(ref, {"title": "Fixed"})
    sync_libraries(a, b)
    assert "conflicts" not in a.get_reference(ref) and a.list_conflicts() == []


def test_same_field_conflict_shows_the_same_everywhere_and_resolves_everywhere(pair: tuple[Library, Library]) -> None:
    a, b = pair
    ref = a.add_reference({"title": "Original"})
    sync_libraries(a, b)
    a.edit_reference(ref, {"title": "Home title"})
    b.edit_reference(ref, {"title": "Work title"})
    sync_libraries(a, b)
    for lib in (a, b):
        record = lib.get_reference(ref)
        assert record["conflicts"] == ["title"]
        assert "Sync Conflicts" in [g["name"] for g in record["groups"]]
        assert [r["id"] for r in lib.list_references(group="Sync Conflicts")] == [ref]
    assert a.get_reference(ref)["title"] == b.get_reference(ref)["title"]  # same provisional value
    versions = a.reference_versions(ref)["title"]
    assert {v["value"] for v in versions} == {"Home title", "Work title"}
    with pytest.raises(Conflict):
        a.add_to_group("Sync Conflicts", [ref])
    b.resolve_conflict(ref, keep="local")
    sync_libraries(a, b)
    for lib in (a, b):
        assert lib.get_reference(ref)["title"] == "Work title" and lib.list_conflicts() == []
        assert lib.count_references(group="Sync Conflicts") == 0


def test_conflicts_are_counted_from_their_own_index(pair: tuple[Library, Library], tmp_path: Path) -> None:
    """info, status and the Sync Conflicts group count the references in conflict (a field's or an
    attachment's, each reference once) without reading every reference: SQLite's plan scans only
    the partial indexes that hold the rows in conflict (schema 13)."""
    a, b = pair
    both, field_only, file_only = a.add_references({"title": t} for t in ("both", "field", "file"))
    a.add_reference({"title": "calm"})
    sync_libraries(a, b)
    pdf = tmp_path / "p.pdf"
    for ref in (both, field_only):
        a.edit_reference(ref, {"year": "1"})
        b.edit_reference(ref, {"year": "2"})
    for ref in (both, file_only):
        pdf.write_bytes(b"%PDF a")
        a.attach(ref, pdf)
        pdf.write_bytes(b"%PDF b")
        b.attach(ref, pdf)
    sync_libraries(a, b)
    assert a.info()["conflicts"] == 3 and a.count_references(group="Sync Conflicts") == 3
    assert {r["id"] for r in a.list_references(group="Sync Conflicts")} == {both, field_only, file_only}
    plan = [row[3] for row in a.db.execute(f"EXPLAIN QUERY PLAN SELECT count(*) FROM refs WHERE {IN_CONFLICT}")]
    assert all("_in_conflict" in step for step in plan if step.startswith("SCAN")), plan


def test_editing_a_conflicted_field_resolves_it(pair: tuple[Library, Library]) -> None:
    a, b = pair
    ref = a.add_reference({"title": "Original"})
    sync_libraries(a, b)
    a.edit_reference(ref, {"title": "A"})
    b.edit_reference(ref, {"title": "B"})
    sync_libraries(a, b)
    assert a.edit_reference(ref, {"title": "B"}) is True  # same as one version, but it resolves
    sync_libraries(a, b)
    assert b.list_conflicts() == [] and b.get_reference(ref)["title"] == "B"


def test_resolve_per_field_and_errors(pair: tuple[Library, Library]) -> None:
    a, b = pair
    ref = a.add_reference({"title": "Original", "year": "2000"})
    sync_libraries(a, b)
    a.edit_reference(ref, {"title": "A", "year": "2001"})
    b.edit_reference(ref, {"title": "B", "year": "2002"})
    sync_libraries(a, b)
    with pytest.raises(InvalidValue, match="year"):
        a.resolve_conflict(ref, fields={"title": "local"})
    with pytest.raises(InvalidValue, match="not in conflict"):
        a.resolve_conflict(ref, fields={"volume": "local"})
    a.resolve_conflict(ref, keep="remote", fields={"year": b.device_id[:7].lower()})
    sync_libraries(a, b)
    assert b.get_reference(ref)["title"] == "B" and b.get_reference(ref)["year"] == "2002"
    with pytest.raises(Conflict):
        b.resolve_conflict(ref, keep="local")


def test_delete_concurrent_with_edit_is_a_conflict_never_a_loss(pair: tuple[Library, Library]) -> None:
    a, b = pair
    ref = a.add_reference({"title": "Keep me?", "year": "1999", "abstract": "precious"})
    sync_libraries(a, b)
    a.trash_reference(ref)
    a.empty_trash()
    b.edit_reference(ref, {"notes": "I was reading this"})
    sync_libraries(a, b)
    for lib in (a, b):
        record = lib.get_reference(ref)
        assert record["conflicts"] == ["deleted"]
        assert record["abstract"] == "precious" and record["notes"] == "I was reading this"
    versions = a.reference_versions(ref)["deleted"]
    assert {(v["device"], v["value"]) for v in versions} >= {(a.device_id, True), (b.device_id, False)}
    b.resolve_conflict(ref, keep="local")  # b edited: keep the reference
    sync_libraries(a, b)
    assert a.get_reference(ref)["notes"] == "I was reading this" and a.list_conflicts() == []
    assert digest(a) == digest(b)


def test_delete_wins_when_chosen(pair: tuple[Library, Library]) -> None:
    a, b = pair
    ref = a.add_reference({"title": "Obsolete"})
    sync_libraries(a, b)
    a.trash_reference(ref)
    a.empty_trash()
    b.edit_reference(ref, {"year": "2020"})
    sync_libraries(a, b)
    b.resolve_conflict(ref, keep="remote")
    sync_libraries(a, b)
    assert a.info()["references"] == b.info()["references"] == 0
    assert a.list_conflicts() == b.list_conflicts() == []


def test_three_machines_forward_changes_they_did_not_author(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    # B introduces C: A has never met C, but trusts it because the membership is signed.
    c = Library.create(tmp_path / "c", "C", found=False, library_id=a.library_id)
    b.add_device(c.identity().public_bytes, "C")
    sync_libraries(b, c)
    ref = c.add_reference({"title": "from C"})
    sync_libraries(b, c)
    report = sync_libraries(a, b)
    assert report.sent_to_a.rejected == []
    assert a.get_reference(ref)["title"] == "from C"
    a.edit_reference(ref, {"year": "2024"})
    sync_libraries(a, b)
    sync_libraries(b, c)
    assert c.get_reference(ref)["year"] == "2024"
    assert digest(a) == digest(b) == digest(c)


def test_revoked_device_is_refused_after_the_cut(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    before = b.add_reference({"title": "before revocation"})
    sync_libraries(a, b)
    a.revoke_device(b.device_id[:7])
    b.add_reference({"title": "after revocation"})
    report = sync_libraries(a, b)
    assert [r["reason"] for r in report.sent_to_a.rejected] == ["revoked"]
    assert a.get_reference(before)["title"] == "before revocation"
    assert [r["title"] for r in a.list_references()] == ["before revocation"]
    assert sync.recent_problems(a)[0]["reason"] == "revoked"
    with pytest.raises(Conflict):
        a.revoke_device(a.device_id)


# --- hostile change sets: each refused whole, nothing applied, the reason recorded ---------------


def _wire(lib: Library) -> list[bytes]:
    seal(lib)
    return list(changesets_since(lib, {}))


def _refused(lib: Library, wires: list[bytes], reason: str) -> None:
    before = snapshot(lib)
    report = receive(lib, wires, peer="attacker")
    assert [r["reason"] for r in report.rejected] == [reason], report.rejected
    assert report.applied == 0
    assert snapshot(lib) == before
    assert sync.recent_problems(lib)[0]["reason"] == reason


def _tamper(wire: bytes, change) -> bytes:  # type: ignore[no-untyped-def]
    message = json.loads(wire)
    change(message)
    return json.dumps(message).encode()


def test_forged_signature(pair: tuple[Library, Library]) -> None:
    a, b = pair
    a.add_reference({"title": "real"})
    seal(a)
    [wire] = list(changesets_since(a, version_vector(b)))

    def forge(m: dict) -> None:
        m["body"]["entries"][0][2]["fields"]["title"] = "forged"

    _refused(b, [_tamper(wire, forge)], "signature")


def test_signed_by_an_outsider(pair: tuple[Library, Library], tmp_path: Path) -> None:
    a, b = pair
    outsider = Library.create(tmp_path / "x", found=False, library_id=a.library_id)
    outsider.add_reference({"title": "spam"})
    _refused(b, _wire(outsider), "unknown_author")


def test_outsider_claiming_to_found_the_library(pair: tuple[Library, Library], tmp_path: Path) -> None:
    a, b = pair
    outsider = Library.create(tmp_path / "x", found=False, library_id=a.library_id)
    from p2psync.store.library import device_add_op

    with outsider.writing() as writer:
        writer.log(device_add_op(outsider.identity(), "evil", None, None))
    _refused(b, _wire(outsider), "unknown_author")


def test_replayed_change_set_is_a_harmless_duplicate(pair: tuple[Library, Library]) -> None:
    a, b = pair
    a.add_reference({"title": "once"})
    sync_libraries(a, b)
    before = snapshot(b)
    report = receive(b, list(changesets_since(a, {})))
    assert report.applied == 0 and report.duplicates >= 1 and report.rejected == []
    assert snapshot(b) == before


def test_reordered_and_gapped_change_sets(pair: tuple[Library, Library]) -> None:
    a, b = pair
    for i in range(3):
        a.add_reference({"title": f"r{i}"})
        seal(a)
    wires = list(changesets_since(a, version_vector(b)))
    assert len(wires) == 3
    _refused(b, [wires[1]], "gap")
    report = receive(b, [wires[0], wires[2], wires[1]])  # out of order within one exchange
    assert report.applied == 1 and [r["reason"] for r in report.rejected] == ["gap"]


def test_fork_same_sequence_different_content(pair: tuple[Library, Library], tmp_path: Path) -> None:
    a, b = pair
    a.add_reference({"title": "one"})
    sync_libraries(a, b)
    # A copy of A's library (same key) that writes something else under the same sequence numbers.
    import shutil

    a.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copytree(a.path, tmp_path / "a-copy")
    evil = Library.open(tmp_path / "a-copy")
    a.add_reference({"title": "two"})
    evil.add_reference({"title": "forked"})
    sync_libraries(a, b)
    seal(evil)
    wires = [w for w in changesets_since(evil, {}) if b"forked" in w]
    _refused(b, wires, "fork")


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"not json", "malformed"),
        (b'{"body": {}, "sig": ""}', "malformed"),
        (b"[" * 10 + b"]" * 10, "malformed"),
        (b'{"body": {"v": 1}', "malformed"),  # truncated
        (b" " * (changesets.MAX_BYTES + 1), "oversized"),
    ],
)
def test_malformed_and_oversized(pair: tuple[Library, Library], raw: bytes, reason: str) -> None:
    _refused(pair[1], [raw], reason)


def test_truncated_real_change_set(pair: tuple[Library, Library]) -> None:
    a, b = pair
    a.add_reference({"title": "whole"})
    seal(a)
    [wire] = list(changesets_since(a, version_vector(b)))
    _refused(b, [wire[: len(wire) // 2]], "malformed")


def test_bad_op_schema_is_refused(pair: tuple[Library, Library]) -> None:
    a, b = pair
    a.add_reference({"title": "t"})
    seal(a)
    [wire] = list(changesets_since(a, version_vector(b)))

    def bad(m: dict) -> None:
        m["body"]["entries"][0][2]["fields"]["colour"] = "red"

    _refused(b, [_tamper(wire, bad)], "schema")


def test_other_library_and_version(pair: tuple[Library, Library], tmp_path: Path) -> None:
    a, b = pair
    other = founded(tmp_path / "other")
    _refused(b, _wire(other), "library")
    a.add_reference({"title": "t"})
    seal(a)
    [wire] = list(changesets_since(a, version_vector(b)))

    def future(m: dict) -> None:
        m["body"]["v"] = 2

    _refused(b, [_tamper(wire, future)], "version")


def test_signature_covers_the_library(pair: tuple[Library, Library]) -> None:
    a, b = pair
    a.add_reference({"title": "t"})
    seal(a)
    [wire] = list(changesets_since(a, version_vector(b)))
    parsed = changesets.parse(wire, a.library_id)
    assert base64.b64decode(json.loads(wire)["sig"]) == parsed.signature
    other = changesets.signature_input("aaaaaaaaaaaaaaaa", parsed.body_bytes)
    from p2psync.crypto.identity import verify

    assert verify(
        a.identity().public_bytes, parsed.signature, changesets.signature_input(a.library_id, parsed.body_bytes)
    )
    assert not verify(a.identity().public_bytes, parsed.signature, other)


def test_three_replicas_converge_whatever_the_order(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    c = joined(a, tmp_path / "c", "C")
    ref = a.add_reference({"title": "shared"})
    sync_all([a, b, c])
    a.edit_reference(ref, {"title": "A"})
    b.edit_reference(ref, {"title": "B"})
    c.edit_reference(ref, {"year": "2001"})
    sync_libraries(b, c)
    sync_libraries(a, c)
    sync_libraries(a, b)
    assert digest(a) == digest(b) == digest(c)


def test_peers_cli_lists_and_removes(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "work-laptop")
    a.close()
    env = dict(os.environ, P2PSYNC_LIBRARY=str(tmp_path / "a"))

    def p2psync(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "p2psync", *args], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
        )

    listed = json.loads(p2psync("peers", "--json").stdout)
    assert [d["name"] for d in listed][1] == "work-laptop" and listed[0]["this_device"]
    assert p2psync("peers", "remove", "ZZZZ").returncode == 1
    assert p2psync("peers", "remove", b.device_id[:7]).returncode == 3  # asks; no terminal
    done = p2psync("peers", "remove", b.device_id[:7], "--yes", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["removed"]["device_id"] == b.device_id
    assert json.loads(p2psync("peers", "--json").stdout)[1]["revoked"] is True
    b.close()


def test_keeping_a_deleted_reference_brings_back_its_groups_and_files(
    pair: tuple[Library, Library], tmp_path: Path
) -> None:
    a, b = pair
    ref = a.add_reference({"title": "In a group, with a PDF"})
    a.add_to_group(a.create_group("Thesis"), [ref])
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.7")
    a.attach(ref, pdf)
    sync_libraries(a, b)
    a.trash_reference(ref)
    a.empty_trash()
    b.edit_reference(ref, {"year": "2022"})
    sync_libraries(a, b)
    a.resolve_conflict(ref, keep="remote")  # keep b's: the reference stays
    sync_libraries(a, b)
    for lib in (a, b):
        record = lib.get_reference(ref)
        assert [g["name"] for g in record["groups"]] == ["Thesis"]
        assert [x["name"] for x in record["attachments"]] == ["paper.pdf"]


def test_a_write_may_only_replace_what_its_author_had_seen(pair: tuple[Library, Library]) -> None:
    a, b = pair
    ref = a.add_reference({"title": "t"})
    sync_libraries(a, b)
    seal(a)
    head = sync._chain_heads(a)[a.device_id]
    next_seq = version_vector(a)[a.device_id] + 1
    op = {"op": "ref.put", "ref": ref, "fields": {"title": "u"}, "seen": {"title": [[b.device_id, 999]]}}
    cs = changesets.build(a.library_id, a.device_id, head, version_vector(a), [(next_seq, 1, op)], a.identity().sign)
    _refused(b, [cs.wire()], "schema")


def test_change_sets_wait_for_what_they_depend_on(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    c = Library.create(tmp_path / "c", "C", found=False, library_id=a.library_id)
    b.add_device(c.identity().public_bytes, "C")  # A has not heard of C yet
    sync_libraries(b, c)
    for i in range(3):
        c.add_reference({"title": f"from C {i}"})
        seal(c)
    seal(b)
    from_c = [w for w in changesets_since(c, version_vector(a)) if b'"author":"' + c.device_id.encode() in w]
    from_b = list(changesets_since(b, version_vector(a)))
    report = receive(a, [*from_c, *from_b])  # C's arrive before the introduction they depend on
    assert report.rejected == [] and report.waiting == 0
    assert a.info()["references"] == 3


def test_a_revocation_that_arrives_first_is_kept(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    c = Library.create(tmp_path / "c", "C", found=False, library_id=a.library_id)
    with b.writing() as writer:  # B revokes a device nobody has heard of yet
        writer.log({"op": "device.revoke", "device": c.device_id, "upto": 0})
    sync_libraries(a, b)
    assert a.db.execute("SELECT upto FROM revocations WHERE device = ?", [c.device_id]).fetchone() == (0,)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"body": ' + b"[" * 100_000 + b"]" * 100_000 + b', "sig": ""}',
        b'{"body": {"v": 1, "lib": "x", "author": "\\ud800"}, "sig": ""}',
    ],
)
def test_hostile_json_is_refused_cleanly(pair: tuple[Library, Library], raw: bytes) -> None:
    _refused(pair[1], [raw], "malformed")


def test_numbers_must_be_integers(pair: tuple[Library, Library]) -> None:
    a, b = pair
    a.add_reference({"title": "t"})
    seal(a)
    [wire] = list(changesets_since(a, version_vector(b)))

    def floaty(m: dict) -> None:
        m["body"]["v"] = 1.0

    _refused(b, [_tamper(wire, floaty)], "version")


def test_assembled_bodies_are_exactly_canonical() -> None:
    """Sealing assembles the body from stored op texts; it must equal canonical encoding."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from p2psync.engine.canonical import encode

    text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
    op = st.builds(
        lambda t, v: {"op": "ref.put", "ref": "a" * 16, "fields": {"title": t, "notes": v}, "seen": {}}, text, text
    )
    device = "A" * 32

    @settings(max_examples=200)
    @given(
        st.lists(op, min_size=1, max_size=5),
        st.dictionaries(st.just("B" * 32), st.integers(1, 2**40)),
        st.one_of(st.none(), st.just("f" * 64)),
    )
    def check(ops_: list, deps: dict, prev: str | None) -> None:
        first = 1 if prev is None else 7
        entries = [(first + i, 1_700_000_000_000 + i, o) for i, o in enumerate(ops_)]
        built = changesets.build("libraryid2345abc", device, prev, deps, entries, lambda m: b"\0" * 64)
        assembled = changesets.assemble_body(
            "libraryid2345abc", device, prev, deps, [changesets.entry_item(s, t, encode(o)) for s, t, o in entries]
        )
        assert assembled == built.body_bytes
        assert encode(json.loads(assembled)) == assembled

    check()
