"""A library's link to an online account on a relay (protocol/relay.md section 4), and a sync
through it.

The link lives in the library's local `meta` table (never replicated): relay_url, relay_email,
relay_account, relay_token, relay_key (the library key, base64), relay_cursor (the highest `num`
pulled up to which everything was applied), relay_last_sync, relay_last_moved, relay_last_error
(and _at), relay_chunks (how many chunks the account held at the last sync: fewer now means a
purge), and one relay_pushed:SHA256 row per attachment file whose chunks are all on the relay
(forgotten at each login and purge, so a relay that lost chunks is given them again).
Every write to it is one transaction. `reset` deletes every relay_* row (and the relay's recorded
problems), nothing else.

Logging in (or signing up) binds or joins:
- the account holds no library: it is bound to this one with a new library key, and the account
  signing key becomes a member ("online account"), introduced by this device;
- it holds this library: the library key is unwrapped;
- it holds another library and this one is empty: this library takes that library's id
  (store/rebase.py) and this device introduces itself with the account signing key;
- it holds another library and this one is not empty: after a confirmation with the counts each
  side brings (the other side is pulled into a staging library to count it, then fed from
  there), the same rebase, and the content set aside is merged back once the other has arrived.

A sync (sync_with_relay): notice attachment edits; take in new library-key epochs, carry the
library's removals to the relay and change the key if a removed device may hold it (relay/keys.py,
which keeps the keys of every epoch beside relay_key); seal, push this device's own change sets
the relay's heads lack (in batches; the relay stores whole batches or nothing), pull after the
cursor (a removal pulled is carried to the relay before anything more is pushed), decrypt and
check each item, apply them (store/sync.py receive), advance the cursor only past items applied
or already here, write back content set aside by a merge, then move attachment chunks both ways.
Pushes and pulls are idempotent: the relay counts duplicates, and receive() skips change sets it
holds, so the LAN and the relay together never apply a change twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from p2psync.crypto.identity import DeviceIdentity
from p2psync.engine import clock, ops
from p2psync.engine.canonical import dumps
from p2psync.errors import (
    ConfirmationRequired,
    DeviceRemoved,
    P2PSyncError,
    ProtocolMismatch,
    RelayBoundElsewhere,
    RelayError,
    RelayLinkedElsewhere,
    RelayMergeNeedsConfirmation,
    RelayNotLinked,
    RelayQuotaExceeded,
    RelayTampered,
)
from p2psync.model.chunking import offsets
from p2psync.net.chunks import PartialFile, copy_located, resume_partial, verify_and_write
from p2psync.relay import account_keys, crypto, kdf, keys, strength
from p2psync.relay.client import HAVE_LIMIT, Account, GapError, Item, RelayClient, normalize_url
from p2psync.relay.device_client import KeyEpochMoved
from p2psync.relay.state import LinkState, read_link, summary
from p2psync.relay.state import int_or_zero as _int
from p2psync.store import rebase, transfers
from p2psync.store.db import write_transaction
from p2psync.store.library import Library, device_add_op, device_name
from p2psync.store.rebase import Content, MergeReport
from p2psync.store.sync import ReceiveReport, changesets_since, receive, seal, version_vector

RESET_SUFFIX = "#!resetLocalSync"
RESET_MESSAGE = "Your local sync state has been reset. Please re-enter your e-mail address and sync again."
LINKED_ELSEWHERE = (
    "A sync library can be linked to only one account. "
    "Do not proceed unless you intend to break the link to the original account."
)
CHECK_FAILED = "The relay sent a change set that fails its check"
PEER = "relay"  # how the relay is named in sync_problems
PUSHED_PREFIX = "relay_pushed:"
PUSH_BATCH_BYTES = 6 * 1024 * 1024  # raw blob bytes per POST /changesets (base64 stays under 16 MiB)
PUSH_BATCH_ITEMS = 256
CHUNKS_IN_FLIGHT = 4
CHUNK_BATCH = 64  # chunks fetched before they are verified and written (at most 8 MiB held)
CARRY_LIMIT = 32 * 1024 * 1024  # wires kept for the next page while they wait for what they depend on
STAGING_DIR = ".p2psync-relay-staging"

def _meta(library: Library, key: str) -> str | None:
    row = library.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return str(row[0]) if row else None


def _write(library: Library, values: dict[str, str | int | None]) -> None:
    """Set (or, with None, delete) relay_* rows, in one transaction."""
    with write_transaction(library.db):
        _write_in(library, values)


def _write_in(library: Library, values: dict[str, str | int | None]) -> None:
    for name, value in values.items():
        if value is None:
            library.db.execute("DELETE FROM meta WHERE key = ?", [name])
        else:
            library.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [name, str(value)])


def _advance_cursor(library: Library, cursor: int) -> None:
    """Move the cursor forward only (another process may have pulled further meanwhile)."""
    with write_transaction(library.db):
        row = library.db.execute("SELECT value FROM meta WHERE key = 'relay_cursor'").fetchone()
        if cursor > _int(row[0] if row else None):
            _write_in(library, {"relay_cursor": cursor})


def _forget_pushed(library: Library) -> None:
    library.db.execute("DELETE FROM meta WHERE key >= ? AND key < ?", [PUSHED_PREFIX, PUSHED_PREFIX[:-1] + ";"])


def _record_error(library: Library, message: str) -> None:
    _write(library, {"relay_last_error": message, "relay_last_error_at": clock.now_ms()})


def _problem(library: Library, reason: str, message: str) -> None:
    with write_transaction(library.db):
        library.db.execute(
            "INSERT INTO sync_problems (peer, at, reason, message) VALUES (?, ?, ?, ?)",
            [PEER, clock.now_ms(), reason, message],
        )


def is_linked(library: Library) -> bool:
    return read_link(library).linked


def is_reset_request(email: str) -> bool:
    """Whether the e-mail as typed asks for a reset ("...#!resetLocalSync", case sensitive)."""
    return email.strip().endswith(RESET_SUFFIX)


def reset(library: Library, revoke: bool = True) -> str:
    """Forget the link, the token, the key, the cursor and what was pushed (every relay_* row, and
    the relay's recorded problems); every reference stays. The next login and sync are complete."""
    link = read_link(library)
    if revoke and link.url and link.token:
        asyncio.run(_logout_quietly(link.url, link.token))
    return _reset_local(library)


def _reset_local(library: Library) -> str:
    with write_transaction(library.db):
        library.db.execute("DELETE FROM meta WHERE key >= 'relay_' AND key < 'relay`'")
        library.db.execute("DELETE FROM sync_problems WHERE peer = ?", [PEER])
    return RESET_MESSAGE


async def _logout_quietly(url: str | None, token: str | None) -> None:
    """Revoke a token on the relay if it answers within a few seconds (a reset works offline)."""
    if not url or not token:
        return
    with contextlib.suppress(P2PSyncError, TimeoutError):
        async with RelayClient(url, token, timeout=3.0) as client:
            await client.logout()


# --- questions the caller answers ------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """Something only the user can decide. `error` is what to raise when nobody can be asked."""

    kind: str  # "linked" (break the link to another account) or "merge" (merge two libraries)
    text: str
    error: ConfirmationRequired


Ask = Callable[[Question], bool]


def _confirm(ask: Ask | None, question: Question) -> None:
    if ask is None or not ask(question):
        raise question.error


# --- logging in ----------------------------------------------------------------------------------


@dataclass
class LoginReport:
    relay: str
    email: str
    account: str = ""
    mode: str = ""  # bound | same | joined | merged | reset
    library_id: str = ""
    broke_link: bool = False  # the library was linked to another account, and that link was reset
    ours: dict[str, int] | None = None
    theirs: dict[str, int] | None = None
    sync: RelaySyncReport | None = None
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "relay": self.relay,
            "email": self.email,
            "account": self.account,
            "mode": self.mode,
            "library_id": self.library_id,
            "broke_link": self.broke_link,
            **({"ours": self.ours, "theirs": self.theirs} if self.ours is not None else {}),
            "sync": self.sync.as_dict() if self.sync else None,
            **({"message": self.message} if self.message else {}),
        }


