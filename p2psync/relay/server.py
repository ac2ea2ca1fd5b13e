"""The relay's HTTP service (aiohttp): every endpoint of protocol/relay.md §3.

The relay stores and forwards ciphertext; all it checks is the shape of what it is given, who
is asking (a token) and the order of each device's change sets. Storage calls run one at a time
on a dedicated thread and scrypt on a small pool, so the event loop never blocks on a disk or a
hash. Every error answer is `{"error": CODE, "message": TEXT}`; each request is one JSON line on
stderr (time, method, path, status, ms, account), never a token, an e-mail or a body, and is
counted in the process's metrics (relay/metrics.py; /healthz and /metrics: relay/operations.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from aiohttp import web

from p2psync import __version__
from p2psync.engine.protocol_version import speaks
from p2psync.errors import Conflict, Refusal, RelayCode
from p2psync.model.devices import is_device_id
from p2psync.model.ids import ID_PATTERN
from p2psync.relay import passwords
from p2psync.relay.metrics import RelayMetrics
from p2psync.relay.requests import (
    CHUNK_ID,
    MAX_JSON_BYTES,
    MAX_SEQUENCE,
    b64_field,
    chunk_id,
    int_param,
    malformed,
    read_body,
    read_object,
    sequence,
)
from p2psync.relay.storage import (
    AlreadyBound,
    ChangeSetIn,
    EmailTaken,
    Gap,
    QuotaExceeded,
    RelayStorage,
)
from p2psync.relay.storage_keys import DeviceRevoked, EpochMoved, NotBound

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AuthedHandler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]

PREFIX = "/relay/v1"
HEALTH = PREFIX + "/health"
HEALTHZ = "/healthz"  # for load balancers and monitors: relay/operations.py
VERSION_HEADER = "P2PSync-Protocol"
SUPPORTED_VERSIONS = (1,)
MAX_CHUNK_BYTES = 1024 * 1024
PAGE_ITEMS = 256
PAGE_BYTES = 8 * 1024 * 1024
MAX_HAVE_IDS = 1024
MAX_WRAPPED_KEY = 1024  # 60 bytes in protocol 1 (nonce, key, tag); room for more, never unbounded
MAX_ENTRIES = 1000  # entries in one change set (changesets.md §11): last - first < MAX_ENTRIES
KEY_HEADER = "P2PSync-Key-Epoch"  # which epoch's library key a chunk needs (relay.md §5)
SHUTDOWN_SECONDS = 30.0  # how long a stop waits for requests in flight
SIGNUPS_PER_HOUR = 10  # accounts made from one client address in an hour (relay serve --signups-per-hour)
WRONG_LOGIN = "The e-mail address or the password is wrong."  # /login and a /signup to a taken address

log = logging.getLogger("p2psync.relay")


def answer(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


ERROR_CODE: web.ResponseKey[str] = web.ResponseKey("error_code", str)  # for the metrics' refusals_total


def error_answer(status: int, code: RelayCode, message: str, **extra: Any) -> web.Response:
    headers = {"Retry-After": str(extra["retry_after"])} if "retry_after" in extra else None
    response = answer({"error": code, "message": message, **extra}, status, headers)
    response[ERROR_CODE] = str(code)
    return response


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def log_line(**fields: Any) -> None:
    """One JSON line on the relay's log (stderr under `relay serve`), with the time first."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    log.info(json.dumps({"time": now, **fields}))


# --- the relay's state -------------------------------------------------------------------------


