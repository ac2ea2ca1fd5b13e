"""The relay client's operations as plain functions, for tests that are not async (the
library itself is async-first, and runs `asyncio.run` only at the CLI's edge). Each runs one
coroutine to the end in a loop of its own. Everything else of p2psync.relay.link is re-exported,
so a test reads `link.login(...)`, `link.read_link(...)` as before."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from p2psync.relay import account, link_rules, sync_round
from p2psync.relay.client import Account
from p2psync.relay.library_calls import OnThisThread
from p2psync.relay.link import *  # noqa: F403
from p2psync.relay.link import Ask, LoginReport, RelaySyncReport
from p2psync.store.library import Library

T = TypeVar("T")


def _blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one of the relay client's coroutines to the end."""
    return asyncio.run(coroutine)


def login(
    library: Library,
    url: str,
    email: str,
    password: str,
    signup: bool = False,
    ask: Ask | None = None,
    backup: link_rules.BackUp | None = None,
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
    backup: link_rules.BackUp | None = None,
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