def login(
    library: Library,
    url: str,
    email: str,
    password: str,
    signup: bool = False,
    ask: Ask | None = None,
    backup: Callable[[Library], Any] | None = None,
    run_sync: bool = True,
) -> LoginReport:
    """Log in to (or sign up on) the relay at `url`, bind or join (section 4), then sync once.

    `ask` answers the questions (breaking the link to another account, merging two libraries);
    without it those raise RelayLinkedElsewhere / RelayMergeNeedsConfirmation. `backup` is
    called before a merge changes this library."""
    if is_reset_request(email):
        return LoginReport(relay=url, email=email, mode="reset", message=reset(library))
    url = normalize_url(url)
    address = crypto.check_email(email)
    if signup:
        strength.check_new_password(password, address)  # before anything is sent
    return asyncio.run(_login(library, url, address, password, signup, ask, backup, run_sync))


def signup(
    library: Library,
    url: str,
    email: str,
    password: str,
    ask: Ask | None = None,
    backup: Callable[[Library], Any] | None = None,
    run_sync: bool = True,
) -> LoginReport:
    return login(library, url, email, password, True, ask, backup, run_sync)


def _linked_question() -> Question:
    return Question("linked", LINKED_ELSEWHERE, RelayLinkedElsewhere(LINKED_ELSEWHERE))


