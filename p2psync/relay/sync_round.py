"""One sync with the account this library is linked to (protocol/relay.md), in order.

`sync_with_relay` opens the client; `sync_or_raise` records the outcome for `status`. The round
(`_sync`): check the account still holds this library; notice attachment edits; take in new
library-key epochs, carry the library's removals to the relay and change the key if a removed
device may hold it (relay/keys.py); seal and push this device's own change sets the relay's heads
lack, pull after the cursor (relay/changes.py; a removal pulled is carried to the relay before
anything more is pushed), report change sets the relay lists but withholds, join the library as a
member once the account's membership has arrived, write back content set aside by a merge, then
move attachment chunks both ways (relay/attachments.py).
"""

from __future__ import annotations

from p2psync.engine import clock
from p2psync.engine.canonical import dumps
from p2psync.errors import DeviceRemoved, P2PSyncError, RelayBoundElsewhere, RelayError, RelayNotLinked
from p2psync.relay import attachments, changes, crypto, keys
from p2psync.relay.changes import CHECK_FAILED
from p2psync.relay.client import RelayClient
from p2psync.relay.library_calls import LibraryCalls
from p2psync.relay.report import RelaySyncReport
from p2psync.relay.state import logged_in, read_link, record_error
from p2psync.store import rebase, relay_state
from p2psync.store.library import Library, device_add_op, device_name
from p2psync.store.sync import seal, version_vector


async def sync_with_relay(lib: LibraryCalls) -> RelaySyncReport:
    """One sync with the account this library is linked to. Errors that stop the sync (the relay
    unreachable, the login refused, the account holding another library) are recorded for
    `status` and raised; errors that stop only part of it (the storage limit, items that fail
    their check) are recorded and listed in the report, and the rest of the sync goes on."""
    link = await lib.call(logged_in)
    async with RelayClient(link.url or "", link.token) as client:
        ring = await lib.call(keys.read_ring)
        assert ring is not None
        return await sync_or_raise(lib, client, ring)


async def sync_or_report(lib: LibraryCalls, client: RelayClient, ring: keys.Ring) -> RelaySyncReport:
    """The first sync after a login: an error is reported, not raised (the login itself worked)."""
    try:
        return await sync_or_raise(lib, client, ring)
    except P2PSyncError as exc:
        report = RelaySyncReport(relay=client.url)
        report.errors.append(exc.message)
        return report


async def sync_or_raise(lib: LibraryCalls, client: RelayClient, ring: keys.Ring) -> RelaySyncReport:
    report = RelaySyncReport(relay=client.url, account=(await lib.call(read_link)).account)
    try:
        await _sync(lib, client, ring, report)
    except P2PSyncError as exc:
        await lib.call(record_error, exc.message)
        if isinstance(exc, DeviceRemoved):
            await lib.call(relay_state.record_problem_once, exc.reason, exc.message)
        raise
    now = clock.now_ms()
    moved = {
        "relay_last_sync": now,
        "relay_last_moved": dumps(report.moved()),
        "relay_last_error": report.error,
        "relay_last_error_at": now if report.error else None,
    }
    await lib.call(relay_state.write_rows, moved)
    return report


