"""Syncing with one peer over HTTPS (the client side of protocol/transport.md).

One sync: seal local changes; exchange version vectors; pull what we lack (streamed, applied in
batches as it arrives); push what the peer lacks (streamed from the database). Each change set is
applied whole or not at all, so a sync cut at any point loses nothing and the next one resumes
from the version vectors. Foreign exceptions become p2psync errors here, at the boundary.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from p2psync.engine.canonical import encode, loads
from p2psync.engine.vectors import VersionVector
from p2psync.errors import (
    NetworkError,
    P2PSyncError,
    PeerRefused,
    PeerUnreachable,
    ProtocolMismatch,
    SelfConnection,
)
from p2psync.model.devices import device_id_for
from p2psync.net import frames, tls
from p2psync.net.protocol import (
    LIBRARY_HEADER,
    MAX_JSON_BYTES,
    PREFIX,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    VERSION_HEADER,
)
from p2psync.net.worker import LibraryWorker, receive_stream
from p2psync.store import bulk, rebase
from p2psync.store import peers as peer_store
from p2psync.store.library import Library
from p2psync.store.peers import member_keys
from p2psync.store.rebase import MergeReport
from p2psync.store.sync import ReceiveReport, changesets_since, seal, version_vector

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0  # between two pieces of a response; a stalled peer (a cut cable) is given up after this


@dataclass
class PeerSync:
    """What one sync with one peer did."""

    address: str
    device: str | None = None
    name: str | None = None
    received: ReceiveReport = field(default_factory=ReceiveReport)
    sent: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    merge: MergeReport | None = None  # when this sync completed joining another library (store/rebase.py)
    chunks_port: int | None = None  # where the peer serves attachment chunks from threads, if it said

    @property
    def sent_applied(self) -> int:
        """The change sets the peer applied of ours (`sent` is the peer's own answer to the push)."""
        return int(self.sent.get("applied", 0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "device": self.device,
            "name": self.name,
            "received": self.received.as_dict(),
            "sent": self.sent,
            "error": self.error,
            **({"merge": self.merge.as_dict()} if self.merge else {}),
        }


async def sync_with_peer(
    worker: LibraryWorker,
    host: str,
    port: int,
    device: str | None = None,
    listen_port: int | None = None,
    pinned_key: bytes | None = None,
) -> PeerSync:
    """Sync with the member device at host:port (or only with `device`, if given). Records the
    outcome for `status`; raises a NetworkError (after recording it) if the sync failed.

    `pinned_key`: accept exactly this server key, member here or not yet (the first sync after
    pairing, before this side has received the membership that names it)."""
    address = f"{host}:{port}"
    result = PeerSync(address)
    try:
        await _sync(worker, host, port, device, listen_port, pinned_key, result)
    except SelfConnection:
        if device is not None:  # an address remembered for another member now leads here: forget it
            await worker.call(peer_store.forget_address, device, address)
        raise
    except P2PSyncError as exc:
        result.error = exc.message
        if result.device or device:
            await worker.call(peer_store.record_error, result.device or device, address, exc.message)
        raise
    await worker.call(peer_store.record_success, result.device, address, result.received.applied, result.sent_applied)
    return result


async def _sync(
    worker: LibraryWorker,
    host: str,
    port: int,
    device: str | None,
    listen_port: int | None,
    pinned_key: bytes | None,
    result: PeerSync,
) -> None:
    keys, library_id, cert_files = await worker.call(_identity, worker)
    shown: list[bytes] = []  # the server keys seen in handshakes (accepted or not)

    def accept(key: bytes) -> bool:
        shown.append(key)
        if pinned_key is not None:
            return key == pinned_key
        return key in keys and keys[key] != library_device and (device is None or keys[key] == device)

    library_device = await worker.call(lambda library: library.device_id)
    context = tls.client_context(cert_files[0], cert_files[1], accept)
    context.p2psync_own = next((k for k, d in keys.items() if d == library_device), None)  # type: ignore[attr-defined]
    headers = {VERSION_HEADER: str(PROTOCOL_VERSION), LIBRARY_HEADER: library_id}
    base = f"https://{url_host(host)}:{port}"
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
    with network_errors(result.address, context):
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=1), timeout=timeout, headers=headers
        ) as session:
            await hello(session, base)
            # The server's key is checked in the handshake; learn which member it is.
            my_vv = await worker.call(lambda library: (seal(library), version_vector(library))[1])
            answer = await _post_json(session, base + PREFIX + "/vv", {"vv": my_vv, "port": listen_port})
            if (
                not isinstance(answer, dict)
                or not VersionVector.is_valid(answer.get("vv"))
                or not isinstance(answer.get("name", ""), str)
            ):
                raise ProtocolMismatch(f"The peer at {result.address} answered the version exchange wrongly.")
            # Who the server is follows from the key it proved, not from what it says.
            result.device, result.name = device_id_for(shown[-1]), answer.get("name")
            if answer.get("device") != result.device:
                raise ProtocolMismatch(f"The peer at {result.address} claims another device id than its key's.")
            chunks_port = answer.get("chunks_port")
            result.chunks_port = chunks_port if type(chunks_port) is int and 0 < chunks_port < 65536 else None
            theirs = answer.get("vv")
            if not isinstance(theirs, dict):
                raise ProtocolMismatch(f"The peer at {result.address} answered the version exchange wrongly.")
            await _pull(session, base, worker, my_vv, result, bulk.is_bulk(my_vv, theirs))
            # Content set aside when this library joined another is written back once the
            # other library has arrived, and so travels with this very push.
            result.merge = await worker.call(_finish_merge)
            result.sent = await _push(session, base, worker, theirs)