async def _login(
    library: Library,
    url: str,
    email: str,
    password: str,
    signup: bool,
    ask: Ask | None,
    backup: Callable[[Library], Any] | None,
    run_sync: bool,
) -> LoginReport:
    report = LoginReport(relay=url, email=email)
    link = read_link(library)
    break_link = link.linked and (link.url != url or link.email != email)
    if break_link:
        _confirm(ask, _linked_question())
    remembered = account_keys.recall(_meta(library, "relay_kdf")) if link.linked and not break_link else None
    async with RelayClient(url) as client:
        client.proof = keys.proof(library, email)  # the token is tied to this device (relay.md §5.1)
        if signup:
            login_keys = await account_keys.sign_up(client, email, password)
        else:
            login_keys = await account_keys.log_in(client, email, password, remembered)
        session, wrap_key = login_keys.session, login_keys.wrap_key
        report.account = session.account
        try:
            if not break_link and link.linked and link.account and link.account != session.account:
                _confirm(ask, _linked_question())
                break_link = True
            if break_link:  # confirmed, and the new login worked: only now is the old link dropped
                await _logout_quietly(link.url, link.token)
                _reset_local(library)
                report.broke_link = True
                link = LinkState()
            same_account = link.linked and link.account == session.account
            account = await client.account()
            ring = await _bind_or_join(library, client, account, wrap_key, link, same_account, ask, backup, report)
            _write(library, {"relay_kdf": login_keys.params.as_text()})  # no relay may talk this device down later
        except BaseException:
            with contextlib.suppress(P2PSyncError, TimeoutError):
                await client.logout()
            raise
        report.library_id = library.library_id
        if run_sync:
            report.sync = await _sync_or_report(library, client, ring)
    return report


async def _bind_or_join(
    library: Library,
    client: RelayClient,
    account: Account,
    wrap_key: bytes,
    link: LinkState,
    same_account: bool,
    ask: Ask | None,
    backup: Callable[[Library], Any] | None,
    report: LoginReport,
    again: int = 2,
) -> keys.Ring:
    """Bind the account to this library, or make this library part of the account's; save the link.
    Returns the library keys. (`again`: how often a binding race is looked at again.)"""
    session = {
        "relay_url": client.url,
        "relay_email": report.email,
        "relay_account": report.account,
        **keys.wrap_rows(wrap_key),
    }
    if account.library_id is None:
        key = link.key if same_account and link.key else crypto.new_library_key()
        wrapped = crypto.wrap_library_key(wrap_key, key, library.library_id)
        try:
            bound = await client.bind(library.library_id, wrapped)
        except RelayBoundElsewhere:  # another library bound it a moment ago
            bound = "other"
        if bound != "new":  # "same": another device of this library bound it a moment ago, with its key
            account = await client.account()
            if not again or account.library_id is None:
                raise ProtocolMismatch("The relay answers a binding inconsistently; try again later.")
            return await _bind_or_join(
                library, client, account, wrap_key, link, same_account, ask, backup, report, again - 1
            )
        ring = keys.Ring.first(key)
        with write_transaction(library.db):
            _write_in(library, {**session, **_token_and_key(client, ring), "relay_cursor": link.cursor or None})
            _forget_pushed(library)
        _ensure_account_member(library, key)
        report.mode = "bound"
        return ring
    assert account.wrapped_key is not None
    key = crypto.unwrap_library_key(wrap_key, account.wrapped_key, account.library_id)
    ring = await keys.ring_at_login(library, client, key, wrap_key, account.library_id)
    if account.library_id == library.library_id:
        before = keys.read_ring(library)
        with write_transaction(library.db):
            _write_in(library, {**session, **_token_and_key(client, ring), "relay_cursor": link.cursor or None})
            _forget_pushed(library)  # a login checks every chunk with the relay once (it may have lost some)
            if not same_account or (before is not None and before.keys.get(0) != ring.keys.get(0)):
                library.db.execute("DELETE FROM meta WHERE key = 'relay_cursor'")  # (logged out: keys unknown)
        report.mode = "same"
        return ring
    # The account holds another library.
    if rebase.is_empty(library):
        _save_joined(library, session, client, ring)
        rebase.rebase(library, account.library_id, library.name)
        report.mode = "joined"
        return ring
    ours = rebase.content(library)
    staging = library.path / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staged = Library.create(staging, library.name, found=False, library_id=account.library_id)
    try:
        staged_report = RelaySyncReport(relay=client.url, account=report.account)
        cursor = await _pull(staged, client, ring, 0, staged_report, save=False)
        theirs = rebase.content(staged)
        report.ours, report.theirs = ours.as_dict(), theirs.as_dict()
        _confirm(ask, _merge_question(ours, theirs))
        if backup is not None:
            backup(library)
        _save_joined(library, session, client, ring)
        rebase.rebase(library, account.library_id, library.name)
        # What was pulled into the staging library is applied from there, not fetched again.
        receive(library, changesets_since(staged, version_vector(library)), peer=PEER)
        _advance_cursor(library, cursor)
    finally:
        staged.close()
        shutil.rmtree(staging, ignore_errors=True)
    report.mode = "merged"
    return ring