class KeyedLocks:
    """An asyncio lock per key (an e-mail, a client address), kept only while someone uses it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Relay:
    """What the handlers share: the storage (on its own thread), the hashing pool and settings."""

    def __init__(
        self,
        storage: RelayStorage,
        quota_bytes: int | None,
        token_seconds: float,
        trust_proxy: bool,
        clock: Callable[[], float],
        signups_per_hour: int = SIGNUPS_PER_HOUR,
    ) -> None:
        self.signups_per_hour = signups_per_hour
        self.storage = storage
        self.quota_bytes = quota_bytes
        self.token_seconds = token_seconds
        self.trust_proxy = trust_proxy
        self.clock = clock
        self.login_locks = KeyedLocks()
        self.metrics = RelayMetrics(type(storage).__name__.removesuffix("Storage").lower(), __version__)
        self.in_flight = 0  # requests being answered, for a graceful stop
        self.draining = False
        # SQLite: one thread; PostgreSQL: one per pooled connection (storage.workers)
        self._storage_thread = ThreadPoolExecutor(max_workers=storage.workers, thread_name_prefix="relay-storage")
        self._hashing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="relay-scrypt")  # 16 MiB each

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a storage call on a storage thread; its wait for the thread and its run are
        measured there and counted here, on the loop (the metrics are the loop's alone)."""
        queued = time.perf_counter()
        times = [queued, queued]

        def run() -> T:
            times[0] = time.perf_counter()
            try:
                return function(*args)
            finally:
                times[1] = time.perf_counter()

        outcome = "error"
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._storage_thread, run)
            outcome = "ok"
            return result
        except (Conflict, QuotaExceeded, DeviceRevoked):
            outcome = "refused"  # a rule said no (gap, quota, bound...): the storage worked
            raise
        finally:
            if times[1] > queued:  # it ran (a call cancelled while queued never does)
                name = getattr(function, "__name__", "call")
                self.metrics.storage_done(name, outcome, times[0] - queued, times[1] - times[0])

    async def hash(self, function: Callable[..., T], *args: Any) -> T:
        start = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._hashing, function, *args)
        finally:
            self.metrics.hash_done(time.perf_counter() - start)

    async def drain(self, timeout: float) -> None:
        """Wait until every request being answered is answered (or timeout); the answers given
        meanwhile close their connections, so keep-alive clients go away."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._hashing.shutdown, True)
        await loop.run_in_executor(None, self._storage_thread.shutdown, True)  # lets queued calls finish
        await loop.run_in_executor(None, self.storage.close)


RELAY: web.AppKey[Relay] = web.AppKey("relay", Relay)
ACCOUNT: web.RequestKey[str] = web.RequestKey("account", str)
TOKEN: web.RequestKey[bytes] = web.RequestKey("token", bytes)
DEVICE: web.RequestKey[str] = web.RequestKey("device", str)  # the token's device (set when it has one)


# --- middlewares -------------------------------------------------------------------------------


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One JSON line per request, whatever became of it; the count of requests in flight; and the
    request's place in the metrics (by route pattern: a path a client makes up is "unmatched")."""
    relay = request.app[RELAY]
    start = time.perf_counter()
    status = 499  # nginx's "client closed the request": the connection went away mid-answer
    sent = 0
    relay.in_flight += 1
    try:
        response = await handler(request)
        status = response.status
        sent = response.content_length or 0
        if code := response.get(ERROR_CODE):
            relay.metrics.refused(code)
        if relay.draining:
            response.force_close()
        return response
    finally:
        relay.in_flight -= 1
        seconds = time.perf_counter() - start
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        relay.metrics.request_done(route, request.method, status, seconds, request.content.total_bytes, sent)
        log_line(
            method=request.method,
            path=request.path[:200],
            status=status,
            ms=round(seconds * 1000, 1),
            account=request.get(ACCOUNT),
        )


@web.middleware
async def errors_to_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is a JSON body, aiohttp's own 404, 405 and 413 included."""
    try:
        return await handler(request)
    except Refusal as exc:
        return error_answer(exc.status, exc.code, exc.message, **exc.extra)
    except Gap as exc:
        return error_answer(409, RelayCode.GAP, exc.message, device=exc.device, head=exc.head)
    except QuotaExceeded as exc:
        return error_answer(
            507,
            RelayCode.QUOTA_EXCEEDED,
            exc.message,
            used_bytes=exc.used,
            quota_bytes=exc.quota,
            needed_bytes=exc.needed,
        )
    except AlreadyBound as exc:
        return error_answer(409, RelayCode.BOUND, exc.message, library_id=exc.library_id)
    except EmailTaken as exc:
        return error_answer(409, RelayCode.EMAIL_TAKEN, exc.message)
    except DeviceRevoked as exc:
        return error_answer(403, RelayCode.DEVICE_REVOKED, exc.message, device=exc.device, by=exc.by)
    except EpochMoved as exc:
        return error_answer(409, RelayCode.KEY_EPOCH, exc.message, key_epoch=exc.current)
    except NotBound as exc:
        return error_answer(409, RelayCode.NOT_BOUND, exc.message)
    except web.HTTPNotFound:
        return error_answer(404, RelayCode.NOT_FOUND, f"There is no {request.path[:200]} on this relay.")
    except web.HTTPMethodNotAllowed:
        return error_answer(405, RelayCode.METHOD, f"{request.method} is not allowed on {request.path[:200]}.")
    except web.HTTPRequestEntityTooLarge:
        return error_answer(413, RelayCode.TOO_LARGE, f"A request body is at most {MAX_JSON_BYTES} bytes.")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = RelayCode.MALFORMED if exc.status < 500 else RelayCode.INTERNAL
        return error_answer(exc.status, code, exc.reason or "The request was refused.")
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path[:200])
        return error_answer(
            500, RelayCode.INTERNAL, "The relay failed to answer (an internal error, logged there); try again."
        )