def _finish_merge(library: Library) -> MergeReport | None:
    report = rebase.finish_merge(library)
    if report is not None:
        seal(library)  # so that the push right after carries it
    return report


@contextlib.contextmanager
def network_errors(address: str, context: ssl.SSLContext) -> Iterator[None]:
    """aiohttp's and ssl's exceptions, in words (a NetworkError)."""
    try:
        yield
    except ssl.SSLError as exc:
        raise _tls_error(context, address, exc) from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ssl.SSLError) or isinstance(exc, aiohttp.ClientConnectorSSLError):
            raise _tls_error(context, address, exc) from None
        reason = exc.os_error.strerror or exc
        raise PeerUnreachable(f"Could not reach {address} ({reason}); is p2psync running there?") from None
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise PeerUnreachable(f"The connection to {address} broke off ({exc}); sync again to resume.") from None
    except TimeoutError:
        raise PeerUnreachable(f"{address} stopped answering; sync again to resume.") from None
    except aiohttp.ClientError as exc:
        raise NetworkError(f"Talking to {address} failed ({exc}).") from None


def _identity(library: Library, worker: LibraryWorker) -> tuple[dict[bytes, str], str, tuple[Any, Any]]:
    files = tls.certificate_files(library.identity(), worker.key_file, library.path)
    members = member_keys(library)
    return members | peer_store.join_pins(library, members), library.library_id, files


def _tls_error(context: ssl.SSLContext, address: str, exc: Exception) -> NetworkError:
    refused = getattr(context, "p2psync_refused", None)
    if refused is not None and refused == getattr(context, "p2psync_own", None):
        return SelfConnection(f"{address} is this device itself, not another member; nothing to sync there.")
    if refused is not None:
        return PeerRefused(
            f"The device at {address} ({device_id_for(refused)[:7]}) is not a member of this library; "
            "pair with it first (p2psync pair)."
        )
    return PeerRefused(f"The secure connection to {address} failed ({exc}); is it a p2psync device of this library?")


def url_host(host: str) -> str:
    """A host as it stands in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


async def hello(session: aiohttp.ClientSession, base: str) -> None:
    async with session.get(base + "/p2psync/hello") as response:
        body = await read_json(response)
    versions = body.get("versions") if isinstance(body, dict) else None
    if not isinstance(versions, list) or not any(v in SUPPORTED_VERSIONS for v in versions):
        raise ProtocolMismatch(
            f"The peer speaks p2psync protocol {versions}, this device {list(SUPPORTED_VERSIONS)}; "
            "update p2psync on the older machine."
        )


async def read_json(response: aiohttp.ClientResponse) -> Any:
    raw = b""
    while chunk := await response.content.read(64 * 1024):  # read() gives what has arrived so far
        raw += chunk
        if len(raw) > MAX_JSON_BYTES:
            raise ProtocolMismatch(f"The peer sent more than {MAX_JSON_BYTES} bytes of JSON; refused.")
    try:
        body = loads(raw)
    except ValueError:
        body = None
    if response.status >= 400:
        message = body.get("message") if isinstance(body, dict) else None
        code = body.get("error") if isinstance(body, dict) else None
        text = message or f"the peer answered {response.status}"
        if code == "protocol":
            raise ProtocolMismatch(text)
        if code in ("not_member", "library"):
            raise PeerRefused(text)
        raise NetworkError(f"The peer refused: {text}")
    if body is None:
        raise ProtocolMismatch("The peer sent something that is not JSON.")
    return body


async def _post_json(session: aiohttp.ClientSession, url: str, body: Any) -> Any:
    async with session.post(url, data=encode(body), headers={"Content-Type": "application/json"}) as response:
        return await read_json(response)


async def _pull(
    session: aiohttp.ClientSession,
    base: str,
    worker: LibraryWorker,
    my_vv: dict[str, int],
    result: PeerSync,
    is_bulk: bool = False,
) -> None:
    async with session.post(
        base + PREFIX + "/pull", data=encode({"vv": my_vv}), headers={"Content-Type": "application/json"}
    ) as response:
        if response.status >= 400:
            await read_json(response)
        chunks = response.content.iter_chunked(256 * 1024)
        ended = await receive_stream(worker, chunks, result.device or result.address, result.received, is_bulk)
    if not ended:
        raise PeerUnreachable(f"The stream from {result.address} was cut; sync again to resume.")


async def _push(
    session: aiohttp.ClientSession, base: str, worker: LibraryWorker, theirs: dict[str, int]
) -> dict[str, Any]:
    async def body() -> AsyncIterator[bytes]:
        wires = await worker.call(lambda library: changesets_since(library, theirs))
        while batch := await worker.next_batch(wires, 8):
            yield b"".join(frames.frame(w) for w in batch)
        yield frames.END

    async with session.post(
        base + PREFIX + "/push", data=body(), headers={"Content-Type": "application/x-p2psync-frames"}
    ) as response:
        answer = await read_json(response)
    return answer if isinstance(answer, dict) else {}
