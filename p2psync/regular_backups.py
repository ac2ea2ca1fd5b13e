"""The daemon's regular backups, wired: the schedule (engine/backup_schedule.py, sans-IO) read from
the backups on disk at start, and each backup made on a thread of its own with its own library
connection, so the daemon serves and syncs meanwhile (store/backup_folder.py makes and prunes).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from p2psync.engine.backup_schedule import RETRY_SECONDS, BackupTimer, Schedule, describe
from p2psync.errors import P2PSyncError
from p2psync.store.backup_folder import Scheduled, backup_folder, backups_on_disk, scheduled_backup
from p2psync.store.library import Library

log = logging.getLogger("p2psync.node")


@dataclass(frozen=True)
class RegularBackups:
    """daemon --backup-every, --keep, --backup-dir."""

    schedule: Schedule
    folder: Path | None = None  # None: the folder that holds the library


class Stopped(Exception):
    """The daemon stops: the backup under way stops too (its half-written file is removed)."""


class Running:
    """The regular backups of one daemon (none without `backups`): started() reads the schedule
    from the backups on disk, tick() (on every turn of the daemon's loop) starts one when it is
    due, finish() stops one under way at its next block read (a backup lands whole or not at all:
    nothing of it stays) and waits until its thread has let go."""

    def __init__(self, path: Path, backups: RegularBackups | None) -> None:
        self.path = path
        self.backups = backups or RegularBackups(Schedule(1.0, 1))
        self.timer: BackupTimer | None = None
        self.task: asyncio.Task[None] | None = None
        self.stopping = threading.Event()

    @classmethod
    async def started(cls, path: Path, backups: RegularBackups | None) -> Running:
        running = cls(path, backups)
        if backups is not None:
            await running._start()
        return running

    async def _start(self) -> None:
        folder, library_id = await asyncio.to_thread(self._where)
        self.timer = BackupTimer(self.backups.schedule, await asyncio.to_thread(backups_on_disk, folder, library_id))
        due = self.timer.due_at
        when = "now" if due <= time.time() else time.strftime("%Y-%m-%d %H:%M", time.localtime(due))
        log.info(
            "Regular backups every %s into %s, keeping %d; the next is due %s.",
            describe(self.backups.schedule.every),
            folder,
            self.backups.schedule.keep,
            when,
        )

    def tick(self) -> None:
        if self.timer is not None and self.timer.due(time.time()):
            self.timer.started()
            self.task = asyncio.get_running_loop().create_task(self._back_up(self.timer))

    async def finish(self) -> None:
        if self.task is not None and not self.task.done():
            self.stopping.set()
            await asyncio.shield(self.task)

    def _where(self) -> tuple[Path, str]:
        with Library.open(self.path) as library:
            return backup_folder(library, self.backups.folder), library.library_id

    async def _back_up(self, timer: BackupTimer) -> None:
        """One regular backup; a failure (a full disk) is one sentence in the log, and the next
        try comes later."""
        try:
            made = await asyncio.to_thread(
                _apart, self.path, self.backups.folder, self.backups.schedule.keep, self._go_on
            )
        except Stopped:
            log.info("The regular backup under way stopped with the daemon; nothing of it was kept.")
            return
        except Exception as exc:  # the daemon goes on whatever happened to the backup
            timer.failed(time.time())
            reason = exc.message if isinstance(exc, P2PSyncError) else str(exc)
            log.warning(
                "The regular backup was not made (the library and the older backups are untouched; next try in %s): %s",
                describe(min(self.backups.schedule.every, RETRY_SECONDS)),
                reason,
            )
            return
        timer.landed(datetime.fromisoformat(str(made.manifest["created"])).timestamp())
        log.info("%s", made.sentence())

    def _go_on(self, _bytes: int) -> None:
        """The backup's progress, per block read: it stops there once the daemon stops."""
        if self.stopping.is_set():
            raise Stopped


def _apart(path: Path, folder: Path | None, keep: int, progress: Callable[[int], None]) -> Scheduled:
    with Library.open(path) as library:
        return scheduled_backup(library, backup_folder(library, folder), keep, progress)
