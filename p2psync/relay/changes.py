"""Change sets through the relay: push this device's own, pull everyone's after the cursor.

`push` seals and sends in batches what the relay's heads lack (the relay stores whole batches or
nothing; a gap or a key put in force meanwhile is looked at once more). `pull` lists after the
cursor page by page, decrypts and checks each item against its clear headers, applies them
(store/sync.py receive) and advances the cursor only past items applied or already here; items
still waiting for what they depend on are carried to the next page. Pushes and pulls are
idempotent: the relay counts duplicates, and receive() skips change sets it holds, so the LAN and
the relay together never apply a change twice.
"""

from __future__ import annotations

from typing import Any

import orjson

from p2psync.engine import ops
from p2psync.errors import RelayError, RelayQuotaExceeded, RelayTampered
from p2psync.relay import crypto, keys
from p2psync.relay.client import GapError, Item, RelayClient
from p2psync.relay.device_client import KeyEpochMoved
from p2psync.relay.library_calls import LibraryCalls
from p2psync.relay.report import RelaySyncReport
from p2psync.relay.state import PEER
from p2psync.store import relay_state
from p2psync.store.library import Library
from p2psync.store.sync import changesets_since, receive, version_vector

CHECK_FAILED = "The relay sent a change set that fails its check"
PUSH_BATCH_BYTES = 6 * 1024 * 1024  # raw blob bytes per POST /changesets (base64 stays under 16 MiB)
PUSH_BATCH_ITEMS = 256
READ_BATCH = 8  # change sets read from the library at a time while pushing
CARRY_LIMIT = 32 * 1024 * 1024  # wires kept for the next page while they wait for what they depend on


def _header(wire: bytes) -> tuple[str, int, int]:
    """Author, first and last of a change set this library assembled (canonical bytes)."""
    start = len(b'{"body":{"author":"')
    device = wire[start : wire.index(b'"', start)].decode("ascii")
    at = wire.rindex(b'"seq":[')
    first, last = wire[at + 7 : wire.index(b"]", at)].split(b",")
    return device, int(first), int(last)


async def push(
    lib: LibraryCalls, client: RelayClient, ring: keys.Ring, heads: dict[str, int], report: RelaySyncReport
) -> bool:
    """Push what the relay's heads lack; returns whether the storage limit stopped it."""
    for attempt in range(2):
        try:
            await _push_once(lib, client, ring, heads, report)
            return False
        except RelayQuotaExceeded as exc:
            report.errors.append(exc.message)
            return True
        except (GapError, KeyEpochMoved) as exc:
            if attempt:
                raise RelayError(
                    "The relay and this device disagree about which change sets it holds; sync again, and if "
                    "this repeats tell the relay's operator."
                ) from None
            if isinstance(exc, KeyEpochMoved):  # another device put a new key in force meanwhile
                await keys.refresh(lib, client, ring)
            heads, _ = await client.state()
    return False


async def _push_once(
    lib: LibraryCalls, client: RelayClient, ring: keys.Ring, heads: dict[str, int], report: RelaySyncReport
) -> None:
    """Push this device's own change sets that the relay lacks: the relay stores a device's change
    sets from that device only (relay.md §5.2), so those of others go up from their authors."""
    library_id, device_id, vector = await lib.call(_ids_and_vector)
    batch: list[dict[str, Any]] = []
    size = 0

    async def send() -> None:
        nonlocal batch, size
        stored, duplicates = await client.push(batch)
        report.pushed += stored
        report.pushed_duplicates += duplicates
        batch, size = [], 0

    theirs = dict.fromkeys(vector, ops.MAX_INT)
    theirs[device_id] = heads.get(device_id, 0)
    wires = await lib.call(changesets_since, theirs)
    while read := await lib.next_batch(wires, READ_BATCH):
        for wire in read:
            device, first, last = _header(wire)
            blob = crypto.encrypt_changeset(ring.current, library_id, device, first, last, wire)
            if batch and (size + len(blob) > PUSH_BATCH_BYTES or len(batch) >= PUSH_BATCH_ITEMS):
                await send()
            batch.append({"device": device, "first": first, "last": last, "key": ring.epoch, "blob": blob})
            size += len(blob)
    if batch:
        await send()