def _token_and_key(client: RelayClient, ring: keys.Ring) -> dict[str, str | int | None]:
    return {"relay_token": client.token, **keys.ring_rows(ring)}


def _save_joined(library: Library, session: dict[str, str | int | None], client: RelayClient, ring: keys.Ring) -> None:
    with write_transaction(library.db):
        _write_in(library, {**session, **_token_and_key(client, ring), "relay_cursor": None})
        _forget_pushed(library)


def _merge_question(ours: Content, theirs: Content) -> Question:
    text = (
        f"Both libraries hold references: this one {ours.references} ({ours.groups} groups, "
        f"{ours.attachments} attachments), the one the account holds {theirs.references} ({theirs.groups} groups, "
        f"{theirs.attachments} attachments). Merge them into one library? Plainly identical references are merged, "
        "not doubled."
    )
    error = RelayMergeNeedsConfirmation(
        f"{text} Run again with --yes to merge (no terminal to ask on).", ours.as_dict(), theirs.as_dict()
    )
    return Question("merge", text, error)


def _ensure_account_member(library: Library, key: bytes) -> None:
    """The account signing key becomes a member, introduced by this device (the binding device)."""
    account = crypto.account_identity(key)
    with library.writing() as writer:
        if library.db.execute("SELECT 1 FROM devices WHERE id = ?", [account.device_id]).fetchone():
            return
        public = DeviceIdentity.from_public(account.public_bytes)
        writer.log(device_add_op(public, crypto.ACCOUNT_DEVICE_NAME, library.identity(), library.library_id))


def _ensure_member(library: Library, key: bytes) -> bool:
    """This device introduces itself with the account signing key once the account's membership
    has arrived, as the first entry it writes in this library. Returns whether it is a member."""
    db = library.db
    if db.execute("SELECT 1 FROM devices WHERE id = ?", [library.device_id]).fetchone():
        return True
    account = crypto.account_identity(key)
    if not db.execute("SELECT 1 FROM devices WHERE id = ?", [account.device_id]).fetchone():
        return False  # the account's library has not arrived yet
    with library.writing() as writer:
        if db.execute("SELECT 1 FROM devices WHERE id = ?", [library.device_id]).fetchone():
            return True
        if writer.seq > 0:
            raise RelayError(
                "This device wrote changes before it had joined the account's library, so the other devices "
                "would refuse them; back up, run 'p2psync account reset', and log in again."
            )
        writer.log(device_add_op(library.identity(), device_name(), account, library.library_id))
    return True


# --- logout, purge, password, status ---------------------------------------------------------------


def _logged_in(library: Library) -> LinkState:
    link = read_link(library)
    if not link.linked:
        raise RelayNotLinked(
            "This library is not linked to a relay account; sign up or log in with 'p2psync account signup' "
            "or 'p2psync account login'."
        )
    if not link.logged_in:
        raise RelayNotLinked(
            f"This device is logged out of the account {link.email} on {link.url}; log in with "
            f"'p2psync account login --relay {link.url} --email {link.email}'."
        )
    return link


def logout(library: Library) -> dict[str, Any]:
    """Revoke this device's token and forget it and the library key. The link to the account
    stays (and so the one-account rule, and the cursor): logging in again continues."""
    link = _logged_in(library)
    told = True

    async def run() -> None:
        async with RelayClient(link.url or "", link.token) as client:
            await client.logout()

    try:
        asyncio.run(run())
    except RelayError:
        told = False  # unreachable, or the token was no longer valid: forgetting it is enough
    _write(library, {"relay_token": None, "relay_key": None, **keys.FORGET_ROWS})
    return {"relay": link.url, "email": link.email, "logged_out": True, "relay_told": told}


def account_info(library: Library) -> Account:
    link = _logged_in(library)

    async def run() -> Account:
        async with RelayClient(link.url or "", link.token) as client:
            return await client.account()

    return asyncio.run(run())


def purge(library: Library) -> dict[str, Any]:
    """Delete everything the account stores on the relay and unbind it; forget the cursor and what
    was pushed. This device stays logged in; logging in again (from any library) binds it again."""
    link = _logged_in(library)

    async def run() -> None:
        async with RelayClient(link.url or "", link.token) as client:
            await client.purge()

    asyncio.run(run())
    with write_transaction(library.db):
        _write_in(library, {"relay_cursor": None, "relay_last_moved": None})
        _forget_pushed(library)
    return {"relay": link.url, "email": link.email, "purged": True}


