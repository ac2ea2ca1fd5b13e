"""A one-shot sync that waits for the others (`p2psync sync --wait 30s`): two people who run
`p2psync sync` by hand, a few seconds apart and with no daemon on either machine, meet.

Before, a one-shot sync only dialled out, so whoever ran it first found nobody listening and gave
up. Now, while it runs and for a bounded wait, it also serves (the daemon's peer server, mutual
TLS, and its mDNS announcement: the caller starts both) and moves like this:

1. one ordinary round (Node.sync_once: the addresses given, the LAN, those remembered; the relay);
   every member reached is met;
2. until every other member of the library (or the one --peer names) is met, or the wait is over:
   a member whose sync with our server ended (its push, the last step: Node.on_arrival) is met,
   and is dialled back at once (its sync told us where it listens) to fetch the attachments it
   holds; the members not met yet are dialled again every RETRY_SECONDS, at the addresses given,
   where mDNS sees them and where they were last reached;
3. once all are met, it serves on for LINGER_SECONDS after the last request ended, so that a
   member it reached can dial back and fetch from it in turn, then ends.

Each member ends up synced once in both directions whoever started first; the wait bounds it all.
What came of each address is its best result (a success after failed tries is a success).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import fields

from p2psync.errors import NetworkError
from p2psync.net.addresses import Address, merge_targets
from p2psync.net.chunks import FetchReport
from p2psync.net.client import PeerSync
from p2psync.node import Arrival, Node, SyncResult, SyncRound, other_members

WAIT_SECONDS = 30.0  # `sync --wait`'s default: long enough to walk to the other machine and type
RETRY_SECONDS = 1.0  # how often the members not met yet are dialled again
LINGER_SECONDS = 1.0  # how long to serve on, once all are met, after the last request ended
TICK = 0.05


class _Outcomes:
    """The best result per target: keyed by device once known, else by the address dialled."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[Address, SyncResult]] = {}

    def add(self, address: Address, result: SyncResult) -> None:
        where = f"{address.host}:{address.port}"
        if isinstance(result, PeerSync) and result.device:
            self.items.pop(where, None)  # an address that failed before and now led to this member
            self.items.pop(address.device or "", None)
            self.items[result.device] = (address, result)
            return
        key = address.device or where
        if key not in self.items or isinstance(self.items[key][1], NetworkError):
            self.items[key] = (address, result)


def _merge(total: FetchReport, report: FetchReport, reached: bool) -> None:
    """Add one fetch's counts to the total; what is still missing is the latest word on it (from a
    fetch that reached a member: one that reached none knows less)."""
    for item in fields(FetchReport):
        mine, theirs = getattr(total, item.name), getattr(report, item.name)
        if isinstance(mine, int):
            setattr(total, item.name, mine + theirs)
        elif isinstance(mine, dict):
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value if isinstance(value, int) else value
    if reached or not total.missing:
        total.missing = list(report.missing)
    total.disk_full = report.disk_full or total.disk_full


async def sync_and_wait(
    node: Node,
    given: list[Address],
    found: list[Address],
    wait: float,
    device: str | None = None,
    relay: bool = True,
    on_plan: Callable[[int, int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> SyncRound:
    """One round, then wait up to `wait` seconds (from the start) for the members not met yet, as
    the module's docstring says; the node must be serving. Returns the round with every target's
    best result, the attachments fetched all along, and the members that synced with us."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    arrivals: asyncio.Queue[Arrival] = asyncio.Queue()
    node.on_arrival = arrivals.put_nowait
    try:
        members = await node.worker.call(other_members)
        pending = {m for m in members if device is None or m == device}
        first = await node.sync_once(
            given, found, named=given, device=device, relay=relay, on_plan=on_plan, on_bytes=on_bytes
        )
        outcomes = _Outcomes()
        total = FetchReport()
        _merge(total, first.attachments, first.lan_ok)

        def note(targets: list[Address], results: list[SyncResult]) -> bool:
            for target, result in zip(targets, results, strict=True):
                outcomes.add(target, result)
                if isinstance(result, PeerSync) and result.device:
                    pending.discard(result.device)
            return any(isinstance(r, PeerSync) for r in results)

        async def attempt(targets: list[Address]) -> None:
            if targets:
                results = await node.sync(targets)
                reached = note(targets, results)
                _merge(total, await node.fetch(results, on_plan, on_bytes), reached)

        note(first.targets, first.peers)
        if not members:  # a library of one device: nobody to wait for
            deadline = loop.time()
        met_at = loop.time()
        next_try = loop.time() + RETRY_SECONDS
        while loop.time() < deadline:
            came = _drain(arrivals, first.arrivals)
            back = [a.device for a in came if a.device in pending]
            pending.difference_update(back)
            if back:  # dial back: its attachments, and a sync that confirms where it listens
                known = await node.known_addresses()
                await attempt([a for a in known if a.device in back])
                met_at = loop.time()
            elif pending and loop.time() >= next_try:
                await attempt(await _targets(node, given, outcomes, pending))
                next_try = loop.time() + RETRY_SECONDS
                met_at = loop.time()
            elif not pending and not node.serving and loop.time() >= max(met_at, node.last_served) + LINGER_SECONDS:
                break
            else:
                await _next(arrivals, min(deadline, next_try if pending else loop.time() + TICK) - loop.time())
        first.arrivals.extend(_drain(arrivals, []))
        first.targets = [address for address, _ in outcomes.items.values()]
        first.peers = [result for _, result in outcomes.items.values()]
        places = {(a.host, a.port) for a in given}
        first.named_failed = [
            str(address)
            for address, result in outcomes.items.values()
            if isinstance(result, NetworkError) and (address.host, address.port) in places
        ]
        first.attachments = total
        return first
    finally:
        node.on_arrival = None


def _drain(queue: asyncio.Queue[Arrival], into: list[Arrival]) -> list[Arrival]:
    came = []
    while not queue.empty():
        came.append(queue.get_nowait())
    into.extend(came)
    return came


async def _next(queue: asyncio.Queue[Arrival], seconds: float) -> None:
    """Wait for an arrival (left in the queue) or `seconds`, whichever comes first."""
    if seconds <= 0:
        return
    getter = asyncio.ensure_future(queue.get())
    done, _ = await asyncio.wait([getter], timeout=seconds)
    if done:
        queue.put_nowait(getter.result())  # (back in line: the loop reads them all at once)
    else:
        getter.cancel()


async def _targets(node: Node, given: list[Address], outcomes: _Outcomes, pending: set[str]) -> list[Address]:
    """Where to dial the members not met yet: the addresses given that have led nowhere yet, then
    where mDNS sees those members now, then where they were last reached."""
    reached = {(a.host, a.port) for a, r in outcomes.items.values() if isinstance(r, PeerSync)}
    open_given = [a for a in given if (a.host, a.port) not in reached and (a.device is None or a.device in pending)]
    lan = [a for a in await node.members_on_lan() if a.device in pending]
    known = [a for a in await node.known_addresses() if a.device in pending]
    return merge_targets(open_given, lan, known)
