"""What a round of sync tells as it goes (Node.sync_once's on_step), and what a waiting one-shot
sync hears of members that synced with it (Node.on_arrival): small values the faces read (the web
app's "Sync now", the daemon's progress file for `status --watch`, `sync --wait`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2psync.errors import NetworkError, P2PSyncError
from p2psync.net.addresses import Address
from p2psync.net.client import PeerSync
from p2psync.sync_status import ProgressRecorder

SyncResult = PeerSync | NetworkError


# What a round has done so far, told as it goes (sync_once's on_step): for a face that shows
# progress, the web app's "Sync now". Each is said once, in this order.
@dataclass(frozen=True)
class PeersPlanned:
    """The addresses the round will try, in order (none: no member to reach on the LAN)."""

    targets: tuple[Address, ...]


@dataclass(frozen=True)
class PeerDone:
    """One address tried: what came of it (the same result the round returns)."""

    address: Address
    result: SyncResult


@dataclass(frozen=True)
class RelayDone:
    """The relay's part is over: its report, or the error that stopped it (None, None: not linked)."""

    report: Any
    error: P2PSyncError | None


RoundStep = PeersPlanned | PeerDone | RelayDone
StepCallback = Callable[[RoundStep], None]


@dataclass(frozen=True)
class Arrival:
    """A member synced with this device's server (its push ended well): who, from where, and how
    many of the change sets it pushed were new here. A waiting one-shot sync (meeting.py) counts
    the member as met."""

    device: str
    address: str
    applied: int

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "address": self.address, "applied": self.applied}


def progress_steps(progress: ProgressRecorder) -> StepCallback:
    """A round's steps, as the progress file counts them."""

    def step(event: RoundStep) -> None:
        if isinstance(event, PeersPlanned):
            progress.planned(len(event.targets))
        elif isinstance(event, PeerDone) and isinstance(event.result, PeerSync):
            progress.peer_done(event.result.received.applied, event.result.sent_applied)

    return step
