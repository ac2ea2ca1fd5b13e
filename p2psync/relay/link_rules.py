"""Logging in to a relay account, and the rules of the link: one library per account, one
account per library, and the reset that breaks a link (protocol/relay.md section 4).

Logging in (or signing up) binds or joins:
- the account holds no library: it is bound to this one with a new library key, and the account
  signing key becomes a member ("online account"), introduced by this device;
- it holds this library: the library key is unwrapped;
- it holds another library and this one is empty: this library takes that library's id
  (store/rebase.py) and this device introduces itself with the account signing key;
- it holds another library and this one is not empty: after a confirmation with the counts each
  side brings (the other side is pulled into a staging library to count it, then fed from
  there), the same rebase, and the content set aside is merged back once the other has arrived.
A library linked to another account asks before that link is broken, and breaks it only once the
new login worked. `reset` deletes every relay_* row (and the relay's recorded problems), nothing
else. The questions only the user can answer come back through `ask`.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from p2psync.crypto.identity import DeviceIdentity
from p2psync.errors import (
    ConfirmationRequired,
    P2PSyncError,
    ProtocolMismatch,
    RelayBoundElsewhere,
    RelayLinkedElsewhere,
    RelayMergeNeedsConfirmation,
)
from p2psync.relay import account_keys, changes, crypto, keys, strength
from p2psync.relay.client import Account, RelayClient, normalize_url
from p2psync.relay.library_calls import OnThisThread
from p2psync.relay.outcomes import BindOutcome
from p2psync.relay.report import RelaySyncReport
from p2psync.relay.state import PEER, LinkState, read_link
from p2psync.relay.sync_round import sync_or_report
from p2psync.store import rebase, relay_state
from p2psync.store.backup import Reason
from p2psync.store.before_merge import trash_sentence
from p2psync.store.db import write_transaction
from p2psync.store.library import Library, device_add_op
from p2psync.store.rebase import Content
from p2psync.store.sync import changesets_since, receive, version_vector

RESET_SUFFIX = "#!resetLocalSync"
RESET_MESSAGE = "Your local sync state has been reset. Please re-enter your e-mail address and sync again."
LINKED_ELSEWHERE = (
    "A sync library can be linked to only one account. "
    "Do not proceed unless you intend to break the link to the original account."
)
STAGING_DIR = ".p2psync-relay-staging"


def is_reset_request(email: str) -> bool:
    """Whether the e-mail as typed asks for a reset ("...#!resetLocalSync", case sensitive)."""
    return email.strip().endswith(RESET_SUFFIX)


async def reset(library: Library, revoke: bool = True) -> str:
    """Forget the link, the token, the key, the cursor and what was pushed (every relay_* row, and
    the relay's recorded problems); every reference stays. The next login and sync are complete."""
    link = read_link(library)
    if revoke and link.url and link.token:
        await logout_quietly(link.url, link.token)
    return reset_local(library)


def reset_local(library: Library) -> str:
    relay_state.forget_link(library)
    return RESET_MESSAGE


async def logout_quietly(url: str | None, token: str | None) -> None:
    """Revoke a token on the relay if it answers within a few seconds (a reset works offline)."""
    if not url or not token:
        return
    with contextlib.suppress(P2PSyncError, TimeoutError):
        async with RelayClient(url, token, timeout=3.0) as client:
            await client.logout()


@dataclass(frozen=True)
class Question:
    """Something only the user can decide. `error` is what to raise when nobody can be asked."""

    kind: str  # "linked" (break the link to another account) or "merge" (merge two libraries)
    text: str
    error: ConfirmationRequired
    trash: int = 0  # merge: the references in this library's trash (a second question may follow)


Ask = Callable[[Question], bool]
# The caller's backup (store/backup.BackupChoice): called with the reason before a login's sync can
# change this library; returns the backup's manifest, or None when it made none.
BackUp = Callable[[Library, Reason], dict[str, Any] | None]


def _confirm(ask: Ask | None, question: Question) -> None:
    if ask is None or not ask(question):
        raise question.error


class LoginMode(StrEnum):
    """How a login linked this library to the account (the `mode` of `account login --json`)."""

    BOUND = "bound"  # the account held no library: it holds this one now
    SAME = "same"  # the account holds this library
    JOINED = "joined"  # this (empty) library received the account's library
    MERGED = "merged"  # this library was merged with the account's library
    RESET = "reset"  # the e-mail asked for a reset of the sync state instead (is_reset_request)


@dataclass
class LoginReport:
    relay: str
    email: str
    account: str = ""
    mode: LoginMode | None = None  # set by the step that binds or joins (every login that returns)
    library_id: str = ""
    broke_link: bool = False  # the library was linked to another account, and that link was reset
    ours: dict[str, int] | None = None
    theirs: dict[str, int] | None = None
    sync: RelaySyncReport | None = None
    message: str | None = None
    backup: str | None = None  # the backup made before this login changed the library (its path)

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
            "backup": self.backup,
            **({"message": self.message} if self.message else {}),
        }