@web.middleware
async def protocol_version(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in (HEALTH, HEALTHZ):
        return await handler(request)
    version = request.headers.get(VERSION_HEADER, "").strip()
    if not speaks(version, SUPPORTED_VERSIONS):
        raise Refusal(
            400,
            RelayCode.PROTOCOL,
            f"This relay speaks p2psync protocol {', '.join(map(str, SUPPORTED_VERSIONS))}; the request used "
            f"{version[:20] or 'none'} (header {VERSION_HEADER}). Update p2psync.",
            supported=list(SUPPORTED_VERSIONS),
        )
    return await handler(request)


def authed(handler: AuthedHandler) -> Handler:
    """The handler runs only with a valid token tied to a device that was not removed (relay.md
    §5), and learns its account (request[DEVICE]: the device)."""
    return _authed(handler, need_device=True)


def authed_any(handler: AuthedHandler) -> Handler:
    """As authed, but a token made before tokens were tied to devices passes too (it may only see
    the account, tie itself to a device, log out or change the password)."""
    return _authed(handler, need_device=False)


def _authed(handler: AuthedHandler, need_device: bool) -> Handler:
    async def check(request: web.Request) -> web.StreamResponse:
        relay = request.app[RELAY]
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not passwords.is_token(token):
            raise Refusal(401, RelayCode.AUTH_FAILED, "This request needs a valid token (Authorization: Bearer TOKEN).")
        digest = passwords.token_hash(token)
        found = await relay.call(relay.storage.token_session, digest)
        if found is None:
            raise Refusal(401, RelayCode.AUTH_FAILED, "This token is not valid (logged out, or the password changed).")
        if relay.clock() >= found.expires:
            raise Refusal(401, RelayCode.TOKEN_EXPIRED, "This token has expired; log in again.")
        request[ACCOUNT] = found.account
        request[TOKEN] = digest
        if found.device is not None and found.revoked_by is not None:
            raise DeviceRevoked(found.device, found.revoked_by)
        if found.device is not None:
            request[DEVICE] = found.device
        elif need_device:
            raise Refusal(
                403,
                RelayCode.DEVICE_REQUIRED,
                "This login is not tied to a device (it was made before this relay version); tie it with "
                "POST /device or log in again.",
            )
        return await handler(request, found.account)

    return check


# --- endpoints ---------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    await relay.call(relay.storage.ping)
    return answer({"ok": True, "protocol": list(SUPPORTED_VERSIONS)})


@authed
async def bind(request: web.Request, account: str) -> web.Response:
    relay = request.app[RELAY]
    body = await read_object(request)
    library_id = body.get("library_id")
    if not isinstance(library_id, str) or ID_PATTERN.fullmatch(library_id) is None:
        raise malformed("'library_id' must be a library id (16 characters a-z and 2-7).")
    wrapped = b64_field(body, "wrapped_key", 1, MAX_WRAPPED_KEY)
    return answer({"bound": await relay.call(relay.storage.bind, account, library_id, wrapped)})


@authed
async def purge(request: web.Request, account: str) -> web.Response:
    relay = request.app[RELAY]
    done = await relay.call(relay.storage.purge, account)
    return answer({"change_sets": done.change_sets, "chunks": done.chunks, "bytes": done.bytes})


@authed
async def state(request: web.Request, account: str) -> web.Response:
    relay = request.app[RELAY]
    heads, last_num = await relay.call(relay.storage.state, account)
    return answer({"heads": heads, "last_num": last_num})


@authed
async def pull(request: web.Request, account: str) -> web.Response:
    relay = request.app[RELAY]
    after = int_param(request, "after", 0, 0, MAX_SEQUENCE)
    limit = int_param(request, "limit", PAGE_ITEMS, 1, PAGE_ITEMS)

    def pull_page() -> bytes:  # on the storage thread: reading and encoding 8 MiB is no work for the loop
        items, more = relay.storage.pull(account, after, limit, PAGE_BYTES)
        return orjson.dumps(
            {
                "items": [
                    {
                        "num": i.num,
                        "device": i.device,
                        "first": i.first,
                        "last": i.last,
                        "key": i.key_epoch,
                        "blob": base64.b64encode(i.blob).decode("ascii"),
                    }
                    for i in items
                ],
                "more": more,
            }
        )

    return web.Response(body=await relay.call(pull_page), content_type="application/json")


def _change_sets(body: dict[str, Any]) -> list[ChangeSetIn]:
    items = body.get("items")
    if not isinstance(items, list):
        raise malformed("'items' must be a list of change sets.")
    out: list[ChangeSetIn] = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise malformed(f"Item {n} must be an object with device, first, last and blob.")
        device: Any = item.get("device")
        first: Any = item.get("first")
        last: Any = item.get("last")
        if not is_device_id(device):
            raise malformed(f"Item {n}: 'device' must be a device id.")
        if not (sequence(first) and sequence(last) and first <= last):
            raise malformed(f"Item {n}: 'first' and 'last' must be whole numbers with 1 <= first <= last.")
        if last - first >= MAX_ENTRIES:  # a change set holds at most 1,000 entries, one sequence number each
            raise malformed(f"Item {n}: a change set spans at most {MAX_ENTRIES} sequence numbers.")
        key_epoch: Any = item.get("key", 0)
        if not (type(key_epoch) is int and 0 <= key_epoch <= MAX_SEQUENCE):
            raise malformed(f"Item {n}: 'key' must be the epoch of the library key (a whole number).")
        out.append(ChangeSetIn(device, first, last, b64_field(item, "blob", 1, MAX_JSON_BYTES), key_epoch))
    return out


@authed
async def push(request: web.Request, account: str) -> web.Response:
    relay = request.app[RELAY]
    items = _change_sets(await read_object(request))
    for item in items:  # a device stores its own change sets only (relay.md §5.2)
        if item.device != request[DEVICE]:
            raise Refusal(
                403,
                RelayCode.WRONG_DEVICE,
                f"A device stores only its own change sets; this token is {request[DEVICE]}'s, not {item.device}'s; "
                "nothing of this request was stored.",
            )
    done = await relay.call(relay.storage.push, account, items, relay.quota_bytes)
    return answer({"stored": done.stored, "duplicates": done.duplicates})


@authed
async def have(request: web.Request, account: str) -> web.Response:
    relay = request.app[RELAY]
    ids = (await read_object(request)).get("ids")
    if not isinstance(ids, list) or not (1 <= len(ids) <= MAX_HAVE_IDS):
        raise malformed(f"'ids' must be a list of 1 to {MAX_HAVE_IDS} chunk ids.")
    if not all(isinstance(i, str) and CHUNK_ID.fullmatch(i) for i in ids):
        raise malformed("A chunk id is 64 lower-case hexadecimal characters.")
    return answer({"have": await relay.call(relay.storage.have_chunks, account, ids)})


@authed
async def put_chunk(request: web.Request, account: str) -> web.Response:
    relay = request.app[RELAY]
    cid = chunk_id(request)
    blob = await read_body(request, MAX_CHUNK_BYTES)
    if not blob:
        raise malformed("A chunk's body is its blob, at least 1 byte.")
    text = request.headers.get(KEY_HEADER, "0").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 16):
        raise malformed(f"{KEY_HEADER} must be the epoch of the library key (a whole number).")
    stored = await relay.call(relay.storage.put_chunk, account, cid, blob, relay.quota_bytes, int(text))
    return web.Response(status=201 if stored else 200)


