"""The offering side of pairing over HTTPS (protocol/transport.md, "Pairing").

`p2psync pair` makes one `Offer` for one code and serves its endpoints next to the ordinary sync
endpoints (a joined device syncs with the same server right away). The code is good for one
attempt: anything that goes wrong after a device has started with it (a wrong code, a replayed
or out-of-order message, a device that goes quiet) burns it, so a guesser gets one guess per code.
Starting attempts is also rate-limited per address, and the caller ends the offer when it expires.

These endpoints are reachable without membership (the joining device is not a member yet): they
trust nothing until the SPAKE2 key confirmation has checked, and add the device only after that.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from p2psync.crypto.pairing import FAILED, Code, Pairing, PairingFailed, make_code, parse_code
from p2psync.errors import P2PSyncError, PeerRefused
from p2psync.net.interfaces import local_ipv4_addresses
from p2psync.net.protocol import DEFAULT_PORT, PREFIX
from p2psync.net.server import read_json, refuse
from p2psync.net.tls import peer_key
from p2psync.net.worker import LibraryWorker
from p2psync.store import peers as peer_store
from p2psync.store import rebase
from p2psync.store.library import Library

ATTEMPT_SECONDS = 60.0  # from start to confirm; a device that goes quiet in between burns the code
QUESTION_SECONDS = 600.0  # from confirm to join: the joining user may be asked whether to merge
STARTS_PER_MINUTE = 10  # per remote address
OFFER: web.AppKey[Offer] = web.AppKey("offer")


class PairingDeclined(PeerRefused):
    """The other side stopped the pairing on purpose (its user declined the merge)."""


@dataclass
class OfferOutcome:
    """A device joined: who, how, and what its first sync did (complete=False: it joined but did
    not report the end of its first sync before the offer ended; the next sync resumes)."""

    device: str
    name: str
    mode: str
    address: str
    complete: bool = False
    report: dict[str, Any] = field(default_factory=dict)

    def sentences(self) -> list[str]:
        """What `p2psync pair` and the pairing page say of it."""
        how = {"replica": "received a copy of this library", "merge": "merged its library into this one"}
        said = [f"Paired with {self.name} ({self.device[:7]}); it {how.get(self.mode, 'was already a member')}."]
        if self.complete:
            came, went = self.report.get("sent", 0), self.report.get("received", 0)  # the joiner's view
            said.append(f"First sync: {came} change sets came in, {went} went out.")
        else:
            said.append(
                "The first sync did not finish yet; it resumes with the next sync (p2psync sync or the daemon)."
            )
        return said

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "name": self.name,
            "mode": self.mode,
            "address": self.address,
            "complete": self.complete,
            "first_sync": self.report,
        }


class Offer:
    """One pairing code, waiting for one device."""

    def __init__(self, worker: LibraryWorker, code: str, backup: Callable[[Library], Any] | None = None) -> None:
        self.code: Code = parse_code(code)
        self.worker = worker
        self.backup = backup  # called on the library before a merge brings the other's references
        self.done: asyncio.Future[OfferOutcome] = asyncio.get_running_loop().create_future()
        self.joined: OfferOutcome | None = None
        self._state = "waiting"  # -> started -> confirmed -> joined -> over
        self._pairing: Pairing | None = None
        self._joiner: bytes | None = None
        self._confirmation = b""
        self._watchdog: asyncio.TimerHandle | None = None
        self._starts: dict[str, deque[float]] = {}

    def install(self, app: web.Application) -> None:
        app[OFFER] = self
        for step in ("start", "confirm", "join", "done", "cancel"):
            app.router.add_post(f"{PREFIX}/pair/{step}", getattr(self, f"_{step}"))

    def end(self) -> None:
        """The offer is over (expired, or the command stops): nothing more is accepted."""
        if self._state == "joined" and self.joined is not None and not self.done.done():
            self.done.set_result(self.joined)  # joined, first sync not reported: still a pairing
        self._finish(PairingFailed("The pairing code expired; start again with a new code."))

    # --- the steps ----------------------------------------------------------------------------

    async def _start(self, request: web.Request) -> web.Response:
        if self._state == "over":
            return _used()
        if not self._allow_start(request.remote or "?"):
            return refuse(429, "rate_limited", "Too many pairing attempts; wait a minute and start again.")
        body = await read_json(request)
        message = _bytes(body, "message")
        nameplate = body.get("nameplate") if isinstance(body, dict) else None
        if type(nameplate) is not int or nameplate != self.code.nameplate or message is None:
            return refuse(404, "no_offer", "No pairing offer with that code number here; check the code.")
        if self._state != "waiting":
            return refuse(409, "busy", "Another device is pairing with this code; start again with a new code.")
        key = _key(request)
        if key is None:
            return refuse(403, "certificate", "Pairing needs the device's certificate; use p2psync to pair.")
        own = await self.worker.call(lambda library: library.identity().public_bytes)
        self._pairing = Pairing(self.code, "offer", own)
        self._joiner = key
        self._state = "started"
        self._arm(ATTEMPT_SECONDS)
        try:
            ours = self._pairing.start()
            self._confirmation = self._pairing.finish(message, key)
        except PairingFailed as exc:
            return self._burn(exc)
        return web.json_response({"message": _text(ours)})

    async def _confirm(self, request: web.Request) -> web.Response:
        check = self._expect(request, "started")
        if check is not None:
            return check
        pairing = self._pairing
        assert pairing is not None
        self._state = "confirming"  # other requests meanwhile are out of order, and burn nothing
        confirmation = _bytes(await _body(request), "confirmation")
        if self._state != "confirming":
            return _used()  # the offer ended while the body arrived
        try:
            pairing.confirm(confirmation if confirmation is not None else b"")
        except PairingFailed as exc:
            return self._burn(exc)
        info = await self.worker.call(_offer_payload)
        if self._state != "confirming":
            return _used()
        payload = pairing.seal(info)
        self._state = "confirmed"
        self._arm(QUESTION_SECONDS)
        return web.json_response({"confirmation": _text(self._confirmation), "payload": _text(payload)})

    async def _join(self, request: web.Request) -> web.Response:
        check = self._expect(request, "confirmed")
        if check is not None:
            return check
        pairing, joiner = self._pairing, self._joiner
        assert pairing is not None and joiner is not None
        self._state = "joining"
        blob = _bytes(await _body(request), "payload")
        if self._state != "joining":
            return _used()
        try:
            info = pairing.open(blob if blob is not None else b"")
            name, mode = info.get("device_name"), info.get("mode")
            if not isinstance(name, str) or mode not in ("replica", "merge", "member"):
                raise PairingFailed("The other device sent a pairing payload this version cannot read; update p2psync.")
        except PairingFailed as exc:
            return self._burn(exc)
        if self._watchdog:
            self._watchdog.cancel()
        try:
            if mode == "merge" and self.backup is not None:
                await self.worker.call(self.backup)
            if self._state != "joining":
                return _used()  # the offer ended during the backup: admit nobody
            device = await self.worker.call(_admit, joiner, name, request.remote or "")
        except PeerRefused as exc:
            self._finish(exc)
            return refuse(403, "refused", exc.message)
        except (P2PSyncError, OSError) as exc:
            failure = P2PSyncError(
                f"Pairing stopped before anything changed here: {getattr(exc, 'message', None) or exc}."
            )
            self._finish(failure)
            return refuse(500, "failed", failure.message)
        self._state = "joined"
        self.joined = OfferOutcome(device, name, str(mode), request.remote or "")
        return web.json_response({"device": device})

    async def _done(self, request: web.Request) -> web.Response:
        check = self._expect(request, "joined")
        if check is not None:
            return check
        body = await read_json(request)
        assert self.joined is not None
        self.joined.complete = True
        self.joined.report = body if isinstance(body, dict) else {}
        self._state = "over"
        if not self.done.done():
            self.done.set_result(self.joined)
        return web.json_response({})

    async def _cancel(self, request: web.Request) -> web.Response:
        check = self._expect(request, "started", "confirmed")
        if check is not None:
            return check
        self._finish(PairingDeclined("The other device declined the pairing; nothing changed here."))
        return web.json_response({})

    # --- state --------------------------------------------------------------------------------

    def _expect(self, request: web.Request, *states: str) -> web.Response | None:
        """Only the device that started, and only in order; anything else (a replay, a second
        device) is refused, and burns the code if an attempt is under way."""
        if self._state not in states or _key(request) != self._joiner:
            if self._state in ("started", "confirmed"):
                return self._burn(PairingFailed(FAILED))
            if self._state == "over":
                return _used()
            return refuse(409, "out_of_order", "This pairing step is out of order; start again with a new code.")
        return None

    def _burn(self, exc: PairingFailed) -> web.Response:
        self._finish(exc)
        return refuse(403, "pairing_failed", FAILED)

    def _arm(self, seconds: float) -> None:
        if self._watchdog:
            self._watchdog.cancel()
        self._watchdog = asyncio.get_running_loop().call_later(seconds, self._went_quiet)

    def _went_quiet(self) -> None:
        if self._state in ("started", "confirmed"):
            self._finish(PairingFailed("The other device stopped answering during pairing; the code is used up."))

    def _finish(self, exc: Exception) -> None:
        self._state = "over"
        self._pairing = None
        if self._watchdog:
            self._watchdog.cancel()
        if not self.done.done():
            self.done.set_exception(exc)

    def _allow_start(self, remote: str) -> bool:
        now = time.monotonic()
        recent = self._starts.setdefault(remote, deque())
        while recent and now - recent[0] > 60:
            recent.popleft()
        recent.append(now)
        return len(recent) <= STARTS_PER_MINUTE


# Serves an offer's endpoints on a peer server and returns its port (Node.serve).
Serve = Callable[[str, int, Callable[[web.Application], None]], Awaitable[int]]


class OfferSession:
    """One code offered for a while: its Offer served on a peer server, ended by itself when the
    code expires. `p2psync pair` and the pairing page both offer through it."""

    def __init__(self, worker: LibraryWorker, seconds: float, backup: Callable[[Library], Any] | None = None) -> None:
        self.code = make_code()
        self.seconds = seconds
        self.offer = Offer(worker, self.code, backup)
        self.shown = ""  # the address to give the other device (HOST:PORT)
        self.port = 0
        self.expires_at = 0.0  # wall-clock seconds
        self._expiry: asyncio.TimerHandle | None = None

    async def open(self, serve: Serve, host: str, port: int) -> str:
        """Start listening (port 0: any free one) and the code's clock; return HOST:PORT to type."""
        self.port = await serve(host, port, self.offer.install)
        shown = host if host not in ("0.0.0.0", "::") else local_ipv4_addresses()[0]
        self.shown = f"{shown}:{self.port}"
        self.expires_at = time.time() + self.seconds
        self._expiry = asyncio.get_running_loop().call_later(self.seconds, self.offer.end)
        return self.shown

    async def outcome(self) -> OfferOutcome:
        """Wait for the pairing: its outcome, or the PairingFailed/PeerRefused that ended it."""
        try:
            return await self.offer.done
        finally:
            if self._expiry is not None:
                self._expiry.cancel()

    def end(self) -> None:
        self.offer.end()