async def pull(
    lib: LibraryCalls, client: RelayClient, ring: keys.Ring, cursor: int, report: RelaySyncReport, save: bool = True
) -> int:
    """Pull everything after `cursor`; returns (and, with save, records as it goes) the new
    cursor: below the first item not applied (refused, or still waiting), else the last listed."""
    library_id = await lib.call(_library_id)
    read_from = cursor
    outstanding: set[int] = set()  # nums of items not applied (yet): the cursor stays below them
    listed: dict[str, int] = {}  # device -> last of its latest item in this pull
    listed_num: dict[str, int] = {}  # device -> num of that item
    carried: list[tuple[Item, bytes]] = []  # waiting for what they depend on, from earlier pages
    safe = cursor
    more = True
    while more:
        items, more = await client.changesets(read_from)
        if not items:
            break
        report.pulled += len(items)
        batch = list(carried)
        for item in items:
            read_from = item.num
            outstanding.add(item.num)
            previous = listed.get(item.device)
            if previous is not None and item.first != previous + 1:
                # One device's change sets are stored in order, each once: anything else is the relay's doing.
                twice = item.last <= previous
                order = "twice" if twice else "out of order"
                await _refuse(
                    lib, report, f"it listed the change set {item.device[:7]} {item.first}-{item.last} {order}"
                )
                if not twice:
                    # What is missing was stored after that device's previous item: keep the
                    # cursor there, so that it is listed again once the relay has it back.
                    outstanding.add(listed_num[item.device] + 1)
                    continue  # never applied out of order: it stays outstanding
            else:
                listed[item.device] = item.last
                listed_num[item.device] = item.num
            if item.key > ring.epoch:  # a key put in force since this sync began
                await keys.refresh(lib, client, ring)
            key = ring.get(item.key)
            try:
                if key is None:
                    raise RelayTampered(
                        f"the change set listed as {item.device[:7]} {item.first}-{item.last} needs a library key "
                        f"(epoch {item.key}) the relay does not hold"
                    )
                wire = crypto.decrypt_changeset(key, library_id, item.device, item.first, item.last, item.blob)
                _check_header(wire, item)
            except RelayTampered as exc:
                await _refuse(lib, report, exc.message)
                continue
            batch.append((item, wire))
        if batch:
            received = await lib.call(receive, [wire for _, wire in batch], PEER, False)
            report.received.add(received)
        vv = await lib.call(version_vector)
        carried, carried_bytes = [], 0
        for item, wire in batch:
            if vv.get(item.device, 0) >= item.last:  # applied, or already here
                outstanding.discard(item.num)
            elif carried_bytes + len(wire) <= CARRY_LIMIT:
                carried.append((item, wire))
                carried_bytes += len(wire)
        safe = min(outstanding) - 1 if outstanding else read_from
        if save and safe > cursor:
            await lib.call(relay_state.advance_cursor, safe)
    report.received.waiting = len(carried)
    return safe


def _check_header(wire: bytes, item: Item) -> None:
    """The clear headers must be what the change set says of itself."""
    try:
        message = orjson.loads(wire)
        body = message["body"]
        author, seq = body["author"], body["seq"]
    except (ValueError, TypeError, KeyError):
        raise RelayTampered(
            f"the change set listed as {item.device[:7]} {item.first}-{item.last} is not a change set"
        ) from None
    if author != item.device or seq != [item.first, item.last]:
        raise RelayTampered(
            f"the change set listed as {item.device[:7]} {item.first}-{item.last} holds another "
            f"({str(author)[:7]} {seq})"
        )


async def _refuse(lib: LibraryCalls, report: RelaySyncReport, detail: str) -> None:
    message = f"{CHECK_FAILED}: {detail}; it was refused."
    await lib.call(relay_state.record_problem, "relay_check", message)
    report.refused.append(message)
    if CHECK_FAILED not in " ".join(report.errors):
        report.errors.append(message)


def _library_id(library: Library) -> str:
    return library.library_id


def _ids_and_vector(library: Library) -> tuple[str, str, dict[str, int]]:
    return library.library_id, library.device_id, version_vector(library)