async def _sync(lib: LibraryCalls, client: RelayClient, ring: keys.Ring, report: RelaySyncReport) -> None:
    await lib.call(keys.check_not_removed)
    account = await client.account()
    report.usage = {"used_bytes": account.used_bytes, "quota_bytes": account.quota_bytes}
    if account.library_id is None:
        await lib.call(relay_state.write_rows, {"relay_cursor": None})
        raise RelayNotLinked(
            "The account on the relay holds no library now (it was purged); log in again to bind this library "
            "to it ('p2psync account login')."
        )
    if account.library_id != await lib.call(_library_id):
        raise RelayBoundElsewhere(
            "The account now holds another library than this one; log in again to merge this library into it "
            "('p2psync account login'), or break the link with 'p2psync account reset'.",
            account.library_id,
        )
    await lib.call(relay_state.note_chunk_count, account.chunks)  # fewer than before (a purge): ask again
    # Before anything goes up: newer keys taken in, the library's removals carried to the relay, and
    # a new key put in force if a removed device may hold the one in force (relay/keys.py).
    email = (await lib.call(read_link)).email or ""
    prepared = await keys.prepare(lib, client, ring, email, tied=account.device is not None)
    if prepared.needed:  # pull what the others stored first, then change the key
        await changes.pull(lib, client, ring, (await lib.call(read_link)).cursor, report)
        prepared = await keys.enforce(lib, client, ring, email)
    relay_revoked = prepared.relay_revoked
    removed = await lib.call(keys.removed)
    await lib.call(seal)  # (files edited in place are recorded first: store/sync.py)
    heads, last_num = await client.state()
    quota = await changes.push(lib, client, ring, heads, report)
    cursor = (await lib.call(read_link)).cursor
    if last_num < cursor:  # the relay's numbering started again (its store was replaced)
        await lib.call(relay_state.write_rows, {"relay_cursor": None})
        cursor = 0
    await changes.pull(lib, client, ring, cursor, report)
    if await lib.call(keys.removed) != removed:  # the pull brought a removal: carry it to the relay before pushing
        relay_revoked = (await keys.enforce(lib, client, ring, email)).relay_revoked
    await lib.call(_report_contested, ring, relay_revoked)
    lacking = await lib.call(_uncovered, heads)
    if lacking and _clean(report) and cursor > 0:
        # The relay's numbering started again and grew past the cursor: pull it all once.
        cursor = await changes.pull(lib, client, ring, 0, report, save=False)
        await lib.call(relay_state.write_rows, {"relay_cursor": cursor})
        lacking = await lib.call(_uncovered, heads)
    if lacking and _clean(report):
        device, last = next(iter(lacking.items()))
        message = (
            f"{CHECK_FAILED}: it lists change sets of {device[:7]} up to {last} but did not send them; "
            "sync again later, or tell the relay's operator."
        )
        await lib.call(relay_state.record_problem, "relay_withheld", message)
        report.errors.append(message)
    if await lib.call(ensure_member, ring.current):
        report.merge = await lib.call(rebase.finish_merge)
    if not quota and await lib.call(seal) > 0:
        heads, _ = await client.state()
        quota = await changes.push(lib, client, ring, heads, report)
    if await lib.call(rebase.merge_pending):
        return  # attachment files set aside for the merge must not be tidied away before it is written back
    await attachments.fetch_attachments(lib, client, ring, report)
    if not quota:
        await attachments.push_chunks(lib, client, ring, report)


def _library_id(library: Library) -> str:
    return library.library_id


def _report_contested(library: Library, ring: keys.Ring, relay_revoked: frozenset[str]) -> None:
    """Record the devices the relay revoked that this library holds as members (keys.contested)."""
    for device in keys.contested(library, ring, relay_revoked):
        relay_state.record_problem_once(
            library,
            keys.PROBLEM_REASON,
            f"The relay cut off device {device[:7]} at another device's word, but this library has not removed "
            "it; check 'p2psync peers', remove any device you do not trust, and change the account's password.",
        )


def _clean(report: RelaySyncReport) -> bool:
    """Nothing in this sync explains a change set missing: none refused, rejected or waiting."""
    return not report.refused and not report.received.rejected and not report.received.waiting


def _uncovered(library: Library, heads: dict[str, int]) -> dict[str, int]:
    vv = version_vector(library)
    return {d: s for d, s in heads.items() if vv.get(d, 0) < s}


def ensure_member(library: Library, key: bytes) -> bool:
    """This device introduces itself with the account signing key once the account's membership
    has arrived, as the first entry it writes in this library. Returns whether it is a member."""
    if relay_state.is_member(library, library.device_id):
        return True
    account = crypto.account_identity(key)
    if not relay_state.is_member(library, account.device_id):
        return False  # the account's library has not arrived yet
    with library.writing() as writer:
        if relay_state.is_member(library, library.device_id):
            return True
        if writer.seq > 0:
            raise RelayError(
                "This device wrote changes before it had joined the account's library, so the other devices "
                "would refuse them; back up, run 'p2psync account reset', and log in again."
            )
        writer.log(device_add_op(library.identity(), device_name(), account, library.library_id))
    return True