def change_password(library: Library, new_password: str) -> dict[str, Any]:
    """Replace the account's password: a new login key, and the library key wrapped again. Every
    other device's login stops working (they log in again with the new password)."""
    link = _logged_in(library)
    assert link.key is not None and link.email is not None
    strength.check_new_password(new_password, link.email)
    params = kdf.default_params()
    login_key, wrap_key = crypto.derive_keys(link.email, new_password, params)

    async def run() -> None:
        async with RelayClient(link.url or "", link.token) as client:
            account = await client.account()
            library_id = account.library_id or library.library_id
            if account.library_id not in (None, library.library_id):
                raise RelayBoundElsewhere(
                    "The account now holds another library; log in again before changing its password.",
                    account.library_id,
                )
            ring = keys.read_ring(library)
            assert ring is not None
            if account.library_id is not None:
                await keys.refresh(library, client, ring)  # the account's copy is of the key in force
            wrapped = crypto.wrap_library_key(wrap_key, ring.current, library_id)
            await client.change_password(login_key, wrapped, params)
            if account.library_id is not None and account.wrapped_epoch != ring.epoch:
                await client.set_account_key(ring.epoch, wrapped)

    asyncio.run(run())
    _write(library, {"relay_kdf": params.as_text(), **keys.wrap_rows(wrap_key)})
    return {"relay": link.url, "email": link.email, "password_changed": True}


def status(library: Library, online: bool = True) -> dict[str, Any]:
    """The link, and (online, when logged in) what the relay says of the account."""
    out: dict[str, Any] = {"linked": False, "library_id": library.library_id}
    info = summary(library)
    if info is None:
        return out
    out.update(info, linked=True, bound_library=None, usage=None, online_error=None)
    if online and info["logged_in"]:
        try:
            account = account_info(library)
        except P2PSyncError as exc:
            out["online_error"] = exc.message
        else:
            out["bound_library"] = account.library_id
            out["bound_here"] = account.library_id == library.library_id
            out["usage"] = {
                "used_bytes": account.used_bytes,
                "quota_bytes": account.quota_bytes,
                "change_sets": account.change_sets,
                "chunks": account.chunks,
            }
    return out


# --- syncing -------------------------------------------------------------------------------------


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
    missing: list[dict[str, Any]] = field(default_factory=list)
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
                "missing": self.missing,
            },
            **({"merge": self.merge.as_dict()} if self.merge else {}),
            "usage": self.usage,
            "error": self.error,
            "errors": self.errors,
        }


def sync_with_relay(library: Library) -> RelaySyncReport:
    """One sync with the account this library is linked to. Errors that stop the sync (the relay
    unreachable, the login refused, the account holding another library) are recorded for
    `status` and raised; errors that stop only part of it (the storage limit, items that fail
    their check) are recorded and listed in the report, and the rest of the sync goes on."""
    link = _logged_in(library)
    return asyncio.run(_sync_client(library, link))


async def _sync_client(library: Library, link: LinkState) -> RelaySyncReport:
    async with RelayClient(link.url or "", link.token) as client:
        ring = keys.read_ring(library)
        assert ring is not None
        return await _sync_or_raise(library, client, ring)


async def _sync_or_report(library: Library, client: RelayClient, ring: keys.Ring) -> RelaySyncReport:
    """The first sync after a login: an error is reported, not raised (the login itself worked)."""
    try:
        return await _sync_or_raise(library, client, ring)
    except P2PSyncError as exc:
        report = RelaySyncReport(relay=client.url)
        report.errors.append(exc.message)
        return report


async def _sync_or_raise(library: Library, client: RelayClient, ring: keys.Ring) -> RelaySyncReport:
    report = RelaySyncReport(relay=client.url, account=read_link(library).account)
    try:
        await _sync(library, client, ring, report)
    except P2PSyncError as exc:
        _record_error(library, exc.message)
        if isinstance(exc, DeviceRemoved):
            _problem_once(library, exc.reason, exc.message)
        raise
    now = clock.now_ms()
    with write_transaction(library.db):
        _write_in(
            library,
            {
                "relay_last_sync": now,
                "relay_last_moved": dumps(report.moved()),
                "relay_last_error": report.error,
                "relay_last_error_at": now if report.error else None,
            },
        )
    return report


