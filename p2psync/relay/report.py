"""What one sync with the relay did, as `account login`, `sync` and the daemon print it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from p2psync.store.rebase import MergeReport
from p2psync.store.sync import ReceiveReport
from p2psync.store.transfers import MissingFile


@dataclass
class RelaySyncReport:
    relay: str
    account: str | None = None
    pushed: int = 0  # change sets the relay stored from us
    pushed_duplicates: int = 0
    pulled: int = 0  # items the relay listed
    received: ReceiveReport = field(default_factory=ReceiveReport)
    refused: list[str] = field(default_factory=list)  # items that failed the relay check
    chunks_pushed: int = 0
    chunk_bytes_pushed: int = 0
    files_wanted: int = 0
    files: int = 0  # attachment versions completed from the relay
    bytes_fetched: int = 0
    bytes_local: int = 0
    bytes_resumed: int = 0
    chunks_refused: int = 0
    missing: list[MissingFile] = field(default_factory=list)
    merge: MergeReport | None = None
    usage: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return self.errors[0] if self.errors else None

    def moved(self) -> dict[str, int]:
        return {
            "received": self.received.applied,
            "entries": self.received.entries,
            "sent": self.pushed,
            "files_in": self.files,
            "chunks_out": self.chunks_pushed,
        }

    def sentence(self) -> str:
        """What moved, in words, as `account login` prints it (the daemon's log line)."""
        text = f"{self.received.applied} change sets in ({self.received.entries} changes), {self.pushed} out"
        if self.files or self.chunks_pushed:
            text += f"; attachments: {self.files} files in, {self.chunks_pushed} chunks out"
        if self.refused:
            text += f"; {len(self.refused)} refused, see 'p2psync status'"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "relay": self.relay,
            "account": self.account,
            "sent": {"stored": self.pushed, "duplicates": self.pushed_duplicates},
            "received": {"listed": self.pulled, **self.received.as_dict()},
            "refused": self.refused,
            "attachments": {
                "wanted_files": self.files_wanted,
                "files": self.files,
                "bytes_fetched": self.bytes_fetched,
                "bytes_local": self.bytes_local,
                "bytes_resumed": self.bytes_resumed,
                "chunks_refused": self.chunks_refused,
                "chunks_sent": self.chunks_pushed,
                "bytes_sent": self.chunk_bytes_pushed,
                "missing": [m.as_dict() for m in self.missing],
            },
            **({"merge": self.merge.as_dict()} if self.merge else {}),
            "usage": self.usage,
            "error": self.error,
            "errors": self.errors,
        }
