"""Names p2psync keeps for its own files cannot name an attachment (issue 18, item 5).

Every name starting with `.p2psync` (in any case: some file systems fold it) is refused when
attached here and, inside a change set, refuses the whole change set (reason `schema`). The
files p2psync keeps for itself (partial fetches, files being attached, a conflict's other
versions) live in `attachments/.p2psync/`, a folder no (reference id, name) can reach; libraries
that kept them beside the attachments, as versions up to this one did, are moved on opening.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import zipfile
from pathlib import Path
from typing import Any

import pytest

from p2psync.engine import ops
from p2psync.errors import InvalidValue
from p2psync.model.attachments import validate_name
from p2psync.model.chunking import manifest_of
from p2psync.node import Address, Node
from p2psync.store import backup as backups
from p2psync.store import sync, transfers
from p2psync.store.library import Library
from p2psync.store.sync import changesets_since, receive, seal, sync_libraries, version_vector
from tests.support import snapshot
from tests.sync_support import founded, joined
from tests.test_cli import Cli

RESERVED = [
    ".p2psync-partial-notes.txt",
    ".p2psync-incoming-paper.pdf",
    ".p2psync-versions",
    ".P2PSYNC-Versions",
    ".p2psync",
    ".P2psync-relay-staging",
    ".p2p\u017fync-x",  # LATIN SMALL LETTER LONG S folds to "s"
]
OLD_VERSIONS, OLD_PARTIAL = ".p2psync-versions", ".p2psync-partial-"  # where versions up to 0.x kept them


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def cli(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    Library.create(tmp_path / "lib", "Names").close()
    return Cli(tmp_path, tmp_path / "lib", tmp_path_factory.mktemp("pycache"))


@pytest.mark.parametrize("name", RESERVED)
def test_a_reserved_name_is_refused_by_the_model_and_by_the_operation_check(name: str) -> None:
    with pytest.raises(InvalidValue, match=r"\.p2psync"):
        validate_name(name)
    with pytest.raises(InvalidValue, match=r"\.p2psync"):
        ops.check({"op": ops.ATTACHMENT_PUT, "ref": "refaaaaaaaaaaaaa", "name": name, "value": None, "seen": []})
    for fine in ("p2psync-notes.txt", "notes .p2psync", "x.p2psync-versions", ".p2p-sync"):
        assert validate_name(fine) == fine


def test_attach_with_a_reserved_name_is_refused_and_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    ref = cli.ok("ref", "add", "--title", "Paper").strip()
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.7\nmine\n")
    own = tmp_path / ".p2psync-incoming-scan.pdf"  # a file whose own name is reserved, attached without --name
    own.write_bytes(b"%PDF-1.7\nscan\n")
    before = cli.json("info")
    errors = cli.fail_many(1, *[["attach", ref, pdf, "--name", name] for name in RESERVED], ["attach", ref, own])
    for name, error in zip([*RESERVED, own.name], errors, strict=True):
        assert error == (
            f"The attachment name {name!r} starts with '.p2psync', which p2psync keeps for its own files; "
            "choose another name (attach --name)."
        )
    assert cli.json("info") == before
    assert cli.json("attachment", "list", ref) == []
    assert not (lib / "attachments" / ref).exists()


def test_the_sequence_from_the_issue_deletes_no_file(cli: Cli, tmp_path: Path) -> None:
    """attach --name .p2psync-partial-notes.txt / .p2psync-incoming-paper.pdf, then `attachment rm`
    and `attach`: the names are refused, and every file the user attached is still there."""
    lib = tmp_path / "lib"
    ref = cli.ok("ref", "add", "--title", "Paper").strip()
    notes, pdf, other = tmp_path / "notes.txt", tmp_path / "paper.pdf", tmp_path / "other.pdf"
    notes.write_bytes(b"my notes\n")
    pdf.write_bytes(b"%PDF-1.7\nversion 1\n")
    other.write_bytes(b"%PDF-1.7\nother\n")
    cli.ok("attach", ref, other)
    cli.fail(1, "attach", ref, notes, "--name", ".p2psync-partial-notes.txt")
    cli.fail(1, "attach", ref, pdf, "--name", ".p2psync-incoming-paper.pdf")
    cli.ok("attach", ref, notes)
    cli.ok("attachment", "rm", ref, "other.pdf")  # reconciles the folder: partial files are tidied
    pdf.write_bytes(b"%PDF-1.7\nversion 2\n")
    cli.ok("attach", ref, pdf)  # goes through a staging file
    assert tree(lib / "attachments" / ref) == {"notes.txt": b"my notes\n", "paper.pdf": b"%PDF-1.7\nversion 2\n"}
    assert sorted(a["name"] for a in cli.json("attachment", "list", ref)) == ["notes.txt", "paper.pdf"]


def _legacy_attachment(library: Library, ref: str, name: str, data: bytes) -> None:
    """An attachment named as versions before this check allowed: the file, its operation (logged
    without the check, as the old code did) and its record."""
    path = library.attachment_file(ref, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    manifest = manifest_of(path)
    with library.writing() as writer:
        op = {"op": ops.ATTACHMENT_PUT, "ref": ref, "name": name, "value": manifest, "seen": []}
        writer.log(op, checked=True)
        library._record_file(ref, name, path, manifest)


def test_attachments_named_so_by_an_older_version_survive_rm_and_attach(cli: Cli, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    ref = cli.ok("ref", "add", "--title", "Paper").strip()
    legacy = {".p2psync-partial-notes.txt": b"my notes\n", ".p2psync-incoming-paper.pdf": b"%PDF-1.7\nold\n"}
    with Library.open(lib) as library:
        for name, data in legacy.items():
            _legacy_attachment(library, ref, name, data)
    other, pdf = tmp_path / "other.pdf", tmp_path / "paper.pdf"
    other.write_bytes(b"%PDF-1.7\nother\n")
    pdf.write_bytes(b"%PDF-1.7\nnew\n")
    cli.ok("attach", ref, other)
    cli.ok("attachment", "rm", ref, "other.pdf")
    cli.ok("attach", ref, pdf)
    assert tree(lib / "attachments" / ref) == {**legacy, "paper.pdf": b"%PDF-1.7\nnew\n"}
    listed = {a["name"]: a["present"] for a in cli.json("attachment", "list", ref)}
    assert listed == {".p2psync-partial-notes.txt": True, ".p2psync-incoming-paper.pdf": True, "paper.pdf": True}


def test_a_member_change_set_naming_a_reserved_attachment_is_rejected_whole(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    ref = a.add_reference({"title": "Shared"})
    sync_libraries(a, b)
    # B, a member, signs a change set that edits the title and then names .p2psync-versions.
    b.edit_reference(ref, {"title": "Edited by B"})
    data = b"%PDF-1.7\nplanted\n"
    manifest = {"size": len(data), "sha256": sha(data), "chunks": [[sha(data), len(data)]]}
    with b.writing() as writer:
        op = {"op": ops.ATTACHMENT_PUT, "ref": ref, "name": ".p2psync-versions", "value": manifest, "seen": []}
        writer.log(op, checked=True)  # what a modified client would write
    seal(b)
    wires = list(changesets_since(b, version_vector(a)))
    assert len(wires) == 1 and b".p2psync-versions" in wires[0]
    before = snapshot(a)
    report = receive(a, wires, peer="B")
    assert report.applied == 0 and [r["reason"] for r in report.rejected] == ["schema"]
    message = report.rejected[0]["message"]
    assert message.startswith("Entry ") and "'.p2psync-versions' starts with '.p2psync'" in message, message
    assert snapshot(a) == before  # nothing of it, not even the title edit before it
    assert a.get_reference(ref)["title"] == "Shared"
    assert sync.recent_problems(a)[0]["reason"] == "schema"
    assert not (a.path / "attachments" / ref).exists()


# --- the internal files, moved out of reach ------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def fetch(client_path: Path, server_path: Path) -> Any:
    server, client = Node(server_path), Node(client_path)
    port = await server.serve("127.0.0.1", 0)
    try:
        results = await client.sync([Address("127.0.0.1", port)])
        return await client.fetch(results)
    finally:
        await client.close()
        await server.close()


def as_old_layout(path: Path) -> None:
    """Put a library's internal files where versions before this one kept them (beside the
    attachments, in attachments/REF/) and forget that it was moved."""
    with Library.open(path) as library:
        for ref, _name, digest in library.db.execute("SELECT ref_id, name, sha256 FROM attachment_versions"):
            old = library.attachment_file(ref, OLD_VERSIONS) / digest
            old.parent.mkdir(exist_ok=True)
            transfers.version_path(library, ref, digest).rename(old)
        library.db.execute("DELETE FROM meta WHERE key = 'files_layout'")


def internal_beside_attachments(path: Path) -> list[str]:
    return sorted(
        str(p.relative_to(path)) for p in (path / "attachments").glob("*/*") if p.name.lower().startswith(".p2psync")
    )


def test_a_partial_file_left_by_an_older_version_is_moved_and_resumed(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    data = b"%PDF-1.7\n" + random.Random(4).randbytes(1_500_000)
    source = tmp_path / "scan.pdf"
    source.write_bytes(data)
    ref = a.add_reference({"title": "Scan"})
    a.attach(ref, source)
    sync_libraries(a, b)  # B knows of the file, has none of it
    a.close()
    b.close()
    as_old_layout(tmp_path / "b")
    old_partial = tmp_path / "b" / "attachments" / ref / (OLD_PARTIAL + sha(data))
    old_partial.parent.mkdir(parents=True)
    old_partial.write_bytes(data[:900_000])  # a fetch cut off part way, as the old code left it
    with Library.open(tmp_path / "b") as b:
        assert internal_beside_attachments(b.path) == []
        moved = transfers.partial_path(b, ref, sha(data))
        assert moved.read_bytes() == data[:900_000]
    fetched = run(fetch(tmp_path / "b", tmp_path / "a"))
    assert fetched.files == 1 and fetched.missing == []
    assert fetched.bytes_resumed > 600_000 and fetched.bytes_fetched < 700_000, fetched.as_dict()
    assert (tmp_path / "b" / "attachments" / ref / "scan.pdf").read_bytes() == data
    assert not moved.exists() and not old_partial.exists()


def make_conflict(tmp_path: Path) -> tuple[Path, Path, str, dict[str, bytes]]:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    rng = random.Random(8)
    versions = {n: b"%PDF-1.7\n" + rng.randbytes(200_000) for n in ("v0", "mine", "theirs")}
    for n, data in versions.items():
        (tmp_path / n).write_bytes(data)
    ref = a.add_reference({"title": "Contested"})
    a.attach(ref, tmp_path / "v0", name="paper.pdf")
    a.close()
    b.close()
    run(fetch(tmp_path / "b", tmp_path / "a"))
    with Library.open(tmp_path / "a") as a:
        a.attach(ref, tmp_path / "mine", name="paper.pdf")
    with Library.open(tmp_path / "b") as b:
        b.attach(ref, tmp_path / "theirs", name="paper.pdf")
    run(fetch(tmp_path / "b", tmp_path / "a"))
    run(fetch(tmp_path / "a", tmp_path / "b"))
    return tmp_path / "a", tmp_path / "b", ref, versions


def test_a_conflicts_versions_kept_by_an_older_version_are_found_and_resolved(tmp_path: Path) -> None:
    _, pb, ref, versions = make_conflict(tmp_path)
    as_old_layout(pb)
    assert internal_beside_attachments(pb) == [f"attachments/{ref}/{OLD_VERSIONS}"]
    with Library.open(pb) as b:
        assert internal_beside_attachments(pb) == []
        [item] = b.list_attachments(ref)
        assert item["conflict"] and item["present"]
        kept = {v["sha256"]: Path(v["path"]) for v in item["versions"]}
        assert set(kept) == {sha(versions["mine"]), sha(versions["theirs"])}
        for digest, path in kept.items():
            assert sha(path.read_bytes()) == digest
        [aside] = [p for p in kept.values() if p != Path(item["path"])]
        assert aside.parent == pb / "attachments" / ".p2psync" / "versions" / ref  # out of any name's reach
        b.resolve_conflict(ref, fields={"attachment:paper.pdf": "remote"})  # A's version
        [item] = b.list_attachments(ref)
        assert not item["conflict"] and Path(item["path"]).read_bytes() == versions["mine"]
        assert all(not p.exists() for p in kept.values() if p != Path(item["path"]))
    assert tree(pb / "attachments" / ref) == {"paper.pdf": versions["mine"]}


def test_a_conflict_on_this_version_keeps_its_versions_out_of_reach_and_backs_them_up(tmp_path: Path) -> None:
    pa, pb, ref, versions = make_conflict(tmp_path)
    assert internal_beside_attachments(pa) == internal_beside_attachments(pb) == []
    with Library.open(pb) as b:
        backups.backup(b, tmp_path / "b.zip")
        [item] = b.list_attachments(ref)
        aside = next(Path(v["path"]) for v in item["versions"] if Path(v["path"]) != Path(item["path"]))
    assert aside.parent == pb / "attachments" / ".p2psync" / "versions" / ref
    with zipfile.ZipFile(tmp_path / "b.zip") as archive:
        assert f"attachments/{ref}/{OLD_VERSIONS}/{aside.name}" in archive.namelist()
    # The archive's member names are those of the backup format (unchanged), and restore puts
    # the kept version where this version keeps them.
    restored = backups.restore(tmp_path / "b.zip", tmp_path / "restored")
    with Library.open(Path(restored["path"])) as r:
        [item] = r.list_attachments(ref)
        assert item["conflict"] and all(v["present"] for v in item["versions"])
        assert {sha(Path(v["path"]).read_bytes()) for v in item["versions"]} == {
            sha(versions["mine"]),
            sha(versions["theirs"]),
        }
    assert internal_beside_attachments(tmp_path / "restored") == []
