"""The peer server (aiohttp): what a device answers to other devices of its library.

Every endpoint but /p2psync/hello and the pairing endpoints requires a TLS client certificate
whose key is a current member's; the protocol version travels in a header on every request.
Bodies are bounded; change sets stream in and out one frame at a time. See protocol/transport.md.
Connections reach aiohttp through the gate (net/gate.py: deadlines, a cap on strangers), which
these handlers keep told of each request and of what its key proved.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from p2psync.engine.canonical import encode, loads
from p2psync.engine.protocol_version import speaks
from p2psync.engine.vectors import VersionVector
from p2psync.errors import InvalidValue, NetworkError, P2PSyncError, ProtocolMismatch
from p2psync.net import frames
from p2psync.net.chunk_serving import serve_chunks
from p2psync.net.gate import HANDLER_LIMITS, Gate, GatedSite, unverified_cap
from p2psync.net.protocol import (
    LIBRARY_HEADER,
    MAX_JSON_BYTES,
    PREFIX,
    SUPPORTED_VERSIONS,
    VERSION_HEADER,
    error_body,
)
from p2psync.net.tls import peer_key
from p2psync.net.worker import LibraryWorker, receive_stream
from p2psync.store import peers as peer_store
from p2psync.store.library import Library
from p2psync.store.peers import member_keys
from p2psync.store.sync import ReceiveReport, changesets_since, seal, version_vector

log = logging.getLogger("p2psync.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WORKER: web.AppKey[LibraryWorker] = web.AppKey("worker", LibraryWorker)
PEER: web.RequestKey[str] = web.RequestKey("peer", str)
ON_CHANGE: web.AppKey[Callable[[], None]] = web.AppKey("on_change", Callable[[], None])  # type: ignore[arg-type]
GATE: web.AppKey[Gate] = web.AppKey("gate", Gate)
CHUNKS_PORT: web.AppKey[list[int]] = web.AppKey("chunks_port", list[int])  # (empty: no chunk listener)


def refuse(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response(error_body(code, message, **extra), status=status)


def _json_error(code: str, message: str) -> dict[str, Any]:
    """The keyword arguments that give an aiohttp HTTP error the protocol's JSON error body."""
    return {"text": encode(error_body(code, message)).decode("utf-8"), "content_type": "application/json"}