async def login(
    library: Library,
    url: str,
    email: str,
    password: str,
    signup: bool = False,
    ask: Ask | None = None,
    backup: BackUp | None = None,
    run_sync: bool = True,
) -> LoginReport:
    """Log in to (or sign up on) the relay at `url`, bind or join (section 4), then sync once.

    `ask` answers the questions (breaking the link to another account, merging two libraries);
    without it those raise RelayLinkedElsewhere / RelayMergeNeedsConfirmation. `backup` is
    called, with the reason, before the login's sync can change this library: before a merge,
    before its first sync with the account (it binds the account or joins its library), before it
    re-links to an account that holds it (after a reset), and before a plain login (the caller
    decides which it makes; report.backup is the path of the one made)."""
    if is_reset_request(email):
        return LoginReport(relay=url, email=email, mode=LoginMode.RESET, message=await reset(library))
    url = normalize_url(url)
    address = crypto.check_email(email)
    if signup:
        strength.check_new_password(password, address)  # before anything is sent
    return await _login(library, url, address, password, signup, ask, backup, run_sync)


async def signup(
    library: Library,
    url: str,
    email: str,
    password: str,
    ask: Ask | None = None,
    backup: BackUp | None = None,
    run_sync: bool = True,
) -> LoginReport:
    return await login(library, url, email, password, True, ask, backup, run_sync)


def _linked_question() -> Question:
    return Question("linked", LINKED_ELSEWHERE, RelayLinkedElsewhere(LINKED_ELSEWHERE))


async def _login(
    library: Library,
    url: str,
    email: str,
    password: str,
    signup: bool,
    ask: Ask | None,
    backup: BackUp | None,
    run_sync: bool,
) -> LoginReport:
    report = LoginReport(relay=url, email=email)
    link = read_link(library)
    break_link = link.linked and (link.url != url or link.email != email)
    if break_link:
        _confirm(ask, _linked_question())
    remembered = (
        account_keys.recall(relay_state.read_row(library, "relay_kdf")) if link.linked and not break_link else None
    )
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
                await logout_quietly(link.url, link.token)
                reset_local(library)
                report.broke_link = True
                link = LinkState()
            same_account = link.linked and link.account == session.account
            account = await client.account()
            ring = await _bind_or_join(library, client, account, wrap_key, link, same_account, ask, backup, report)
            relay_state.write_rows(
                library, {"relay_kdf": login_keys.params.as_text()}
            )  # no relay may talk this device down later
        except BaseException:
            with contextlib.suppress(P2PSyncError, TimeoutError):
                await client.logout()
            raise
        report.library_id = library.library_id
        if run_sync:
            report.sync = await sync_or_report(OnThisThread(library), client, ring)
    return report


