"""Pairing on the web: "Show a code" offers this library exactly as `p2psync pair` does (an
OfferSession served on a peer server of its own, the code good once until it expires), and "Type
a code to join" runs the same join as `p2psync pair CODE` (net/pair_join.join), with the same
merge question and the backup made before a merge. A pairing runs in the background; its page
learns the outcome by polling a small JSON state (static/devices.js), or by reloading.

The page looks for nothing on the LAN (no mDNS): the joining side gives the other's address, which
the offering page shows beside the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from p2psync.crypto.pairing import parse_code
from p2psync.errors import InvalidValue, NotFound, P2PSyncError
from p2psync.net.addresses import parse_address
from p2psync.net.pair_join import DEFAULT_PAIR_PORT, JoinResult, Offered, join, merge_question
from p2psync.net.pair_offer import OfferSession
from p2psync.node import Node
from p2psync.store import backup as backups
from p2psync.store import rebase
from p2psync.store.before_merge import BeforeMerge
from p2psync.web.app import page, redirect, state

routes = web.RouteTableDef()
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PAIR_PORT}"  # `p2psync pair`'s default
EXPIRIES = {"60": "1 minute", "300": "5 minutes", "600": "10 minutes", "1800": "30 minutes"}
DEFAULT_EXPIRY = "600"  # `p2psync pair --timeout 10m`
MAX_FIELD = 300  # a code or an address longer than this is no code or address


@dataclass
class Running:
    """One pairing under way or finished: what its page shows."""

    id: str
    kind: str  # offer | join
    state: str = "working"  # working | question | paired | failed
    said: list[str] = field(default_factory=list)
    code: str = ""
    address: str = ""
    expires_at: float = 0.0
    question: str = ""
    trash: int = 0  # the references in this library's trash, when the question is a merge's
    before: BeforeMerge | None = None  # what is done before the merge (the backup, the trash left out)
    answer: asyncio.Future[bool] | None = None
    session: OfferSession | None = None
    task: asyncio.Task[None] | None = None

    def as_dict(self) -> dict[str, Any]:
        left = max(0.0, self.expires_at - time.time()) if self.kind == "offer" else 0.0
        return {"state": self.state, "said": self.said, "question": self.question, "expires_in": round(left)}


@dataclass
class Pairings:
    """This app's pairings, newest last (a few are kept so that their pages can still say how they ended)."""

    items: dict[str, Running] = field(default_factory=dict)

    def add(self, kind: str) -> Running:
        busy = [r for r in self.items.values() if r.kind == kind and r.state in ("working", "question")]
        if busy:
            raise InvalidValue(
                "A pairing of this kind is already under way on this page; finish or cancel it first."
                if kind == "join"
                else "A code is already being shown; cancel it first or wait until it is used or expires."
            )
        running = Running(secrets.token_urlsafe(12), kind)
        self.items[running.id] = running
        while len(self.items) > 10:
            self.items.pop(next(iter(self.items)))
        return running

    def get(self, kind: str, pairing_id: str) -> Running:
        found = self.items.get(pairing_id)
        if found is None or found.kind != kind:
            raise NotFound("No such pairing here; it may have ended before this app restarted.")
        return found


_PAIRINGS: dict[int, Pairings] = {}  # per application (one per process in practice)


def pairings(request: web.Request) -> Pairings:
    return _PAIRINGS.setdefault(id(request.app), Pairings())


# --- showing a code ------------------------------------------------------------------------------


@routes.get("/pair")
async def pair_page(request: web.Request) -> web.StreamResponse:
    return _offer_form(request, DEFAULT_LISTEN, DEFAULT_EXPIRY, "")


def _offer_form(request: web.Request, listen: str, expiry: str, error: str, status: int = 200) -> web.Response:
    current = [r for r in pairings(request).items.values() if r.kind == "offer" and r.state == "working"]
    return page(
        request,
        "pair.html",
        status=status,
        listen=listen,
        expiry=expiry,
        expiries=EXPIRIES,
        listen_error=error,
        current=current[-1] if current else None,
    )