@authed
async def get_chunk(request: web.Request, account: str) -> web.Response:
    relay = request.app[RELAY]
    found = await relay.call(relay.storage.get_chunk, account, chunk_id(request))
    if found is None:
        raise Refusal(404, RelayCode.NOT_FOUND, "This account has no chunk with this id.")
    blob, key_epoch = found
    return web.Response(body=blob, content_type="application/octet-stream", headers={KEY_HEADER: str(key_epoch)})


# --- the application and the process -----------------------------------------------------------


def make_app(
    storage: RelayStorage,
    quota_bytes: int | None,
    *,
    token_seconds: float = passwords.TOKEN_SECONDS,
    trust_proxy: bool = False,
    clock: Callable[[], float] = time.time,
    signups_per_hour: int = SIGNUPS_PER_HOUR,
) -> web.Application:
    """The relay's application. It owns `storage` from now on: the app's cleanup closes it."""
    from p2psync.relay import (  # they build on this module's helpers
        account_api,
        account_recovery_api,
        device_api,
        operations,
    )

    app = web.Application(
        middlewares=[access_log, errors_to_json, protocol_version],
        client_max_size=MAX_JSON_BYTES,
    )
    relay = Relay(storage, quota_bytes, token_seconds, trust_proxy, clock, signups_per_hour)
    app[RELAY] = relay

    async def close(_app: web.Application) -> None:
        await relay.close()

    app.on_cleanup.append(close)
    routes = [
        ("GET", "/health", health),
        ("POST", "/prelogin", account_api.prelogin),
        ("POST", "/signup", account_api.signup),
        ("POST", "/login", account_api.login),
        ("POST", "/logout", account_api.logout),
        ("GET", "/account", account_api.account_info),
        ("POST", "/password", account_api.password),
        ("POST", "/kdf", account_api.upgrade_kdf),
        ("POST", "/bind", bind),
        ("POST", "/purge", purge),
        ("GET", "/state", state),
        ("GET", "/changesets", pull),
        ("POST", "/changesets", push),
        ("POST", "/chunks/have", have),
        ("PUT", "/chunks/{id}", put_chunk),
        ("GET", "/chunks/{id}", get_chunk),
        *device_api.ROUTES,
        *account_recovery_api.ROUTES,
    ]
    for method, path, handler in routes:
        app.router.add_route(method, PREFIX + path, handler)
    app.router.add_get(HEALTHZ, operations.healthz)
    return app