async def _bind_or_join(
    library: Library,
    client: RelayClient,
    account: Account,
    wrap_key: bytes,
    link: LinkState,
    same_account: bool,
    ask: Ask | None,
    backup: BackUp | None,
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
        _back_up(library, backup, Reason.LOGIN if same_account else Reason.FIRST_SYNC, report)
        key = link.key if same_account and link.key else crypto.new_library_key()
        wrapped = crypto.wrap_library_key(wrap_key, key, library.library_id)
        bound: BindOutcome | None = None  # None: another library bound it a moment ago
        with contextlib.suppress(RelayBoundElsewhere):
            bound = await client.bind(library.library_id, wrapped)
        if bound is not BindOutcome.NEW:  # SAME: another device of this library bound it a moment ago, with its key
            account = await client.account()
            if not again or account.library_id is None:
                raise ProtocolMismatch("The relay answers a binding inconsistently; try again later.")
            return await _bind_or_join(
                library, client, account, wrap_key, link, same_account, ask, backup, report, again - 1
            )
        ring = keys.Ring.first(key)
        with write_transaction(library.db):
            relay_state.write_rows_in(
                library, {**session, **_token_and_key(client, ring), "relay_cursor": link.cursor or None}
            )
            relay_state.forget_pushed(library)
        _ensure_account_member(library, key)
        report.mode = LoginMode.BOUND
        return ring
    assert account.wrapped_key is not None
    key = crypto.unwrap_library_key(wrap_key, account.wrapped_key, account.library_id)
    ring = await keys.ring_at_login(OnThisThread(library), client, key, wrap_key, account.library_id)
    if account.library_id == library.library_id:
        _back_up(library, backup, Reason.LOGIN if same_account else Reason.RELINK, report)
        before = keys.read_ring(library)
        with write_transaction(library.db):
            relay_state.write_rows_in(
                library, {**session, **_token_and_key(client, ring), "relay_cursor": link.cursor or None}
            )
            relay_state.forget_pushed(library)  # a login checks every chunk with the relay once (it may have lost some)
            if not same_account or (before is not None and before.keys.get(0) != ring.keys.get(0)):
                relay_state.write_rows_in(library, {"relay_cursor": None})  # (logged out: keys unknown)
        report.mode = LoginMode.SAME
        return ring
    # The account holds another library.
    if rebase.is_empty(library):
        _back_up(library, backup, Reason.FIRST_SYNC, report)
        _save_joined(library, session, client, ring)
        rebase.rebase(library, account.library_id, library.name)
        report.mode = LoginMode.JOINED
        return ring
    ours = rebase.content(library)
    staging = library.path / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staged = Library.create(staging, library.name, found=False, library_id=account.library_id)
    try:
        staged_report = RelaySyncReport(relay=client.url, account=report.account)
        cursor = await changes.pull(OnThisThread(staged), client, ring, 0, staged_report, save=False)
        theirs = rebase.content(staged)
        report.ours, report.theirs = ours.as_dict(), theirs.as_dict()
        _confirm(ask, _merge_question(ours, theirs))
        _back_up(library, backup, Reason.MERGE, report)
        _save_joined(library, session, client, ring)
        rebase.rebase(library, account.library_id, library.name)
        # What was pulled into the staging library is applied from there, not fetched again.
        receive(library, changesets_since(staged, version_vector(library)), peer=PEER)
        relay_state.advance_cursor(library, cursor)
    finally:
        staged.close()
        shutil.rmtree(staging, ignore_errors=True)
    report.mode = LoginMode.MERGED
    return ring


def _back_up(library: Library, backup: BackUp | None, reason: Reason, report: LoginReport) -> None:
    """The caller's backup before this login changes the library (once per login; before a merge
    always, since the caller may do more then: before_merge.BeforeMerge)."""
    if backup is not None and (report.backup is None or reason is Reason.MERGE):
        manifest = backup(library, reason)
        if manifest:
            report.backup = str(manifest["path"])


def _token_and_key(client: RelayClient, ring: keys.Ring) -> dict[str, str | int | None]:
    return {"relay_token": client.token, **keys.ring_rows(ring)}


def _save_joined(library: Library, session: dict[str, str | int | None], client: RelayClient, ring: keys.Ring) -> None:
    with write_transaction(library.db):
        relay_state.write_rows_in(library, {**session, **_token_and_key(client, ring), "relay_cursor": None})
        relay_state.forget_pushed(library)


def _merge_question(ours: Content, theirs: Content) -> Question:
    text = (
        f"Both libraries hold references: this one {ours.references} ({ours.groups} groups, "
        f"{ours.attachments} attachments), the one the account holds {theirs.references} ({theirs.groups} groups, "
        f"{theirs.attachments} attachments). Merge them into one library? Plainly identical references are merged, "
        f"not doubled. {trash_sentence(ours.trash, theirs.trash)}"
    )
    error = RelayMergeNeedsConfirmation(
        f"{text} Run again with --yes to merge (no terminal to ask on).", ours.as_dict(), theirs.as_dict()
    )
    return Question("merge", text, error, ours.trash)


def _ensure_account_member(library: Library, key: bytes) -> None:
    """The account signing key becomes a member, introduced by this device (the binding device)."""
    account = crypto.account_identity(key)
    with library.writing() as writer:
        if relay_state.is_member(library, account.device_id):
            return
        public = DeviceIdentity.from_public(account.public_bytes)
        writer.log(device_add_op(public, crypto.ACCOUNT_DEVICE_NAME, library.identity(), library.library_id))
