"""The daemon's regular backups, wired: the schedule (backup_schedule.py, sans-IO) read from the
backups on disk at start, and each backup made on a thread of its own with its own library
connection, so the daemon serves and syncs meanwhile (store/backup_folder.py makes and prunes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from p2psync.backup_schedule import RETRY_SECONDS, BackupTimer, Schedule, describe
from p2psync.errors import P2PSyncError
from p2psync.net.worker import LibraryWorker
from p2psync.store.backup_folder import Scheduled, backup_folder, backups_on_disk, scheduled_backup
from p2psync.store.library import Library

log = logging.getLogger("p2psync.node")


@dataclass(frozen=True)
class RegularBackups:
    """daemon --backup-every, --keep, --backup-dir."""

    schedule: Schedule
    folder: Path | None = None  # None: the folder that holds the library


async def timer(worker: LibraryWorker, backups: RegularBackups) -> BackupTimer:
    """The schedule as the backups on disk set it (not when this daemon started)."""
    folder, library_id = await worker.call(lambda library: (backup_folder(library, backups.folder), library.library_id))
    made = BackupTimer(backups.schedule, await asyncio.to_thread(backups_on_disk, folder, library_id))
    when = "now" if made.due_at <= time.time() else time.strftime("%Y-%m-%d %H:%M", time.localtime(made.due_at))
    log.info(
        "Regular backups every %s into %s, keeping %d; the next is due %s.",
        describe(backups.schedule.every),
        folder,
        backups.schedule.keep,
        when,
    )
    return made


async def back_up(path: Path, timer: BackupTimer, backups: RegularBackups) -> None:
    """One regular backup (timer.started() was called); a failure (a full disk) is one sentence
    in the log, and the next try comes later."""
    try:
        made = await asyncio.to_thread(_apart, path, backups.folder, backups.schedule.keep)
    except Exception as exc:  # the daemon goes on whatever happened to the backup
        timer.failed(time.time())
        reason = exc.message if isinstance(exc, P2PSyncError) else str(exc)
        log.warning(
            "The regular backup was not made (the library and the older backups are untouched; next try in %s): %s",
            describe(min(backups.schedule.every, RETRY_SECONDS)),
            reason,
        )
        return
    timer.landed(datetime.fromisoformat(str(made.manifest["created"])).timestamp())
    log.info("%s", made.sentence())


def _apart(path: Path, folder: Path | None, keep: int) -> Scheduled:
    with Library.open(path) as library:
        return scheduled_backup(library, backup_folder(library, folder), keep)