@web.middleware
async def checks(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Version, library and membership, before any handler runs."""
    if request.path == "/p2psync/hello":
        return await handler(request)
    version = request.headers.get(VERSION_HEADER, "").strip()
    if not speaks(version, SUPPORTED_VERSIONS):
        return refuse(
            400,
            "protocol",
            f"The device you reached speaks p2psync protocol {', '.join(map(str, SUPPORTED_VERSIONS))}; "
            f"the request used {version or 'none'}. Update p2psync on the older machine.",
            supported=list(SUPPORTED_VERSIONS),
        )
    if request.path.startswith(PREFIX + "/pair/"):
        return await handler(request)
    worker = request.app[WORKER]
    key = peer_key(request.transport.get_extra_info("ssl_object") if request.transport else None)
    gate = request.app.get(GATE)
    member = False
    if key is not None:  # (no certificate: refused without a trip to the library's thread)
        members, own = await worker.call(lambda library: (member_keys(library), library.device_id))
        member = key in members and members[key] != own
        if gate is not None:
            gate.members = frozenset(k for k, device in members.items() if device != own)
    if gate is not None:
        gate.verified(request.transport, member)
    if key is None or not member:
        return refuse(403, "not_member", "This device is not a member of the library here; pair it first.")
    library_id = await worker.call(lambda library: library.library_id)
    if request.headers.get(LIBRARY_HEADER) != library_id:
        return refuse(409, "library", "This device syncs a different library.")
    request[PEER] = members[key]
    return await handler(request)


async def hello(request: web.Request) -> web.Response:
    """Version negotiation: which protocol versions this device speaks. Nothing else (an unpaired
    machine learns nothing about the library)."""
    return web.json_response({"p2psync": True, "versions": list(SUPPORTED_VERSIONS)})


async def read_json(request: web.Request) -> Any:
    if request.content_length is None or request.content_length > MAX_JSON_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_JSON_BYTES,
            actual_size=request.content_length or 0,
            **_json_error("too_large", f"A request body is at most {MAX_JSON_BYTES} bytes of JSON."),
        )
    try:
        return loads(await request.read())
    except ValueError:
        raise web.HTTPBadRequest(**_json_error("malformed", "The request body is not JSON.")) from None


def _vector(value: Any) -> VersionVector:
    try:
        return VersionVector.parse(value)
    except InvalidValue as exc:
        raise web.HTTPBadRequest(**_json_error("malformed", exc.message)) from None


async def exchange_vectors(request: web.Request) -> web.Response:
    """The first step of a sync: the peer's version vector in, ours out."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(**_json_error("malformed", "Expected a JSON object."))
    _vector(body.get("vv"))
    worker = request.app[WORKER]
    port = body.get("port")
    if type(port) is int and 0 < port < 65536 and request.remote:
        # The peer runs a server too: remember where, so this side can sync with it later.
        await worker.call(peer_store.record_seen, request[PEER], f"{request.remote}:{port}")

    def ours(library: Library) -> dict[str, Any]:
        seal(library)
        return {"vv": version_vector(library), "device": library.device_id, "name": library.members.this_name()}

    answer = await worker.call(ours)
    if chunks_port := request.app[CHUNKS_PORT]:  # where /chunks is served from threads (net/chunk_server.py)
        answer["chunks_port"] = chunks_port[0]
    return web.json_response(answer)


async def pull(request: web.Request) -> web.StreamResponse:
    """Stream the change sets the peer lacks, oldest first, a few at a time from the database."""
    body = await read_json(request)
    theirs = _vector(body.get("vv") if isinstance(body, dict) else None)
    worker = request.app[WORKER]
    response = web.StreamResponse(headers={"Content-Type": "application/x-p2psync-frames"})
    await response.prepare(request)
    wires = await worker.call(lambda library: changesets_since(library, theirs))
    sent = 0
    try:
        while batch := await worker.next_batch(wires, 8):
            for wire in batch:
                await response.write(frames.frame(wire))
            sent += len(batch)
        await response.write(frames.END)
        await response.write_eof()
    except ConnectionResetError:  # the peer left mid-stream (it resumes from its vector next time)
        log.debug("a peer left while pulling change sets (%d sent)", sent)
        return response
    await worker.call(peer_store.record_success, request[PEER], None, None, sent)  # for `status`, on this side too
    return response


async def push(request: web.Request) -> web.Response:
    """Receive the change sets the peer sends, applying them in batches as they arrive; a cut
    stream keeps what was whole (each change set is applied whole or not at all)."""
    total = ReceiveReport()
    try:
        ended = await receive_stream(
            request.app[WORKER], request.content.iter_chunked(256 * 1024), request[PEER], total
        )
    except ProtocolMismatch as exc:
        return refuse(400, "frames", exc.message)
    if not ended:
        return refuse(400, "frames", "The change-set stream ended before its end mark.")
    await request.app[WORKER].call(peer_store.record_success, request[PEER], None, total.applied, None)
    if total.applied:
        request.app[ON_CHANGE]()
    return web.json_response(total.as_dict())


async def chunks(request: web.Request) -> web.StreamResponse:
    """Attachment chunks by name (protocol/attachments.md section 4)."""
    return await serve_chunks(request, request.app[WORKER], await read_json(request))


@web.middleware
async def gated(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The gate's deadline for an idle connection does not run while a request is answered."""
    gate = request.app.get(GATE)
    if gate is None:
        return await handler(request)
    transport = request.transport
    gate.request_started(transport)
    try:
        return await handler(request)
    finally:
        gate.request_ended(transport)


async def errors_to_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is a JSON body, aiohttp's own 404 and 405 included."""
    try:
        return await handler(request)
    except P2PSyncError as exc:
        return refuse(500, "failed", exc.message)
    except web.HTTPNotFound:
        if request.path.startswith(PREFIX + "/pair/"):
            return refuse(404, "no_offer", "This device is not offering pairing now; run 'p2psync pair' there first.")
        return refuse(404, "not_found", f"There is no {request.path} here.")
    except web.HTTPMethodNotAllowed:
        return refuse(405, "method", f"{request.method} is not allowed on {request.path}.")
    except web.HTTPException:
        raise  # already an answer (with a JSON body where p2psync raised it)
    except Exception:
        log.exception("unexpected error answering %s", request.path)
        return refuse(500, "internal", "This device failed to answer (an internal error, logged there); try again.")


def make_app(
    worker: LibraryWorker,
    on_change: Callable[[], None] = lambda: None,
    setup: Callable[[web.Application], None] | None = None,
) -> web.Application:
    """The peer server's application; `setup` may add routes (pairing adds its endpoints)."""
    app = web.Application(middlewares=[gated, web.middleware(errors_to_json), checks], client_max_size=MAX_JSON_BYTES)
    app[WORKER] = worker
    app[ON_CHANGE] = on_change
    app[CHUNKS_PORT] = []
    app.router.add_get("/p2psync/hello", hello)
    app.router.add_post(PREFIX + "/vv", exchange_vectors)
    app.router.add_post(PREFIX + "/pull", pull)
    app.router.add_post(PREFIX + "/push", push)
    app.router.add_post(PREFIX + "/chunks", chunks)
    if setup is not None:
        setup(app)
    return app


async def listen(app: web.Application, host: str, port: int, context: ssl.SSLContext) -> tuple[web.AppRunner, int]:
    """Serve `app` (from make_app) at host:port behind the gate; returns the runner (its cleanup()
    stops everything) and the port listened on."""
    gate = Gate(context, unverified_cap())
    app[GATE] = gate
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0, **HANDLER_LIMITS)
    await runner.setup()
    members, own = await app[WORKER].call(lambda library: (member_keys(library), library.device_id))
    gate.members = frozenset(k for k, device in members.items() if device != own)
    site = GatedSite(runner, gate, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise NetworkError(
            f"Cannot listen on {host}:{port} ({exc.strerror}); choose another with --listen HOST:PORT."
        ) from None
    return runner, site.port