async def _sync(library: Library, client: RelayClient, ring: keys.Ring, report: RelaySyncReport) -> None:
    keys.check_not_removed(library)
    account = await client.account()
    report.usage = {"used_bytes": account.used_bytes, "quota_bytes": account.quota_bytes}
    if account.library_id is None:
        _write(library, {"relay_cursor": None})
        raise RelayNotLinked(
            "The account on the relay holds no library now (it was purged); log in again to bind this library "
            "to it ('p2psync account login')."
        )
    if account.library_id != library.library_id:
        raise RelayBoundElsewhere(
            "The account now holds another library than this one; log in again to merge this library into it "
            "('p2psync account login'), or break the link with 'p2psync account reset'.",
            account.library_id,
        )
    with write_transaction(library.db):
        row = library.db.execute("SELECT value FROM meta WHERE key = 'relay_chunks'").fetchone()
        if account.chunks < _int(row[0] if row else None):
            _forget_pushed(library)  # the relay holds fewer chunks than it did (a purge): ask it again
        _write_in(library, {"relay_chunks": account.chunks})
    # Before anything goes up: newer keys taken in, the library's removals carried to the relay, and
    # a new key put in force if a removed device may hold the one in force (relay/keys.py).
    email = read_link(library).email or ""
    prepared = await keys.prepare(library, client, ring, email, tied=account.device is not None)
    if prepared.needed:  # pull what the others stored first, then change the key
        await _pull(library, client, ring, read_link(library).cursor, report)
        prepared = await keys.enforce(library, client, ring, email)
    relay_revoked = prepared.relay_revoked
    removed = keys.removed(library)
    seal(library)  # (files edited in place are recorded first: store/sync.py)
    heads, last_num = await client.state()
    quota = await _push(library, client, ring, heads, report)
    cursor = read_link(library).cursor
    if last_num < cursor:  # the relay's numbering started again (its store was replaced)
        _write(library, {"relay_cursor": None})
        cursor = 0
    await _pull(library, client, ring, cursor, report)
    if keys.removed(library) != removed:  # the pull brought a removal: carry it to the relay before pushing
        relay_revoked = (await keys.enforce(library, client, ring, email)).relay_revoked
    _report_contested(library, keys.contested(library, ring, relay_revoked))
    lacking = _uncovered(library, heads)
    if lacking and _clean(report) and cursor > 0:
        # The relay's numbering started again and grew past the cursor: pull it all once.
        _write(library, {"relay_cursor": await _pull(library, client, ring, 0, report, save=False)})
        lacking = _uncovered(library, heads)
    if lacking and _clean(report):
        device, last = next(iter(lacking.items()))
        message = (
            f"{CHECK_FAILED}: it lists change sets of {device[:7]} up to {last} but did not send them; "
            "sync again later, or tell the relay's operator."
        )
        _problem(library, "relay_withheld", message)
        report.errors.append(message)
    if _ensure_member(library, ring.current):
        report.merge = rebase.finish_merge(library)
    if not quota and seal(library):
        heads, _ = await client.state()
        quota = await _push(library, client, ring, heads, report)
    if rebase.merge_pending(library):
        return  # attachment files set aside for the merge must not be tidied away before it is written back
    await _fetch_attachments(library, client, ring, report)
    if not quota:
        await _push_chunks(library, client, ring, report)


def _problem_once(library: Library, reason: str, message: str) -> None:
    """A problem recorded once, not at every sync that finds it again."""
    if not library.db.execute(
        "SELECT 1 FROM sync_problems WHERE peer = ? AND reason = ? AND message = ?", [PEER, reason, message]
    ).fetchone():
        _problem(library, reason, message)