@routes.post("/pair/offer")
async def start_offer(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    listen = str(form.get("listen") or DEFAULT_LISTEN)[:MAX_FIELD].strip()
    expiry = str(form.get("expiry") or DEFAULT_EXPIRY)
    if expiry not in EXPIRIES:
        return _offer_form(request, listen, DEFAULT_EXPIRY, "Choose one of the offered times.", 400)
    try:
        where = parse_address(listen, DEFAULT_PAIR_PORT, allow_any_port=True)
        running = pairings(request).add("offer")
    except InvalidValue as exc:
        return _offer_form(request, listen, expiry, exc.message, 400)
    node = Node(state(request).library_path)  # its own peer server, as `p2psync pair` has
    session = OfferSession(
        node.worker, float(expiry), backups.BackupChoice()
    )  # (its trash stays: see store/before_merge.py)
    try:
        running.address = await session.open(
            lambda host, port, setup: node.serve(host, port, setup=setup), where.host, where.port
        )
    except (P2PSyncError, OSError) as exc:
        await node.close()
        pairings(request).items.pop(running.id, None)
        text = exc.message if isinstance(exc, P2PSyncError) else f"Cannot listen on {listen}: {exc.strerror or exc}."
        return _offer_form(request, listen, expiry, text, 400)
    running.session, running.code, running.expires_at = session, session.code, session.expires_at
    running.task = asyncio.get_running_loop().create_task(_offer_outcome(running, session, node))
    return redirect(f"/pair/offer/{running.id}")


async def _offer_outcome(running: Running, session: OfferSession, node: Node) -> None:
    try:
        outcome = await session.outcome()
    except P2PSyncError as exc:
        running.state, running.said = "failed", [exc.message]
    except Exception as exc:  # an unforeseen failure is still said, never left "working" forever
        running.state, running.said = "failed", [f"Pairing stopped: {exc}."]
    else:
        running.state, running.said = "paired", outcome.sentences()
    finally:
        await node.close()


@routes.get("/pair/offer/{id}")
async def offer_page(request: web.Request) -> web.StreamResponse:
    running = pairings(request).get("offer", request.match_info["id"])
    return page(request, "pair_offer.html", running=running)


@routes.get("/pair/offer/{id}/state")
async def offer_state(request: web.Request) -> web.StreamResponse:
    return web.json_response(pairings(request).get("offer", request.match_info["id"]).as_dict())


@routes.post("/pair/offer/{id}/cancel")
async def cancel_offer(request: web.Request) -> web.StreamResponse:
    running = pairings(request).get("offer", request.match_info["id"])
    if running.session is not None and running.state == "working":
        running.session.end()
        if running.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(running.task), 10)
    return redirect(f"/pair/offer/{running.id}")


# --- typing a code -------------------------------------------------------------------------------


@routes.get("/pair/join")
async def join_page(request: web.Request) -> web.StreamResponse:
    return page(request, "pair_join.html", code="", address="", backup=True, code_error="", address_error="")


@routes.post("/pair/join")
async def start_join(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    code, address = (str(form.get(name) or "")[:MAX_FIELD].strip() for name in ("code", "address"))
    backup = form.get("backup") == "yes"
    errors = {"code_error": "", "address_error": ""}
    try:
        parse_code(code)  # a typo is said before anything happens, as on the command line
    except InvalidValue as exc:
        errors["code_error"] = exc.message
    try:
        if not address:
            raise InvalidValue("Give the other device's address (HOST:PORT, shown beside its code).")
        target = parse_address(address, DEFAULT_PAIR_PORT)
    except InvalidValue as exc:
        errors["address_error"] = exc.message
    if any(errors.values()):
        return page(request, "pair_join.html", status=400, code=code, address=address, backup=backup, **errors)
    running = pairings(request).add("join")
    running.code, running.address = code, f"{target.host}:{target.port}"
    running.task = asyncio.get_running_loop().create_task(_join(request, running, target.host, target.port, backup))
    return redirect(f"/pair/join/{running.id}")


async def _join(request: web.Request, running: Running, host: str, port: int, backup: bool) -> None:
    worker = state(request).node.worker
    before = running.before = BeforeMerge(backups.BackupChoice(backup))

    async def ask_merge(ours: rebase.Content, theirs: Offered) -> bool:
        running.question, running.trash = merge_question(ours, theirs), ours.trash
        running.answer = asyncio.get_running_loop().create_future()
        running.state = "question"
        try:
            return await running.answer
        finally:
            running.state, running.answer = "working", None

    try:
        result: JoinResult = await join(worker, running.code, host, port, ask_merge, before)
        await worker.call(lambda library: library.refs.index_now())
    except P2PSyncError as exc:
        running.state, running.said = "failed", [exc.message]
    except Exception as exc:  # said, never left "working" forever
        running.state, running.said = "failed", [f"Pairing stopped: {exc}."]
    else:
        running.state, running.said = "paired", result.sentences()
        running.said += before.sentences()
        state(request).hub.publish("library")


@routes.get("/pair/join/{id}")
async def join_progress(request: web.Request) -> web.StreamResponse:
    running = pairings(request).get("join", request.match_info["id"])
    return page(request, "pair_join_progress.html", running=running)


@routes.get("/pair/join/{id}/state")
async def join_state(request: web.Request) -> web.StreamResponse:
    return web.json_response(pairings(request).get("join", request.match_info["id"]).as_dict())


@routes.post("/pair/join/{id}/answer")
async def answer(request: web.Request) -> web.StreamResponse:
    running = pairings(request).get("join", request.match_info["id"])
    form = await request.post()
    if running.answer is None or running.answer.done():
        raise InvalidValue("There is no question waiting for an answer in this pairing.")
    if running.before is not None:
        running.before.skip_trash = form.get("skip_trash") == "yes"
    running.answer.set_result(form.get("merge") == "yes")
    for _ in range(50):  # a moment for the answer to be acted on, so the next page says what followed
        if running.state != "working":
            break
        await asyncio.sleep(0.1)
    return redirect(f"/pair/join/{running.id}")
