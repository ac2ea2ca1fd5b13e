"""A library's link to an online account on a relay (protocol/relay.md section 4), and a sync
through it: the public face of the relay client.

The work is async and lives by concern: relay/state.py (the link as the library records it),
relay/link_rules.py (logging in, binding or joining, the one-account rule, reset),
relay/account.py (logout, purge, password, status), relay/sync_round.py (one sync, in order),
relay/changes.py (change sets pushed and pulled), relay/attachments.py (chunks both ways) and
relay/keys.py (key epochs). The daemon awaits those; the CLI runs them with `asyncio.run` at its
edge. The plain functions below are the same operations for callers that are not async (scripts
and the tests): each runs one coroutine to the end in a loop of its own, so none may be called
from inside a running event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from p2psync.relay import account, link_rules, sync_round
from p2psync.relay.changes import CHECK_FAILED
from p2psync.relay.client import Account
from p2psync.relay.library_calls import OnThisThread
from p2psync.relay.link_rules import (
    LINKED_ELSEWHERE,
    RESET_MESSAGE,
    RESET_SUFFIX,
    STAGING_DIR,
    Ask,
    LoginReport,
    Question,
    is_reset_request,
)
from p2psync.relay.report import RelaySyncReport
from p2psync.relay.state import PEER, PUSHED_PREFIX, LinkState, is_linked, read_link, summary
from p2psync.store.library import Library

__all__ = [
    "CHECK_FAILED",
    "LINKED_ELSEWHERE",
    "PEER",
    "PUSHED_PREFIX",
    "RESET_MESSAGE",
    "RESET_SUFFIX",
    "STAGING_DIR",
    "Ask",
    "LinkState",
    "LoginReport",
    "Question",
    "RelaySyncReport",
    "account_info",
    "change_password",
    "is_linked",
    "is_reset_request",
    "login",
    "logout",
    "purge",
    "read_link",
    "reset",
    "signup",
    "status",
    "summary",
    "sync_with_relay",
]

T = TypeVar("T")


def _blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """The one place the relay client is run to the end for a caller that is not async."""
    return asyncio.run(coroutine)


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
    """link_rules.login, run to the end."""
    return _blocking(link_rules.login(library, url, email, password, signup, ask, backup, run_sync))


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


def reset(library: Library, revoke: bool = True) -> str:
    """link_rules.reset, run to the end."""
    return _blocking(link_rules.reset(library, revoke))


def sync_with_relay(library: Library) -> RelaySyncReport:
    """sync_round.sync_with_relay, run to the end."""
    return _blocking(sync_round.sync_with_relay(OnThisThread(library)))


def logout(library: Library) -> dict[str, Any]:
    return _blocking(account.logout(library))


def account_info(library: Library) -> Account:
    return _blocking(account.account_info(library))


def purge(library: Library) -> dict[str, Any]:
    return _blocking(account.purge(library))


def change_password(library: Library, new_password: str) -> dict[str, Any]:
    return _blocking(account.change_password(library, new_password))


def status(library: Library, online: bool = True) -> dict[str, Any]:
    return _blocking(account.status(library, online))
