"""The daemon's regular backups (`daemon --backup-every 7d --keep 5`): when the next one is due and
which old ones go. Sans-IO: every time is given by the caller (seconds since the epoch, from an
injected clock), and the backups on disk are listed by the caller (store/backup.py); nothing here
reads a clock or a file, so the rules are tested with made-up times.

The schedule follows the backups on disk, not the daemon: the next one is due `every` after the
newest backup of this library in the backup folder, so a daemon restarted every day still backs up
once a week, and one started after a month away backs up at once. A failed backup (a full disk) is
tried again after RETRY_SECONDS (or `every`, if that is sooner); the library and the older backups
stay as they were, since a backup lands whole or not at all and pruning follows only a backup that
landed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from p2psync.errors import InvalidValue

DEFAULT_EVERY = "7d"
DEFAULT_KEEP = 5
RETRY_SECONDS = 3600.0  # after a failed backup
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_every(text: str) -> float | None:
    """'7d' -> seconds; '0' -> None (no regular backups). Units s, m, h, d, w (none: seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise InvalidValue(f"{text!r} is not a duration; write e.g. 12h, 1d or 7d (0 for no regular backups).")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return seconds or None


def describe(seconds: float) -> str:
    """7 days, 12 hours, 30 minutes, 45 seconds: the largest unit that divides it, else seconds."""
    for name, size in (("week", 7 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {name}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


@dataclass(frozen=True)
class OnDisk:
    """One backup of this library found in the backup folder."""

    path: str
    created: float  # seconds since the epoch
    scheduled: bool  # made by the schedule (only these are ever pruned)


def beyond(on_disk: Sequence[OnDisk], keep: int) -> list[OnDisk]:
    """The regular backups beyond the newest `keep`, oldest first: those pruning removes. Never
    one made otherwise (before a merge, by hand); the caller lists only this library's backups."""
    scheduled = sorted((b for b in on_disk if b.scheduled), key=lambda b: (b.created, b.path), reverse=True)
    return sorted(scheduled[keep:], key=lambda b: (b.created, b.path))


@dataclass(frozen=True)
class Schedule:
    every: float  # seconds between backups
    keep: int  # regular backups kept; the oldest beyond go

    def __post_init__(self) -> None:
        if self.every <= 0 or self.keep < 1:
            raise InvalidValue("A backup schedule needs a positive interval and keeps at least one backup.")

    def next_due(self, on_disk: Sequence[OnDisk]) -> float:
        """When the next backup is due: `every` after the newest on disk (any of this library's:
        one made before a merge counts as fresh), or at once (0.0) when there is none."""
        newest = max((b.created for b in on_disk), default=None)
        return 0.0 if newest is None else newest + self.every

    def retry_at(self, failed_at: float) -> float:
        return failed_at + min(self.every, RETRY_SECONDS)


class BackupTimer:
    """The daemon's state between two looks at the clock: due() says whether to start a backup
    now; landed() and failed() tell it how the last one ended."""

    def __init__(self, schedule: Schedule, on_disk: Sequence[OnDisk]) -> None:
        self.schedule = schedule
        self.due_at = schedule.next_due(on_disk)
        self.running = False

    def due(self, now: float) -> bool:
        return not self.running and now >= self.due_at

    def started(self) -> None:
        self.running = True

    def landed(self, created: float) -> None:
        """A backup made at `created` landed: the next is due `every` after it."""
        self.running = False
        self.due_at = created + self.schedule.every

    def failed(self, now: float) -> None:
        self.running = False
        self.due_at = self.schedule.retry_at(now)
