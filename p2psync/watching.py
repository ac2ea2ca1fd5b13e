"""The daemon's eyes on the attachment folder: which files the operating system saw touched.

watchfiles (the Rust crate notify underneath: inotify on Linux, FSEvents on macOS,
ReadDirectoryChangesW on Windows) reports what changes under `attachments/`. This keeps only the
attachment files themselves, `attachments/REF/NAME` (p2psync's own work files live in
`attachments/.p2psync/` and are never looked at), folds a burst into one set of files (a PDF
saved in 300 writes is one entry; past MAX_NAMED files it becomes "look at everything", one
stat per file), and wakes the daemon, which hands the set to the scan
(store/library/attachments.py). The scan decides what a touched file now holds: it compares size
and mtime with the library's record first, so a file p2psync itself put in place (a fetched
version landing by rename, recorded in the same transaction) is not taken for an edit, and it
records a version only from a read during which the file stayed the same.

If notifications cannot start (inotify's watch or instance limit reached, a file system without
them) or stop, one line in the log says so and the daemon goes on looking every few seconds
(node.SCAN_SECONDS); with the watcher running it still looks now and then, as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from p2psync.store import folder

if TYPE_CHECKING:
    from p2psync.store.library import Library

log = logging.getLogger("p2psync.watching")

STEP_MS = 50  # a burst of writes is over after this much quiet...
DEBOUNCE_MS = 1000  # ...and a steady stream of writes is handed on at least this often
MAX_NAMED = 512  # more files touched than this at once: look at every file instead (bounded memory)
STOP_SECONDS = 2.0  # the notification thread notices a stop within STEP_MS; this is a backstop

Touched = set[tuple[str, str]] | Literal["all"]


class AttachmentWatcher:
    """Collects the (reference id, file name) pairs touched under a library's attachment folder
    until the daemon takes them; `on_touch` is called (on the event loop) when there are some."""

    def __init__(self, library: Path, on_touch: Callable[[], None]) -> None:
        self.folder = Path(library) / folder.ATTACHMENTS_DIR
        self._prefix = f"{self.folder}{os.sep}"
        self._on_touch = on_touch
        self._pending: set[tuple[str, str]] = set()
        self._everything = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.running = False
        self.batches = 0  # sets of changes received from the notifications (for tests and the log)

    async def start(self) -> bool:
        """Start watching; False (with one line in the log) if notifications are not available."""
        try:
            import watchfiles  # noqa: F401 (imported here: a one-shot command never needs it)
        except ImportError as exc:  # a broken install: the daemon still works, by looking
            log.warning("File notifications are not available (%s); looking for edited attachments by a scan.", exc)
            return False
        self.running = True
        self._task = asyncio.get_running_loop().create_task(self._run())
        # The notifier is made in the task's first step, before it first waits: a failure to
        # start has ended the task by the time these steps are over.
        for _ in range(3):
            await asyncio.sleep(0)
        return self.running

    async def _run(self) -> None:
        from watchfiles import awatch

        try:
            changes_stream = awatch(
                self.folder,
                watch_filter=self._wanted,
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                stop_event=self._stop,
                recursive=True,
                force_polling=False,
            )
            async for changes in changes_stream:
                self.batches += 1
                self._add(path for _change, path in changes)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of the notifier: fall back, and say so once
            if not self._stop.is_set():
                log.warning(
                    "File notifications for %s are not available (%s); looking for edited attachments "
                    "every few seconds instead.",
                    self.folder,
                    _in_words(exc),
                )
        finally:
            self.running = False
            if not self._stop.is_set():
                self._on_touch()  # the daemon notices and looks more often

    def _wanted(self, _change: object, path: str) -> bool:
        """Only attachments/REF/NAME: not the folders, not p2psync's own work files."""
        if not path.startswith(self._prefix):
            return False
        parts = path[len(self._prefix) :].split(os.sep)
        return len(parts) == 2 and not parts[0].startswith(".") and parts[0] != folder.WORK_DIR

    def _add(self, paths: Iterable[str]) -> None:
        for path in paths:
            if self._everything:
                break
            ref_id, _, name = path[len(self._prefix) :].partition(os.sep)
            self._pending.add((ref_id, name))
            if len(self._pending) > MAX_NAMED:
                self._everything = True
                self._pending.clear()
        if self._pending or self._everything:
            self._on_touch()

    def touch(self, files: Iterable[tuple[str, str]]) -> None:
        """Look at these files again (they were still being written when last read)."""
        self._add(f"{self._prefix}{ref_id}{os.sep}{name}" for ref_id, name in files)

    def take(self) -> Touched | None:
        """The files touched since last taken ("all": too many to name), or None."""
        if self._everything:
            self._everything = False
            self._pending.clear()
            return "all"
        if not self._pending:
            return None
        taken, self._pending = self._pending, set()
        return taken

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, STOP_SECONDS)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _in_words(exc: BaseException) -> str:
    """The notifier's error, with what to do where it is inotify's limits (notify reports them as
    'OS file watch limit reached', older kernels' ENOSPC 'No space left on device', or EMFILE)."""
    text = str(exc) or type(exc).__name__
    limits = ("limit", "no space left", "too many open files", "os error 28", "os error 24")
    if any(word in text.lower() for word in limits):
        return f"{text}; raise fs.inotify.max_user_watches or fs.inotify.max_user_instances (sysctl) to get them back"
    return text


@dataclass(frozen=True)
class Edits:
    """What a look at the attachment files found: how many were recorded as new versions, and
    which were still being written (not recorded: looked at again)."""

    modified: int
    unsettled: list[tuple[str, str]]


def scan_edits(library: Library, touched: Touched) -> Edits:
    """Attachment files changed in place since last looked at (those touched, or all), now
    recorded as new versions."""
    changes = library.scan_attachments(files=None if touched == "all" else touched)
    return Edits(
        sum(1 for change in changes if change["change"] == "modified"),
        [(change["ref"], change["name"]) for change in changes if change["change"] == "unsettled"],
    )