def _report_contested(library: Library, devices: list[str]) -> None:
    for device in devices:
        _problem_once(
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


# --- pushing change sets -------------------------------------------------------------------------


def _header(wire: bytes) -> tuple[str, int, int]:
    """Author, first and last of a change set this library assembled (canonical bytes)."""
    start = len(b'{"body":{"author":"')
    device = wire[start : wire.index(b'"', start)].decode("ascii")
    at = wire.rindex(b'"seq":[')
    first, last = wire[at + 7 : wire.index(b"]", at)].split(b",")
    return device, int(first), int(last)


async def _push(
    library: Library, client: RelayClient, ring: keys.Ring, heads: dict[str, int], report: RelaySyncReport
) -> bool:
    """Push what the relay's heads lack; returns whether the storage limit stopped it."""
    for attempt in range(2):
        try:
            await _push_once(library, client, ring, heads, report)
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
                await keys.refresh(library, client, ring)
            heads, _ = await client.state()
    return False


async def _push_once(
    library: Library, client: RelayClient, ring: keys.Ring, heads: dict[str, int], report: RelaySyncReport
) -> None:
    """Push this device's own change sets that the relay lacks: the relay stores a device's change
    sets from that device only (relay.md §5.2), so those of others go up from their authors."""
    library_id = library.library_id
    batch: list[dict[str, Any]] = []
    size = 0

    async def send() -> None:
        nonlocal batch, size
        stored, duplicates = await client.push(batch)
        report.pushed += stored
        report.pushed_duplicates += duplicates
        batch, size = [], 0

    theirs = dict.fromkeys(version_vector(library), ops.MAX_INT)
    theirs[library.device_id] = heads.get(library.device_id, 0)
    for wire in changesets_since(library, theirs):
        device, first, last = _header(wire)
        blob = crypto.encrypt_changeset(ring.current, library_id, device, first, last, wire)
        if batch and (size + len(blob) > PUSH_BATCH_BYTES or len(batch) >= PUSH_BATCH_ITEMS):
            await send()
        batch.append({"device": device, "first": first, "last": last, "key": ring.epoch, "blob": blob})
        size += len(blob)
    if batch:
        await send()


# --- pulling change sets -------------------------------------------------------------------------


async def _pull(
    library: Library, client: RelayClient, ring: keys.Ring, cursor: int, report: RelaySyncReport, save: bool = True
) -> int:
    """Pull everything after `cursor`; returns (and, with save, records as it goes) the new
    cursor: below the first item not applied (refused, or still waiting), else the last listed."""
    library_id = library.library_id
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
                _refuse(library, report, f"it listed the change set {item.device[:7]} {item.first}-{item.last} {order}")
                if not twice:
                    # What is missing was stored after that device's previous item: keep the
                    # cursor there, so that it is listed again once the relay has it back.
                    outstanding.add(listed_num[item.device] + 1)
                    continue  # never applied out of order: it stays outstanding
            else:
                listed[item.device] = item.last
                listed_num[item.device] = item.num
            if item.key > ring.epoch:  # a key put in force since this sync began
                await keys.refresh(library, client, ring)
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
                _refuse(library, report, exc.message)
                continue
            batch.append((item, wire))
        if batch:
            _add(report.received, receive(library, [wire for _, wire in batch], peer=PEER, parallel=False))
        vv = version_vector(library)
        carried, carried_bytes = [], 0
        for item, wire in batch:
            if vv.get(item.device, 0) >= item.last:  # applied, or already here
                outstanding.discard(item.num)
            elif carried_bytes + len(wire) <= CARRY_LIMIT:
                carried.append((item, wire))
                carried_bytes += len(wire)
        safe = min(outstanding) - 1 if outstanding else read_from
        if save and safe > cursor:
            _advance_cursor(library, safe)
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


def _refuse(library: Library, report: RelaySyncReport, detail: str) -> None:
    message = f"{CHECK_FAILED}: {detail}; it was refused."
    _problem(library, "relay_check", message)
    report.refused.append(message)
    if CHECK_FAILED not in " ".join(report.errors):
        report.errors.append(message)


def _add(total: ReceiveReport, part: ReceiveReport) -> None:
    total.applied += part.applied
    total.entries += part.entries
    total.duplicates += part.duplicates
    total.rejected += part.rejected
    total.waiting = part.waiting


# --- attachments ---------------------------------------------------------------------------------


def _local_files(library: Library) -> list[str]:
    """SHA-256 of every attachment file (and kept version) on this disk that has a chunk index."""
    rows = library.db.execute(
        "SELECT DISTINCT sha256 FROM (SELECT sha256 FROM attachment_files UNION SELECT sha256 FROM "
        "attachment_versions) WHERE sha256 IN (SELECT file FROM chunk_index)"
    ).fetchall()
    pushed = {
        k[len(PUSHED_PREFIX) :]
        for (k,) in library.db.execute(
            "SELECT key FROM meta WHERE key >= ? AND key < ?", [PUSHED_PREFIX, PUSHED_PREFIX[:-1] + ";"]
        )
    }
    return [sha for (sha,) in rows if sha not in pushed]


async def _push_chunks(library: Library, client: RelayClient, ring: keys.Ring, report: RelaySyncReport) -> None:
    """Put on the relay the chunks of local files it lacks (asked with /chunks/have)."""
    for file_sha in _local_files(library):
        chunks = library.db.execute(
            "SELECT chunk, min(offset), size FROM chunk_index WHERE file = ? GROUP BY chunk ORDER BY min(offset)",
            [file_sha],
        ).fetchall()
        names = [c for c, _, _ in chunks]
        ids = [crypto.chunk_id(ring.chunk_key, c) for c in names]
        lacking: list[int] = []
        for start in range(0, len(ids), HAVE_LIMIT):
            have = await client.have(ids[start : start + HAVE_LIMIT])
            lacking += [start + i for i, h in enumerate(have) if not h]
        complete = True
        for start in range(0, len(lacking), CHUNK_BATCH):
            part = lacking[start : start + CHUNK_BATCH]
            locations = transfers.locate(library, [names[i] for i in part])
            datas = transfers.read_chunks(locations)
            uploads = []
            for i, data in zip(part, datas, strict=True):
                if data is None or hashlib.sha256(data).hexdigest() != names[i]:
                    complete = False  # changed on disk since indexed: the next scan makes it a new version
                    continue
                uploads.append((ids[i], crypto.encrypt_chunk(ring.current, ids[i], data), len(data)))
            try:
                await _gather_limited([client.put_chunk(cid, blob, ring.epoch) for cid, blob, _ in uploads])
            except RelayQuotaExceeded as exc:
                report.errors.append(exc.message)
                return
            except KeyEpochMoved:  # a new key in force meanwhile: the rest goes up at the next sync
                await keys.refresh(library, client, ring)
                return
            report.chunks_pushed += len(uploads)
            report.chunk_bytes_pushed += sum(n for _, _, n in uploads)
        if complete:
            _write(library, {PUSHED_PREFIX + file_sha: 1})


async def _gather_limited(coroutines: list[Any]) -> list[Any]:
    limit = asyncio.Semaphore(CHUNKS_IN_FLIGHT)

    async def one(coroutine: Any) -> Any:
        async with limit:
            return await coroutine

    tasks = [asyncio.ensure_future(one(c)) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for coroutine in coroutines:
            coroutine.close()  # those cancelled before they started were never awaited (a warning each)
        raise


async def _fetch_attachments(library: Library, client: RelayClient, ring: keys.Ring, report: RelaySyncReport) -> None:
    """Bring every attachment version this machine lacks from the relay, chunk by chunk: resumed
    from a partial file, copied from files on this disk where possible, each chunk decrypted and
    checked against the manifest before it is written, the whole file checked before it is put
    in place (store/transfers.py finish)."""
    needs = transfers.needs(library)
    report.files_wanted = len(needs)
    firsts, followers = transfers.travel_once(needs, lambda n: n.sha256)
    for need in [*firsts, *followers]:  # a follower is copied from its first, already in place
        file = PartialFile(need, offsets(need.chunks), set())
        done = resume_partial(need, file.starts)
        report.bytes_resumed += sum(need.chunks[i][1] for i in done)
        file.remaining = set(range(len(need.chunks))) - done
        report.bytes_local += _copy_local(library, file)
        refused = await _fetch_remote(client, ring, file, report) if file.remaining else 0
        if not file.remaining:
            if transfers.seal_partial(need):
                if transfers.finish(library, need) != "dropped":
                    report.files += 1
                continue
            reason, detail = "manifest", transfers.REASONS["manifest"]
        elif refused:
            reason, detail = "verification", "what the relay sent failed verification"
        else:
            reason = "no_peer"
            detail = "the relay does not have it yet (the device that has it has not synced with the relay since)"
        transfers.record_missing(library, need.ref_id, need.name, need.sha256, reason, detail)
        report.missing.append({**need.as_dict(), "reason": reason, "detail": detail})


def _copy_local(library: Library, file: PartialFile) -> int:
    indexes = sorted(file.remaining)
    copied = 0
    for start in range(0, len(indexes), CHUNK_BATCH):
        batch = indexes[start : start + CHUNK_BATCH]
        copied += copy_located(file, batch, transfers.locate(library, [file.need.chunks[i][0] for i in batch]))
    return copied


async def _fetch_remote(client: RelayClient, ring: keys.Ring, file: PartialFile, report: RelaySyncReport) -> int:
    """Fetch the file's remaining chunks from the relay; returns how many were refused."""
    refused = 0
    indexes = sorted(file.remaining)
    for start in range(0, len(indexes), CHUNK_BATCH):
        part = indexes[start : start + CHUNK_BATCH]
        ids = [crypto.chunk_id(ring.chunk_key, file.need.chunks[i][0]) for i in part]
        found = await _gather_limited([client.get_chunk(cid) for cid in ids])
        items: list[tuple[int, bytes]] = []
        for i, cid, blob in zip(part, ids, found, strict=True):
            if blob is None:  # not on the relay (yet)
                continue
            key = ring.get(blob[1])
            try:
                if key is None:
                    raise RelayTampered(f"the chunk {cid[:12]} needs a library key the relay does not hold")
                data = crypto.decrypt_chunk(key, cid, blob[0])
            except RelayTampered:
                refused += 1
                continue
            if len(data) != file.need.chunks[i][1]:
                refused += 1
                continue
            items.append((i, data))
        good, bad = verify_and_write(file, items)
        refused += len(bad)
        for i in good:
            file.remaining.discard(i)
            report.bytes_fetched += file.need.chunks[i][1]
    report.chunks_refused += refused
    return refused