def _used() -> web.Response:
    return refuse(410, "used", "This pairing code is used up or expired; start again with a new code.")


def _offer_payload(library: Library) -> dict[str, Any]:
    """What the joining device learns once the code has checked (never before)."""
    brings = rebase.content(library)
    return {
        "library_id": library.library_id,
        "library_name": library.name,
        "device_id": library.device_id,
        "device_name": library.members.this_name(),  # its name in the library (renamed, or the host's)
        **brings.as_dict(),
    }


def _admit(library: Library, key: bytes, name: str, remote: str) -> str:
    """Make the joining device a member (unless it already is one)."""
    members = {d["public_key"]: d for d in library.devices()}
    existing = members.get(base64.b64encode(key).decode("ascii"))
    if existing is not None:
        if existing["revoked"]:
            raise PeerRefused(
                "That device was removed from this library and cannot rejoin with the same key; "
                "on it, move the library folder away and pair again as a new device."
            )
        device = str(existing["device_id"])
    else:
        device = library.add_device(key, name)
    if remote:
        # Where its daemon will most likely listen; mDNS or its own syncs correct this.
        peer_store.record_seen(library, device, f"{remote}:{DEFAULT_PORT}")
    return device


async def _body(request: web.Request) -> Any:
    """The JSON body of a step, or None when it is not JSON (which then fails the step and burns
    the code, like any other bad message in the middle of an attempt)."""
    try:
        return await read_json(request)
    except web.HTTPException:
        return None


def _key(request: web.Request) -> bytes | None:
    return peer_key(request.transport.get_extra_info("ssl_object") if request.transport else None)


def _bytes(body: Any, name: str) -> bytes | None:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or len(value) > 200_000:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
