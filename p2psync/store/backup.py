"""Backups: one archive with a consistent snapshot of the library and every attachment.

The archive is a ZIP file (ZIP64 for large libraries):

    library.sqlite3          snapshot taken with SQLite's backup API (safe while others write),
                             deflate-compressed
    device.key               the backed-up device's private key (the archive is written 0600)
                             (the relay token and library key are left out of the snapshot)
    attachments/REF/NAME     every attachment file present, stored as is (PDFs are already
                             compressed; deflating them again costs time and saves nothing)
    attachments/REF/.p2psync-versions/SHA256
                             the other versions of conflicted attachments, kept until resolved
                             (in the library: attachments/.p2psync/versions/REF/SHA256; the
                             archive keeps the member names of its format)
    p2psync-backup.json      the manifest, written last: counts, and size + SHA-256 of every file

ZIP was chosen over tar.gz because each member can be compressed or not, its central directory
makes a truncated archive obvious, and every member carries a CRC that zipfile checks on read.

A restored library keeps the library's identity and whole history, but continues as a NEW device,
introduced by the backed-up device's key: the restored copy may be older than what peers have
already seen from the old device, and reusing its key would fork that device's change log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from p2psync.crypto.identity import DeviceIdentity
from p2psync.errors import FileProblem, LibraryCorrupt, LibraryExists
from p2psync.store import rebase, schema
from p2psync.store.db import write_transaction
from p2psync.store.files import CHUNK, atomic_writer, fsync_dir
from p2psync.store.folder import version_file, version_path
from p2psync.store.library import ATTACHMENTS_DIR, DB_FILE, KEY_FILE, Library, device_add_op, device_name
from p2psync.store.sync import seal

FORMAT = 1
VERSIONS_DIR = ".p2psync-versions"  # the archive's folder of a reference's kept versions (format 1)
MANIFEST = "p2psync-backup.json"
LAST_BACKUP_KEY = "last_backup"  # meta: the last backup this device made (JSON: at, path, reason)
Progress = Callable[[int], None]
# What zipfile raises for damaged bytes besides BadZipFile: a cut or broken deflate stream, a flipped
# flag (encrypted, patched data, unknown method) or a member name that is not UTF-8.
DAMAGED = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    zlib.error,
    NotImplementedError,
    RuntimeError,
    UnicodeDecodeError,
)


def default_backup_name(library_name: str, now: datetime | None = None) -> str:
    """'2026-11-22-153012-p2psync-My-library.zip': sorts by date, says what it is."""
    now = now or datetime.now()
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in library_name).strip("-")[:40] or "library"
    return f"{now:%Y-%m-%d-%H%M%S}-p2psync-{slug}.zip"


def backup_path(library: Library, out: Path | None = None, folder: Path | None = None) -> Path:
    """Where a backup goes: `out` (a file, or a folder to put it in), else `folder`, else the
    folder that holds the library (where pairing keeps its backups too); named by date."""
    name = default_backup_name(library.name)
    if out is not None and not out.is_dir():
        return out
    return _unused(out if out is not None else folder or library.path.resolve().parent, name)


def _unused(folder: Path, name: str) -> Path:
    """`folder / name`, or with -2, -3... before the extension when that is taken: names are to the
    second, and a backup made in the same second as another (a merge's and a regular one, or two
    libraries of one name) must not replace it."""
    path = folder / name
    stem, suffix = path.stem, path.suffix
    for count in range(2, 1000):
        if not path.exists():
            break
        path = folder / f"{stem}-{count}{suffix}"
    return path


class Reason(StrEnum):
    """Why a backup was made (the manifest's `reason`): each says when in words."""

    MANUAL = "manual"  # p2psync backup
    MERGE = "merge"  # before two libraries are merged (pairing, an account login)
    FIRST_SYNC = "first sync"  # before a library's first sync with an account (it binds or joins it)
    RELINK = "relink"  # before a library re-links to an account that holds it (after a reset)
    LOGIN = "login"  # before a plain login syncs (only when asked for with --backup)
    SCHEDULED = "scheduled"  # the daemon's regular backup (--backup-every)


_WHEN = {
    Reason.MERGE: "before merging",
    Reason.FIRST_SYNC: "before its first sync with the account",
    Reason.RELINK: "before it re-links to the account",
    Reason.LOGIN: "before syncing with the account",
    Reason.SCHEDULED: "(the regular backup)",
}


def before_change(library: Library, reason: Reason, folder: Path | None = None) -> dict[str, Any]:
    """The backup made before a sync changes this library (a merge, the first sync with an
    account, a re-link): a new zip beside the library unless `folder` is given. Returns its manifest."""
    target = backup_path(library, folder=folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    return backup(library, target, reason=reason)


def before_merge(library: Library, folder: Path | None = None) -> dict[str, Any]:
    return before_change(library, Reason.MERGE, folder)


def backed_up_sentence(manifest: dict[str, Any]) -> str:
    """'Backed up this library to PATH before merging.' (one sentence, for stderr or a notice)"""
    when = _WHEN.get(Reason(manifest.get("reason", Reason.MANUAL)), "")
    return f"Backed up this library to {manifest['path']}{' ' + when if when else ''}."


@dataclass(frozen=True)
class BackupChoice:
    """The user's answer to "back up before this sync changes the library?" (--backup/--no-backup,
    a page's tick box) and where to (--backup-dir), applied the same way by every face: None is
    the default, yes wherever the library has something to lose, except a plain login (nothing
    new comes that the library did not sync before); True backs up at every such step; False never.
    `said` hears each backup made (the command line prints the sentence at once)."""

    choice: bool | None = None
    folder: Path | None = None
    said: Callable[[dict[str, Any]], None] | None = None

    def __call__(self, library: Library, reason: Reason = Reason.MERGE) -> dict[str, Any] | None:
        if self.choice is False:
            return None
        if self.choice is None and (reason is Reason.LOGIN or rebase.is_empty(library)):
            return None
        manifest = before_change(library, reason, self.folder)
        if self.said is not None:
            self.said(manifest)
        return manifest


@dataclass(frozen=True)
class LastBackup:
    """The last backup this device made of the library, as recorded in it (shown by `status`)."""

    at: str  # ISO 8601, UTC
    path: str
    reason: str


def last_backup(library: Library) -> LastBackup | None:
    row = library.db.execute("SELECT value FROM meta WHERE key = ?", [LAST_BACKUP_KEY]).fetchone()
    if row is None:
        return None
    try:
        value = json.loads(row[0])
        return LastBackup(at=str(value["at"]), path=str(value["path"]), reason=str(value["reason"]))
    except (ValueError, KeyError, TypeError):
        return None  # a record this version cannot read is as good as none


def backup_line(last: LastBackup | None) -> str:
    """`status`'s line: 'Last backup: 2026-12-07 10:30 UTC, /home/ada/2026-12-07-...zip'."""
    if last is None:
        return "Last backup: none yet ('p2psync backup', or a daemon backs up every 7 days by default)."
    try:
        when = datetime.fromisoformat(last.at).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        when = last.at
    return f"Last backup: {when}, {last.path}"


def _record_last(library: Library, manifest: dict[str, Any]) -> None:
    record = {"at": manifest["created"], "path": manifest["path"], "reason": manifest["reason"]}
    with write_transaction(library.db):
        library.db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [LAST_BACKUP_KEY, json.dumps(record)]
        )


def backup_size(library: Library) -> int:
    """Bytes a backup will read (database + attachments), for a progress bar."""
    db_bytes = sum(p.stat().st_size for p in library.path.glob(DB_FILE + "*"))
    row = library.db.execute(
        "SELECT (SELECT coalesce(sum(size), 0) FROM attachment_files) "
        "+ (SELECT coalesce(sum(size), 0) FROM attachment_versions)"
    ).fetchone()
    return int(db_bytes + row[0])


def backup(
    library: Library, out: Path, progress: Progress | None = None, reason: Reason = Reason.MANUAL
) -> dict[str, Any]:
    """Write a backup archive of `library` to `out` (whole or not at all); return its manifest.
    The library records it as its last backup (`last_backup`)."""
    advance = progress or (lambda n: None)
    library.scan_attachments()  # so that recorded hashes describe the files we are about to copy
    # Seal this device's pending changes first: a restored copy continues as another device and
    # could never sign them, so they must already sit in change sets the copy can forward.
    seal(library)
    with tempfile.TemporaryDirectory(prefix="p2psync-backup-") as tmp:
        snapshot = Path(tmp) / DB_FILE
        _snapshot_database(library, snapshot)
        counts, files = _read_snapshot(snapshot)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "reason": str(reason),
            **counts,
            "files": {},
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_writer(out, mode=0o600) as raw, zipfile.ZipFile(raw, "w", allowZip64=True) as archive:
                manifest["files"][DB_FILE] = _add_file(archive, snapshot, DB_FILE, zipfile.ZIP_DEFLATED, advance)
                manifest["files"][KEY_FILE] = _add_file(
                    archive, library.path / KEY_FILE, KEY_FILE, zipfile.ZIP_DEFLATED, None
                )
                for ref_id, name in files:
                    member = f"{ATTACHMENTS_DIR}/{ref_id}/{name}"
                    path = library.attachment_file(ref_id, name)
                    if name.startswith(VERSIONS_DIR + "/"):  # a kept version (no attachment name has a "/")
                        path = version_path(library, ref_id, name[len(VERSIONS_DIR) + 1 :])
                    if path.is_file():  # a file deleted by hand is reported by scan, not backed up
                        manifest["files"][member] = _add_file(archive, path, member, zipfile.ZIP_STORED, advance)
                archive.writestr(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
        except OSError as exc:
            raise FileProblem(
                f"Cannot write the backup to {out} ({exc.strerror}); check the folder and free space."
            ) from None
    manifest["path"] = str(out)
    manifest["bytes"] = out.stat().st_size
    _record_last(library, manifest)
    return manifest


def _snapshot_database(library: Library, target: Path) -> None:
    dest = sqlite3.connect(target)
    try:
        library.db.conn.backup(dest)  # one step: a consistent read of the whole database
        dest.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
        # A backup holds no relay session: no token, no library key (a restored library logs in
        # again, with the password). The link itself stays, so the one-account rule still holds.
        with dest:
            dest.execute(
                "DELETE FROM meta WHERE key IN "
                "('relay_token', 'relay_key', 'relay_keys', 'relay_key_epoch', 'relay_wrap')"
            )
    finally:
        dest.close()


def _read_snapshot(path: Path) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    conn = sqlite3.connect(path)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        count = lambda sql: int(conn.execute(sql).fetchone()[0])  # noqa: E731
        counts = {
            "library_id": meta["library_id"],
            "name": meta.get("name", ""),
            "device_id": meta["device_id"],
            "schema_version": count("PRAGMA user_version"),
            "references": count("SELECT count(*) FROM refs WHERE trashed = 0"),
            "trash": count("SELECT count(*) FROM refs WHERE trashed = 1"),
            "groups": count("SELECT count(*) FROM groups"),
            "changes": count("SELECT count(*) FROM changelog"),
        }
        files = conn.execute("SELECT ref_id, name FROM attachment_files ORDER BY ref_id, name").fetchall()
        versions = conn.execute("SELECT ref_id, sha256 FROM attachment_versions ORDER BY ref_id, sha256").fetchall()
    finally:
        conn.close()
    counts["attachments"] = len(files)
    # A conflict's other versions are archived as attachments/REF/.p2psync-versions/SHA256.
    return counts, [(r, n) for r, n in files] + [(r, f"{VERSIONS_DIR}/{sha}") for r, sha in versions]


def _add_file(
    archive: zipfile.ZipFile, path: Path, member: str, compression: int, advance: Progress | None
) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    info = zipfile.ZipInfo(member, date_time=datetime.now().timetuple()[:6])
    info.compress_type = compression
    info.external_attr = 0o600 << 16
    with path.open("rb") as reader, archive.open(info, "w", force_zip64=True) as writer:
        while block := reader.read(CHUNK):
            writer.write(block)
            digest.update(block)
            size += len(block)
            if advance:
                advance(len(block))
    return {"size": size, "sha256": digest.hexdigest()}


# --- restore ------------------------------------------------------------------------------------


def read_manifest(archive_path: Path) -> dict[str, Any]:
    with _open_archive(archive_path) as archive:
        return _manifest(archive, archive_path)


@contextlib.contextmanager
def _open_archive(path: Path) -> Iterator[zipfile.ZipFile]:
    try:
        with zipfile.ZipFile(path) as archive:
            yield archive
    except FileNotFoundError:
        raise FileProblem(f"The backup {path} does not exist.") from None
    except DAMAGED as exc:
        raise LibraryCorrupt(
            f"The backup {path} is damaged or incomplete ({exc}); nothing was restored. Use another backup."
        ) from None


def _manifest(archive: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except KeyError:
        raise LibraryCorrupt(f"{path} is not a p2psync backup (it has no {MANIFEST}).") from None
    except (ValueError, OSError, *DAMAGED) as exc:
        raise LibraryCorrupt(f"The backup {path} has a damaged manifest ({exc}); nothing was restored.") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise LibraryCorrupt(f"{path} is a backup format this p2psync does not know; upgrade p2psync.")
    if type(manifest.get("schema_version", 0)) is not int or not all(
        isinstance(f, dict) and type(f.get("size")) is int and isinstance(f.get("sha256"), str)
        for f in manifest["files"].values()
    ):
        raise LibraryCorrupt(f"The backup {path} has a damaged manifest; nothing was restored.")
    if manifest.get("schema_version", 0) > schema.SCHEMA_VERSION:
        raise LibraryCorrupt(f"The backup {path} was made by a newer p2psync; upgrade p2psync to restore it.")
    return manifest


def restore_size(archive_path: Path) -> int:
    return sum(f["size"] for f in read_manifest(archive_path)["files"].values())


def restore(archive_path: Path, target: Path, force: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Rebuild a library at `target` from a backup, verifying every hash, as a new device.

    Nothing appears at `target` unless everything verified; with `force` an existing library
    there is replaced only at the very end (and removed only after the new one is in place).
    """
    advance = progress or (lambda n: None)
    target = Path(target)
    if target.exists() and any(target.iterdir()) and not force:
        what = "A library" if (target / DB_FILE).exists() else "A non-empty folder"
        raise LibraryExists(
            f"{what} already exists at {target}; restore elsewhere with --library, or replace it with --force."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".p2psync-restore-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)  # the library's folder once in place: the key is in it from the start
    try:
        with _open_archive(archive_path) as archive:
            manifest = _manifest(archive, archive_path)
            _extract_verified(archive, archive_path, manifest, staging, advance)
        try:
            result = _continue_as_new_device(staging, manifest)
        except (sqlite3.DatabaseError, ValueError) as exc:  # hashes can match a forged database: bad pages, bad text
            raise LibraryCorrupt(
                f"The database in the backup {archive_path} is damaged ({exc}); nothing was restored."
            ) from None
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result["path"] = str(target)
    return result


def _extract_verified(
    archive: zipfile.ZipFile, archive_path: Path, manifest: dict[str, Any], staging: Path, advance: Progress
) -> None:
    names = set(archive.namelist()) - {MANIFEST}
    expected = manifest["files"]
    if DB_FILE not in expected or KEY_FILE not in expected or names != set(expected):
        raise LibraryCorrupt(
            f"The backup {archive_path} does not hold the files its manifest lists; nothing was restored."
        )
    for member, want in expected.items():
        parts = member.split("/")
        version = len(parts) == 4 and parts[2] == VERSIONS_DIR and re.fullmatch("[0-9a-f]{64}", parts[3]) is not None
        if any(p in ("", ".", "..") for p in parts) or (
            len(parts) > 1 and (parts[0] != ATTACHMENTS_DIR or not (len(parts) == 3 or version))
        ):
            raise LibraryCorrupt(f"The backup {archive_path} names an unsafe path {member!r}; nothing was restored.")
        path = version_file(staging, parts[1], parts[3]) if version else staging.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        try:
            with archive.open(member) as reader, path.open("wb") as writer:
                while block := reader.read(CHUNK):
                    writer.write(block)
                    digest.update(block)
                    size += len(block)
                    advance(len(block))
                writer.flush()
                os.fsync(writer.fileno())
        except (OSError, *DAMAGED) as exc:
            raise LibraryCorrupt(
                f"The backup {archive_path} is damaged at {member} ({exc}); nothing was restored."
            ) from None
        if size != want.get("size") or digest.hexdigest() != want.get("sha256"):
            raise LibraryCorrupt(
                f"The backup {archive_path} is damaged: {member} does not match its recorded "
                f"hash; nothing was restored."
            )
    os.chmod(staging / KEY_FILE, 0o600)


def _continue_as_new_device(staging: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    old = DeviceIdentity.load(staging / KEY_FILE)
    new = DeviceIdentity.generate()
    conn = sqlite3.connect(staging / DB_FILE)
    try:
        if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise LibraryCorrupt("The database in the backup fails SQLite's integrity check; nothing was restored.")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("library_id") != manifest.get("library_id") or meta.get("device_id") != old.device_id:
            raise LibraryCorrupt(
                "The backup's database, key and manifest do not belong together; nothing was restored."
            )
    finally:
        conn.close()
    library = Library.open(staging)
    try:
        with write_transaction(library.db):
            library.db.execute("UPDATE meta SET value = ? WHERE key = 'device_id'", [new.device_id])
            library.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('restored_from', ?)", [old.device_id])
            # The files were just verified against their hashes; record their new mtimes.
            for ref_id, name in library.db.execute("SELECT ref_id, name FROM attachment_files").fetchall():
                path = library.attachment_file(ref_id, name)
                if path.is_file():
                    library.db.execute(
                        "UPDATE attachment_files SET mtime_ns = ? WHERE ref_id = ? AND name = ?",
                        [path.stat().st_mtime_ns, ref_id, name],
                    )
                else:
                    library.db.execute("DELETE FROM attachment_files WHERE ref_id = ? AND name = ?", [ref_id, name])
            for ref_id, name, sha in library.db.execute(
                "SELECT ref_id, name, sha256 FROM attachment_versions"
            ).fetchall():
                path = version_path(library, ref_id, sha)
                if path.is_file():
                    library.db.execute(
                        "UPDATE attachment_versions SET mtime_ns = ? WHERE ref_id = ? AND name = ? AND sha256 = ?",
                        [path.stat().st_mtime_ns, ref_id, name, sha],
                    )
                else:
                    library.db.execute(
                        "DELETE FROM attachment_versions WHERE ref_id = ? AND name = ? AND sha256 = ?",
                        [ref_id, name, sha],
                    )
        new.save(staging / KEY_FILE)
        library.device_id = new.device_id
        with library.writing() as writer:
            writer.log(device_add_op(new, device_name(), old, library.library_id))
        info = library.info()
    finally:
        library.close()
    return {"restored_from_device": old.device_id, **info}


def _move_into_place(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.parent / f".p2psync-replaced-{secrets.token_hex(4)}"
        os.replace(target, old)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
