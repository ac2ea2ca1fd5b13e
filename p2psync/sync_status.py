"""What sync has done, from this machine's records only (no network): the one function behind
`p2psync status` and the web app's Sync Status page, so the two never tell different stories.

`sync_status(library)` gathers, in one read: each other member with what this machine remembers
of it (store/peers.py PeerStatus), the relay link as recorded (relay/state.py), the local changes
not yet sent, the conflict count, attachments that should be here and are not with the reason a
sync last gave (store/transfers.py), the recent problems with what peers sent, and the last
backup (store/backup.py). Light on
purpose: `status` must start fast, so nothing here imports aiohttp, zeroconf or the relay client.

What a running daemon is doing right now is not in the database: its round's progress (devices
tried, change sets in and out, attachment bytes) lives in its memory. The daemon's
`ProgressRecorder` writes it to PROGRESS_FILE in the library folder as it goes (a whole file each
time, at most every PROGRESS_EVERY seconds, renamed into place), and `read_progress` gives it to
`status --watch`, as long as the daemon that wrote it lives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2psync.relay import state as relay_link
from p2psync.store import transfers
from p2psync.store.backup import LastBackup, last_backup
from p2psync.store.library import Library
from p2psync.store.peers import PeerStatus, peer_status
from p2psync.store.sync import recent_problems, unsealed_count

MISSING_SHOWN = 20  # attachments listed in words; `status --json` lists them all


@dataclass(frozen=True)
class RelayStatus:
    """The relay account this library is linked to, as last recorded here; times ISO 8601 text."""

    relay: str
    email: str | None
    account: str | None
    logged_in: bool
    cursor: int
    last_sync: str | None
    moved: dict[str, int] | None  # what the last sync moved: received, entries, sent, files_in, chunks_out
    last_error: str | None
    last_error_at: str | None
    account_device: str | None  # the account's own key among the members (shown as the relay, not a peer)

    def moved_count(self, key: str) -> int:
        return int((self.moved or {}).get(key, 0))


@dataclass(frozen=True)
class MissingAttachment:
    """An attachment version this machine should hold and does not, and why (in words: detail)."""

    ref: str
    name: str
    sha256: str
    size: int
    reason: str
    detail: str
    since: int | None
    partial_bytes: int


@dataclass(frozen=True)
class Problem:
    """Something a peer (or the relay) sent that was refused, in words."""

    peer: str
    at: int
    reason: str
    message: str


@dataclass(frozen=True)
class SyncStatus:
    device_id: str
    peers: tuple[PeerStatus, ...]
    pending_local_changes: int
    conflicts: int
    search_backlog: int
    problems: tuple[Problem, ...]
    missing_attachments: tuple[MissingAttachment, ...]
    relay: RelayStatus | None
    last_backup: LastBackup | None = None  # the last backup this device made of the library

    @property
    def devices(self) -> tuple[PeerStatus, ...]:
        """The peers shown as devices: the account's key is the relay's line, not a device's."""
        account = self.relay.account_device if self.relay else None
        return tuple(p for p in self.peers if p.device_id != account)

    def as_dict(self) -> dict[str, Any]:
        """The document `status --json` prints (its keys and their order are the contract)."""
        return {
            "device_id": self.device_id,
            "peers": [p.as_dict() for p in self.peers],
            "pending_local_changes": self.pending_local_changes,
            "conflicts": self.conflicts,
            "search_backlog": self.search_backlog,
            "problems": [dataclasses.asdict(p) for p in self.problems],
            "missing_attachments": [dataclasses.asdict(m) for m in self.missing_attachments],
            "relay": dataclasses.asdict(self.relay) if self.relay else None,
            "last_backup": dataclasses.asdict(self.last_backup) if self.last_backup else None,
        }


def sync_status(library: Library, problems: int = 5) -> SyncStatus:
    """Everything `status` shows, read from this machine's records."""
    relay = relay_link.summary(library)
    return SyncStatus(
        device_id=library.device_id,
        peers=tuple(peer_status(library)),
        pending_local_changes=unsealed_count(library),
        conflicts=library.conflicts.count(),  # (not info(): its other counts read every reference's index row)
        search_backlog=library.search_backlog(),
        problems=tuple(Problem(**p) for p in recent_problems(library, limit=problems)),
        missing_attachments=tuple(MissingAttachment(**m) for m in transfers.missing(library)),
        relay=RelayStatus(**relay) if relay else None,
        last_backup=last_backup(library),
    )


PROGRESS_FILE = "sync-progress.json"
PROGRESS_EVERY = 0.25  # seconds between two writes of the file while bytes flow (a watch needs no more)


@dataclass
class SyncProgress:
    """A daemon's current (or last) round: `running` while it lasts; times in ms since the epoch."""

    pid: int
    running: bool = False
    started: int | None = None
    ended: int | None = None
    peers_planned: int = 0
    peers_done: int = 0
    changesets_in: int = 0
    changesets_out: int = 0
    files_total: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    rounds: int = 0  # rounds ended since the daemon started

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_progress(folder: Path) -> SyncProgress | None:
    """The progress the library's daemon last wrote, or None if no daemon of it runs."""
    try:
        data = json.loads((Path(folder) / PROGRESS_FILE).read_text())
        progress = SyncProgress(**data)
        os.kill(progress.pid, 0)  # (a daemon that was killed left its file behind)
    except (OSError, ValueError, TypeError):
        return None
    return progress


class ProgressRecorder:
    """The daemon's side: the node tells it each step of a round, it keeps the file current."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / PROGRESS_FILE
        self.now = SyncProgress(pid=os.getpid())
        self._written = 0.0
        self.write()

    def write(self, force: bool = True) -> None:
        if not force and time.monotonic() - self._written < PROGRESS_EVERY:
            return
        self._written = time.monotonic()
        temporary = self.path.with_name(f".{PROGRESS_FILE}.{os.getpid()}")
        with contextlib.suppress(OSError):  # only a view: a full disk must not stop the daemon
            temporary.write_text(json.dumps(self.now.as_dict()))
            os.replace(temporary, self.path)

    def round_started(self) -> None:
        rounds = self.now.rounds
        self.now = SyncProgress(pid=os.getpid(), running=True, started=int(time.time() * 1000), rounds=rounds)
        self.write()

    def planned(self, peers: int) -> None:
        self.now.peers_planned = peers
        self.write()

    def peer_done(self, received: int, sent: int) -> None:
        self.now.peers_done += 1
        self.now.changesets_in += received
        self.now.changesets_out += sent
        self.write()

    def plan(self, total_bytes: int, files: int) -> None:
        self.now.bytes_total, self.now.files_total = total_bytes, files
        self.write()

    def advance(self, count: int) -> None:
        self.now.bytes_done += count
        self.write(force=False)

    def round_ended(self) -> None:
        self.now.running = False
        self.now.ended = int(time.time() * 1000)
        self.now.rounds += 1
        self.write()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
