"""The backup folder: this library's backups found in it, and the daemon's regular backup made
into it with the oldest regular ones beyond --keep removed (the timing is p2psync/engine/backup_schedule.py).

Only files named as p2psync names its backups, whose manifest says they are this library's, are
ever looked at as backups; only those whose manifest says the schedule made them are ever removed.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from p2psync.engine.backup_schedule import OnDisk, beyond
from p2psync.errors import P2PSyncError
from p2psync.store.backup import Progress, Reason, backup, backup_path, read_manifest
from p2psync.store.files import fsync_dir
from p2psync.store.library import Library

# The names default_backup_name gives: only such files are ever looked into, or pruned.
_OUR_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{6}-p2psync-[^/\\]*\.zip$")
_LISTED_AT_MOST = 1000  # files with our names looked into per folder (a folder of backups, not a disk)


def backup_folder(library: Library, folder: Path | None = None) -> Path:
    """Where the backups made for this library go unless told: the folder that holds it."""
    return folder or library.path.resolve().parent


def backups_on_disk(folder: Path, library_id: str) -> list[OnDisk]:
    """This library's backups in `folder`, by their manifests: a file with another name, another
    library's backup, or an archive that cannot be read is not one (and is never touched)."""
    found: list[OnDisk] = []
    try:
        names = sorted(p.name for p in folder.iterdir() if _OUR_NAME.match(p.name))[-_LISTED_AT_MOST:]
    except OSError:
        return found  # no folder yet: no backups
    for name in names:
        path = folder / name
        if path.is_symlink() or not path.is_file():
            continue
        try:
            manifest = read_manifest(path)
            created = datetime.fromisoformat(str(manifest["created"])).timestamp()
        except (P2PSyncError, KeyError, ValueError, TypeError, OSError):
            continue
        if manifest.get("library_id") == library_id:
            found.append(OnDisk(str(path), created, manifest.get("reason") == Reason.SCHEDULED))
    return found


@dataclass(frozen=True)
class Scheduled:
    """What one regular backup did: the manifest of the backup made and the older ones removed."""

    manifest: dict[str, Any]
    pruned: list[str]

    def sentence(self) -> str:
        gone = f"; removed {len(self.pruned)} older regular backup(s)" if self.pruned else ""
        return f"Backed up the library to {self.manifest['path']} (the regular backup{gone})."


def scheduled_backup(library: Library, folder: Path, keep: int, progress: Progress | None = None) -> Scheduled:
    """Make a regular backup into `folder`, then remove the oldest regular backups of this
    library beyond `keep`. A backup that fails raises FileProblem before anything is removed (as
    does whatever `progress` raises to stop it: the half-written file goes with it)."""
    target = backup_path(library, folder=folder)
    manifest = backup(library, target, progress, reason=Reason.SCHEDULED)
    on_disk = backups_on_disk(folder, library.library_id)
    pruned = []
    for old in beyond(on_disk, keep):
        if old.path != manifest["path"]:
            with contextlib.suppress(FileNotFoundError):
                Path(old.path).unlink()
            pruned.append(old.path)
    if pruned:
        fsync_dir(folder)
    return Scheduled(manifest, pruned)
