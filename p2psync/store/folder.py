"""Where things are in a library's folder, and the move from the layout of earlier versions.

    library.sqlite3                          the database (WAL mode: also -wal and -shm beside it)
    device.key                               this device's Ed25519 private key
    attachments/REF/NAME                     the version shown (the only one, unless in conflict)
    attachments/.p2psync/partial/REF-SHA256  a version being fetched (store/transfers.py)
    attachments/.p2psync/versions/REF/SHA256 another version of a conflicted attachment
    attachments/.p2psync/incoming/RANDOM/NAME a file being attached, before it is renamed into place

p2psync's own files live in `attachments/.p2psync/`: on the same disk as the attachments (so a
rename moves a file into place) yet out of reach of every attachment, since those are
`attachments/REF/NAME`, no reference id is `.p2psync` and no name may start with it
(model/attachments.py). Earlier versions kept them beside the attachments, in `attachments/REF/`;
`upgrade_layout` moves them on the first opening. This module only names paths and moves or
removes files; what the files should be (the registers against the disk) is store/transfers.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from p2psync.store.db import write_transaction
from p2psync.store.files import fsync_dir

DB_FILE = "library.sqlite3"
KEY_FILE = "device.key"
ATTACHMENTS_DIR = "attachments"
WORK_DIR = ".p2psync"  # attachments/.p2psync: this library's own files, beside the references' folders
LAYOUT = "2"  # meta 'files_layout': the internal files are in WORK_DIR (absent: beside the attachments)
OLD_PARTIAL_PREFIX = ".p2psync-partial-"  # attachments/REF/.p2psync-partial-SHA256, layout 1
OLD_VERSIONS_DIR = ".p2psync-versions"  # attachments/REF/.p2psync-versions/SHA256, layout 1
_HEX64 = re.compile("[0-9a-f]{64}")


def attachment_file(root: Path, ref_id: str, name: str) -> Path:
    """Where the shown version of attachment `name` of `ref_id` is, in the library at `root`."""
    return Path(root) / ATTACHMENTS_DIR / ref_id / name


def work_dir(root: Path) -> Path:
    """The folder of the library at `root` that holds p2psync's own files among the attachments."""
    return Path(root) / ATTACHMENTS_DIR / WORK_DIR


def version_file(root: Path, ref_id: str, sha: str) -> Path:
    return work_dir(root) / "versions" / ref_id / sha


def version_path(library: Any, ref_id: str, sha: str) -> Path:
    return version_file(library.path, ref_id, sha)


def partial_path(library: Any, ref_id: str, sha: str) -> Path:
    return work_dir(library.path) / "partial" / f"{ref_id}-{sha}"


def incoming_path(library: Any, name: str) -> Path:
    """A new path, ending in the attachment's name (which errors then show), to copy a file into
    before it is renamed into place; remove_incoming tidies it. One left by a crash goes a day on."""
    return work_dir(library.path) / "incoming" / secrets.token_hex(8) / name


def remove_incoming(path: Path) -> None:
    path.unlink(missing_ok=True)
    remove_if_empty(path.parent)


INCOMING_KEPT_SECONDS = 86_400  # an attach runs no longer than this; older files were left by a crash


def tidy_incoming(library: Any) -> None:
    now = time.time()
    for folder in (work_dir(library.path) / "incoming").glob("*"):
        with contextlib.suppress(OSError):
            if folder.stat().st_mtime < now - INCOMING_KEPT_SECONDS:
                remove_tree(folder)


def remove_ref_files(library: Any, ref_id: str) -> None:
    """A reference's files are gone for good: its folder, its kept versions, its partial files."""
    remove_tree(attachment_file(library.path, ref_id, "x").parent)
    remove_tree(version_path(library, ref_id, "x").parent)
    for partial in (work_dir(library.path) / "partial").glob(f"{ref_id}-*"):
        partial.unlink(missing_ok=True)


def upgrade_layout(library: Any) -> None:
    """Move the internal files that earlier versions kept beside the attachments (partial
    files, a conflict's other versions) into the work folder, once per library. A file is taken
    only where the old code put it and never if the library records an attachment of that name
    there (a name older versions let through): the user's files stay where they are. Partial
    files are verified chunk by chunk when resumed, as ever, so a moved one is no less safe."""
    db = library.db
    if db.execute("SELECT 1 FROM meta WHERE key = 'files_layout' AND value = ?", [LAYOUT]).fetchone():
        return
    with write_transaction(db):  # one process moves them; the others find it done
        if db.execute("SELECT 1 FROM meta WHERE key = 'files_layout' AND value = ?", [LAYOUT]).fetchone():
            return
        for name in ("partial", "versions", "incoming"):
            (work_dir(library.path) / name).mkdir(parents=True, exist_ok=True)
        attached = {(r, n) for r, n in db.execute("SELECT ref_id, name FROM attachment_files")}
        for ref_id, sha in db.execute("SELECT DISTINCT ref_id, sha256 FROM attachment_versions").fetchall():
            old = attachment_file(library.path, ref_id, OLD_VERSIONS_DIR) / sha
            new = version_path(library, ref_id, sha)
            if old.is_file() and not new.exists():
                new.parent.mkdir(exist_ok=True)
                os.replace(old, new)
            remove_if_empty(old.parent)
        attachments = Path(library.path) / ATTACHMENTS_DIR
        for old in attachments.glob(f"*/{OLD_PARTIAL_PREFIX}*"):
            ref_id, sha = old.parent.name, old.name[len(OLD_PARTIAL_PREFIX) :]
            if _HEX64.fullmatch(sha) and old.is_file() and (ref_id, old.name) not in attached:
                os.replace(old, partial_path(library, ref_id, sha))  # reconcile drops it if not wanted
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('files_layout', ?)", [LAYOUT])
    fsync_dir(work_dir(library.path))


def remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


def remove_tree(path: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(path)
