"""Backup and restore: real archives, real files, hostile archives."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from p2psync.crypto.identity import introduction_message, verify
from p2psync.errors import LibraryCorrupt, LibraryExists
from p2psync.store import backup as backups
from p2psync.store.library import Library
from tests.support import snapshot


@pytest.fixture
def filled(tmp_path: Path) -> Library:
    library = Library.create(tmp_path / "lib", "Thesis")
    ids = library.add_references(
        {"title": f"Paper {i} – Grüße", "authors": [{"family": "Østergaard", "given": "Søren"}], "year": "2020"}
        for i in range(50)
    )
    group = library.create_group("Chapter 1")
    library.add_to_group(group, ids[:10])
    library.trash_reference(ids[-1])
    for i, size in enumerate([0, 1, 1_500_000]):
        f = tmp_path / f"file {i} é.pdf"
        f.write_bytes(os.urandom(size))
        library.attach(ids[i], f)
    yield library
    library.close()


def listing(library: Library) -> list[dict]:
    return [*library.list_references(), *library.list_references(trashed=True)]


def test_backup_restore_reproduces_library_and_files(filled: Library, tmp_path: Path) -> None:
    manifest = backups.backup(filled, tmp_path / "out.zip")
    assert manifest["references"] == 49 and manifest["trash"] == 1 and manifest["attachments"] == 3
    assert (os.stat(tmp_path / "out.zip").st_mode & 0o777) == 0o600  # it holds a private key
    result = backups.restore(tmp_path / "out.zip", tmp_path / "restored")
    restored = Library.open(tmp_path / "restored")
    try:
        assert listing(restored) == listing(filled)
        assert restored.list_groups() == filled.list_groups()
        for ref in filled.list_references():
            for item in filled.list_attachments(ref["id"]):
                copy = restored.attachment_path(ref["id"], item["name"])
                assert copy.read_bytes() == Path(item["path"]).read_bytes()
        assert restored.scan_attachments() == []  # mtimes were re-recorded: nothing looks edited
        # Same library and history, new device introduced by the old one's key.
        assert restored.library_id == filled.library_id
        assert restored.device_id != filled.device_id == result["restored_from_device"]
        old, new = restored.devices()
        assert old["device_id"] == filled.device_id and new["device_id"] == restored.device_id
        assert new["introducer"] == filled.device_id
        row = restored.db.execute("SELECT signature FROM devices WHERE id = ?", [restored.device_id]).fetchone()
        message = introduction_message(restored.library_id, restored.device_id, restored.identity().public_bytes)
        assert verify(filled.identity().public_bytes, base64.b64decode(row[0]), message)
        # The old device's log is untouched; new edits are logged by the new device.
        before = snapshot(filled)["changelog"]
        assert [r for r in snapshot(restored)["changelog"] if r[0] == filled.device_id] == [
            r for r in before if r[0] == filled.device_id
        ]
        ref = restored.add_reference({"title": "after restore"})
        last = restored.db.execute("SELECT device FROM changelog ORDER BY num DESC LIMIT 1").fetchone()[0]
        assert last == restored.device_id and restored.get_reference(ref)
    finally:
        restored.close()


def test_default_name_starts_with_the_date(filled: Library) -> None:
    assert re.match(r"^\d{4}-\d{2}-\d{2}-\d{6}-p2psync-Thesis\.zip$", backups.default_backup_name("Thesis"))


def test_restore_refuses_to_overwrite_without_force(filled: Library, tmp_path: Path) -> None:
    backups.backup(filled, tmp_path / "out.zip")
    other = Library.create(tmp_path / "other")
    other.add_reference({"title": "precious"})
    other.close()
    with pytest.raises(LibraryExists, match="--force"):
        backups.restore(tmp_path / "out.zip", tmp_path / "other")
    assert Library.open(tmp_path / "other").info()["references"] == 1
    backups.restore(tmp_path / "out.zip", tmp_path / "other", force=True)
    assert Library.open(tmp_path / "other").info()["references"] == 49
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".p2psync-")]


def _no_leftovers(tmp_path: Path) -> None:
    assert not (tmp_path / "target").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".p2psync-")]


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_archive_is_refused_and_leaves_nothing(filled: Library, tmp_path: Path, keep: float) -> None:
    backups.backup(filled, tmp_path / "out.zip")
    data = (tmp_path / "out.zip").read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(LibraryCorrupt, match="nothing was restored"):
        backups.restore(tmp_path / "cut.zip", tmp_path / "target")
    _no_leftovers(tmp_path)


def test_flipped_byte_in_an_attachment_is_refused(filled: Library, tmp_path: Path) -> None:
    backups.backup(filled, tmp_path / "out.zip")
    data = bytearray((tmp_path / "out.zip").read_bytes())
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        big = max(archive.infolist(), key=lambda i: i.file_size)
        offset = big.header_offset + 30 + len(big.filename.encode()) + len(big.extra) + big.file_size // 2
    data[offset] ^= 0xFF
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    with pytest.raises(LibraryCorrupt, match="nothing was restored"):
        backups.restore(tmp_path / "bad.zip", tmp_path / "target")
    _no_leftovers(tmp_path)


def test_tampered_manifest_and_unsafe_paths_are_refused(filled: Library, tmp_path: Path) -> None:
    backups.backup(filled, tmp_path / "out.zip")
    with zipfile.ZipFile(tmp_path / "out.zip") as src:
        manifest = json.loads(src.read(backups.MANIFEST))
        members = {n: src.read(n) for n in src.namelist() if n != backups.MANIFEST}
    evil = dict(manifest, files={**manifest["files"], "../evil.txt": {"size": 1, "sha256": "0" * 64}})
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as dst:
        for name, content in members.items():
            dst.writestr(name, content)
        dst.writestr("../evil.txt", b"x")
        dst.writestr(backups.MANIFEST, json.dumps(evil))
    with pytest.raises(LibraryCorrupt):
        backups.restore(tmp_path / "evil.zip", tmp_path / "target")
    _no_leftovers(tmp_path)
    assert not (tmp_path / "evil.txt").exists()
    (tmp_path / "plain.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    with pytest.raises(LibraryCorrupt, match="not a p2psync backup"):
        backups.restore(tmp_path / "plain.zip", tmp_path / "target")


def test_backup_while_another_process_writes(tmp_path: Path) -> None:
    Library.create(tmp_path / "lib").close()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from p2psync.store.library import Library; "
            "lib = Library.open(Path(sys.argv[1])); "
            "lib.add_references({'title': f'w {i}'} for i in range(15000))",
            str(tmp_path / "lib"),
        ],
        env=env,
    )
    library = Library.open(tmp_path / "lib")
    try:
        manifests = []
        while writer.poll() is None and len(manifests) < 20:
            manifests.append(backups.backup(library, tmp_path / f"b{len(manifests)}.zip"))
        assert writer.wait(timeout=120) == 0
    finally:
        library.close()
    assert manifests, "no backup was taken while the writer ran"
    for i, manifest in enumerate(manifests):
        restored = backups.restore(tmp_path / f"b{i}.zip", tmp_path / f"r{i}")
        assert restored["references"] == manifest["references"]
        assert manifest["references"] % 500 == 0  # a snapshot never sees half a transaction


def test_restored_library_goes_on_syncing_as_a_new_device(tmp_path: Path) -> None:
    from p2psync.store.sync import sync_libraries
    from tests.sync_support import digest, founded, joined

    home = founded(tmp_path / "home")
    work = joined(home, tmp_path / "work", "work")
    ref = home.add_reference({"title": "written just before the backup"})
    backups.backup(home, tmp_path / "home.zip")  # not synced yet: the backup carries it
    home.close()  # the home laptop dies
    backups.restore(tmp_path / "home.zip", tmp_path / "new-home")
    new_home = Library.open(tmp_path / "new-home")
    new_home.edit_reference(ref, {"year": "2026"})
    report = sync_libraries(new_home, work)
    assert report.sent_to_b.rejected == [] and report.sent_to_a.rejected == []
    assert work.get_reference(ref)["year"] == "2026"
    assert [d["device_id"] for d in work.devices()] == [d["device_id"] for d in new_home.devices()]
    work.edit_reference(ref, {"volume": "1"})
    sync_libraries(new_home, work)
    assert digest(new_home) == digest(work)
