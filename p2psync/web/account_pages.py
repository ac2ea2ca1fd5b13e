"""The online account on the web: the link, storage used against the quota, login and sign-up
(which shows the new account's recovery key once), a new recovery key, logout, reset (also by the
e-mail with #!resetLocalSync, as on the command line) and purge. The same relay functions as
`p2psync account ...` (relay/account.py, relay/account_recovery.py, relay/link_rules.py) and the
same words (relay/account_words.py).

The relay's account functions work on a Library held by their caller and await the relay between
its calls; a page runs them as each `p2psync account` command does, with a library connection and
an event loop of their own, on a thread apart (`with_library`), so a login that pulls a whole
library never holds up the app's other pages.
Passwords are read from the form and handed on, never shown again or written anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

from p2psync.errors import InvalidValue, P2PSyncError
from p2psync.relay import account as relay_account
from p2psync.relay import account_recovery, link_rules
from p2psync.relay import account_words as words
from p2psync.store import backup as backups
from p2psync.store.before_merge import BeforeMerge
from p2psync.store.library import Library
from p2psync.web.app import notice, page, redirect, state

routes = web.RouteTableDef()
T = TypeVar("T")
MAX_FIELD = 1024  # a relay address or an e-mail longer than this is neither
MAX_PASSWORD = 4096


async def with_library(request: web.Request, operation: Callable[[Library], Coroutine[Any, Any, T]]) -> T:
    """Run `operation` on a thread of its own, with its own library connection and event loop: a
    login that pulls a whole library applies it there, and the app's loop goes on serving pages."""
    path = state(request).library_path

    def apart() -> T:
        library = Library.open(path)
        try:
            return asyncio.run(operation(library))
        finally:
            library.close()

    return await asyncio.to_thread(apart)


def _form(request: web.Request, data: dict[str, Any], status: int = 200, **values: Any) -> web.Response:
    defaults = {
        "relay": data.get("relay") or "",
        "email": data.get("email") or "",
        "error": "",
        "signup": False,
        "not_linked": words.NOT_LINKED,
        "recovery": None,
        "shown_once": account_recovery.SHOWN_ONCE,
    }
    return page(request, "account.html", status=status, data=data, lines=_lines(data), **{**defaults, **values})


def _lines(data: dict[str, Any]) -> list[tuple[str, str]]:
    return words.status_lines(data) if data.get("linked") else []


@routes.get("/account")
async def account(request: web.Request) -> web.StreamResponse:
    data = await with_library(request, relay_account.status)
    return _form(request, data)


def _text(form: Any, name: str, limit: int = MAX_FIELD) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


@routes.post("/account/login")
async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    url, email = _text(form, "relay").strip(), _text(form, "email").strip()
    password, again = _text(form, "password", MAX_PASSWORD), _text(form, "password_again", MAX_PASSWORD)
    signup = form.get("action") == "signup"
    agreed = form.get("agree") == "yes"
    backup = form.get("backup") == "yes"
    said: list[str] = []

    def ask(question: link_rules.Question) -> bool:
        return agreed  # asked on the page beforehand: without the tick, the question is the answer

    async def logging_in(library: Library) -> link_rules.LoginReport:
        if not link_rules.is_reset_request(email):
            if not signup and not password:
                raise InvalidValue(words.EMPTY_PASSWORD)
            if signup and password != again:
                raise InvalidValue("The two passwords differ; type the same one twice.")
        # The tick box: the command line's default rule when ticked (it is by default), --no-backup when not.
        choice = backups.BackupChoice(None if backup else False)
        before = BeforeMerge(choice, skip_trash=form.get("skip_trash") == "yes")
        report = await link_rules.login(library, url, email, password, signup, ask, before)
        said.extend(before.sentences())
        library.refs.index_now()
        if signup and report.mode != link_rules.LoginMode.RESET:
            try:
                recovery.append(await account_recovery.make_if_none(library))
            except P2PSyncError as exc:  # the sign-up stands; the page says how to make one later
                notice(request, f"No recovery key could be made now ({exc.message}); make one below.")
        return report

    recovery: list[account_recovery.RecoveryKey | None] = []
    try:
        report = await with_library(request, logging_in)
    except P2PSyncError as exc:
        data = await with_library(request, lambda library: relay_account.status(library, online=False))
        return _form(request, data, 400, relay=url, email=email, error=exc.message, signup=signup)
    if report.mode == link_rules.LoginMode.RESET:
        notice(request, report.message or link_rules.RESET_MESSAGE)
        return redirect("/account")
    for sentence in said:  # where the backup went, what was left out
        notice(request, sentence)
    notice(request, words.logged_in_sentence(report, signup))
    if report.sync is not None:
        notice(request, f"Relay: {report.sync.sentence()}")
        if report.sync.error:
            notice(request, f"Relay: {report.sync.error}")
    if recovery and recovery[0] is not None:
        return await _recovery_page(request, recovery[0])
    return redirect("/account")


async def _recovery_page(request: web.Request, key: account_recovery.RecoveryKey) -> web.Response:
    """The Account page with the recovery key, once: never stored, never cached."""
    data = await with_library(request, relay_account.status)
    response = _form(request, data, recovery=key)
    response.headers["Cache-Control"] = "no-store"
    return response


@routes.post("/account/recovery-key")
async def recovery_key(request: web.Request) -> web.StreamResponse:
    try:
        key = await with_library(request, account_recovery.make)
    except P2PSyncError as exc:
        notice(request, exc.message)
        return redirect("/account")
    return await _recovery_page(request, key)


@routes.post("/account/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    data = await with_library(request, relay_account.logout)
    notice(request, words.logged_out_sentence(data))
    if not data["relay_told"]:
        notice(request, words.RELAY_NOT_TOLD)
    return redirect("/account")


@routes.post("/account/reset")
async def reset(request: web.Request) -> web.StreamResponse:
    notice(request, await with_library(request, link_rules.reset))
    return redirect("/account")


@routes.get("/account/purge")
async def confirm_purge(request: web.Request) -> web.StreamResponse:
    info = await with_library(request, relay_account.account_info)
    return page(request, "account_purge.html", question=words.purge_question(info))


@routes.post("/account/purge")
async def purge(request: web.Request) -> web.StreamResponse:
    data = await with_library(request, relay_account.purge)
    notice(request, words.purged_sentence(data))
    return redirect("/account")
