"""The joining side of pairing over HTTPS (protocol/transport.md, "Pairing").

`p2psync pair CODE`: find the offer (mDNS, or a given address), run the SPAKE2 exchange of
crypto/pairing.py over TLS (recording the key the offering device showed in the handshake, which
the key confirmation then proves), decide how this library joins the other (as a copy when it is
empty, after the user agrees to a merge when it is not), and do the first sync pinned to that key.
"""

from __future__ import annotations

import base64
import binascii
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from p2psync.crypto.pairing import Pairing, PairingFailed, parse_code
from p2psync.engine.canonical import encode
from p2psync.errors import DiskFull, NetworkError, PeerRefused, ProtocolMismatch
from p2psync.model.devices import device_id_for
from p2psync.net import discovery, tls
from p2psync.net.client import (
    CONNECT_TIMEOUT,
    PeerSync,
    hello,
    network_errors,
    read_json,
    sync_with_peer,
    url_host,
)
from p2psync.net.pair_offer import PairingDeclined
from p2psync.net.protocol import DEFAULT_PORT, PREFIX, PROTOCOL_VERSION, VERSION_HEADER
from p2psync.net.worker import LibraryWorker
from p2psync.store import peers as peer_store
from p2psync.store import rebase
from p2psync.store.before_merge import trash_sentence
from p2psync.store.library import Library, device_name

FIND_SECONDS = 15.0  # how long to look for the offer on the LAN
DEFAULT_PAIR_PORT = 47626  # where `p2psync pair` listens unless told otherwise
STEP_TIMEOUT = 120.0  # one pairing request (the offering side may be making a backup)


@dataclass
class Offered:
    """What the offering device told us once the code had checked."""

    library_id: str
    library_name: str
    device_id: str
    device_name: str
    references: int
    groups: int
    attachments: int
    trash: int = 0  # of its references, those in its trash (0 from an older p2psync, which does not say)


# Decides a merge: given what this library brings and what the other offers, go ahead? (The
# command line asks at once; a page answers later, so the answer may be awaited.)
AskMerge = Callable[[rebase.Content, Offered], bool | Awaitable[bool]]


def merge_question(ours: rebase.Content, theirs: Offered) -> str:
    """What the user is asked before two libraries that both hold references are merged."""
    return (
        f"Both libraries hold references: this one {ours.references} ({ours.groups} groups, "
        f"{ours.attachments} attachments), '{theirs.library_name}' on {theirs.device_name} "
        f"{theirs.references} ({theirs.groups} groups, {theirs.attachments} attachments). "
        "Merge them into one library on both devices? Plainly identical references are merged, not doubled. "
        + trash_sentence(ours.trash, theirs.trash)
    )


# Called on this library before a merge changes it (a backup).
BeforeMerge = Callable[[Library], Any]


@dataclass
class JoinResult:
    mode: str  # replica (this library was empty), merge, or member (it was already one)
    offered: Offered
    address: str
    sync: PeerSync

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "library_id": self.offered.library_id,
            "library_name": self.offered.library_name,
            "peer": {"device": self.offered.device_id, "name": self.offered.device_name, "address": self.address},
            "first_sync": self.sync.as_dict(),
        }

    def sentences(self) -> list[str]:
        """What `p2psync pair CODE` and the pairing page say of it."""
        offered, sync = self.offered, self.sync
        said = [
            f"Paired with {offered.device_name} ({offered.device_id[:7]}) for library '{offered.library_name}': "
            f"{sync.received.applied} change sets in, {sync.sent_applied} out."
        ]
        if sync.merge is not None:
            merge = sync.merge
            said.append(f"Merged: {merge.added} references added, {len(merge.merged)} plainly identical ones merged.")
            if merge.to_review:
                said.append(
                    f"{len(merge.to_review)} look the same but differ in some field: both copies are in the group "
                    f"'{rebase.REVIEW_GROUP}'."
                )
        return said


async def find_offer(nameplate: int, interfaces: list[str] | None, timeout: float = FIND_SECONDS) -> tuple[str, int]:
    """The address of the device on the LAN offering pairing under `nameplate`."""
    peer = await discovery.find_pairing_offer(nameplate, interfaces, timeout)
    if peer is None or not peer.addresses:
        raise NetworkError(
            f"No device on this network offers pairing with code number {nameplate} (looked for {timeout:.0f} s). "
            "Check that 'p2psync pair' is still waiting there, or give its address with --address HOST:PORT."
        )
    return peer.addresses[0], peer.port


async def join(
    worker: LibraryWorker,
    code_text: str,
    host: str,
    port: int,
    ask_merge: AskMerge,
    before_merge: BeforeMerge | None = None,
    announce: Callable[[str], Awaitable[None] | None] | None = None,
) -> JoinResult:
    """Pair with the device offering `code_text` at host:port, then sync with it once."""
    code = parse_code(code_text)
    address = f"{host}:{port}"
    own_key, cert_files = await worker.call(
        lambda library: (
            library.identity().public_bytes,
            tls.certificate_files(library.identity(), worker.key_file, library.path),
        )
    )
    seen: list[bytes] = []
    confirmed: list[bytes] = []  # once the proofs have checked: the only key accepted from then on

    def observe(key: bytes) -> bool:
        seen.append(key)  # not trusted yet: the key confirmation proves the other side saw ours
        return key != own_key and (not confirmed or key == confirmed[0])

    context = tls.client_context(cert_files[0], cert_files[1], observe)
    base = f"https://{url_host(host)}:{port}"
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=STEP_TIMEOUT)
    pairing = Pairing(code, "join", own_key)
    with network_errors(address, context):
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=1),
            timeout=timeout,
            headers={VERSION_HEADER: str(PROTOCOL_VERSION)},
        ) as session:
            await hello(session, base)
            answer = await _post(session, base, "start", {"nameplate": code.nameplate, "message": pairing.start()})
            offer_key = seen[-1]
            confirmation = pairing.finish(_field(answer, "message"), offer_key)
            answer = await _post(session, base, "confirm", {"confirmation": confirmation})
            pairing.confirm(_field(answer, "confirmation"))
            offered = _offered(pairing.open(_field(answer, "payload")))
            confirmed.append(offer_key)
            if any(key != offer_key for key in seen):  # a new connection to another key midway: not the same device
                raise PairingFailed("The other device changed in the middle of pairing; start again with a new code.")
            if offered.device_id != device_id_for(offer_key):
                raise PairingFailed("The other device's id does not match its key; start again with a new code.")

            mode, ours = await worker.call(_mode, offered)
            try:
                agreed = mode != "merge" or await _answer(ask_merge(ours, offered))
            except BaseException:
                await _post(session, base, "cancel", {})  # the offering side stops at once, too
                raise
            if not agreed:
                await _post(session, base, "cancel", {})
                raise PairingDeclined("You declined the merge; nothing changed on either device.")
            try:
                await worker.call(_check_room, offered, ours)
            except DiskFull:
                await _post(session, base, "cancel", {})  # nothing changed here, nor there
                raise
            payload = {"device_name": device_name(), "mode": mode, "references": ours.references}
            await _post(session, base, "join", {"payload": pairing.seal(payload)})
            if mode == "merge" and before_merge is not None:
                await worker.call(before_merge)
            if mode != "member":
                await worker.call(peer_store.pin_join, offered.device_id, offer_key)
                await worker.call(rebase.rebase, offered.library_id, offered.library_name)
            if announce:
                await _maybe(announce("Paired; receiving the library..." if mode != "member" else "Paired; syncing..."))
            # The first sync, pinned to the key the code confirmed (this side does not have the
            # membership that names it until the pull has brought it).
            result = await sync_with_peer(worker, host, port, offered.device_id, pinned_key=offer_key)
            await worker.call(peer_store.record_seen, offered.device_id, f"{host}:{DEFAULT_PORT}")
            await _post(
                session,
                base,
                "done",
                {"received": result.received.applied, "sent": result.sent.get("applied", 0)}
                | ({"merge": result.merge.as_dict()} if result.merge else {}),
            )
    return JoinResult(mode, offered, address, result)


# What a received reference takes on disk, generously (about 2.8 KB measured for a 100,000-
# reference library, docs/performance.md), plus what the search index built beside a first sync
# holds until the sync ends (store/search_build.py: a copy of its fields text and its words,
# about 2.5 KB), and room kept beyond it for the log and indexes.
BYTES_PER_REFERENCE = 6144
ROOM_MARGIN = 16 * 1024 * 1024


def _check_room(library: Library, offered: Offered, ours: rebase.Content) -> None:
    """Refuse, before anything changes, to join a library this disk has no room for (its
    references, and ours set aside for the merge). Attachments come later, checked as they come."""
    need = (offered.references + ours.references) * BYTES_PER_REFERENCE + ROOM_MARGIN
    free = shutil.disk_usage(library.path).free
    if free < need:
        raise DiskFull(library.path, need - free)


def _mode(library: Library, offered: Offered) -> tuple[str, rebase.Content]:
    ours = rebase.content(library)
    if library.library_id == offered.library_id:
        return "member", ours
    return ("replica" if rebase.is_empty(library) else "merge"), ours


async def _answer(value: bool | Awaitable[bool]) -> bool:
    return value if isinstance(value, bool) else bool(await value)


async def _maybe(value: Awaitable[None] | None) -> None:
    if value is not None:
        await value


async def _post(session: aiohttp.ClientSession, base: str, step: str, body: dict[str, Any]) -> Any:
    wire = {k: base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v for k, v in body.items()}
    async with session.post(
        f"{base}{PREFIX}/pair/{step}", data=encode(wire), headers={"Content-Type": "application/json"}
    ) as response:
        if response.status >= 400:
            try:
                await read_json(response)
            except NetworkError as exc:
                raise _refusal(response.status, exc) from None
        return await read_json(response)


def _refusal(status: int, exc: NetworkError) -> NetworkError:
    message = exc.message.removeprefix("The peer refused: ")
    if status == 403:
        return PairingFailed(message)
    if isinstance(exc, ProtocolMismatch):
        return exc
    return PeerRefused(message)


def _field(body: Any, name: str) -> bytes:
    value = body.get(name) if isinstance(body, dict) else None
    try:
        if isinstance(value, str):
            return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pass
    raise ProtocolMismatch(f"The other device's pairing answer lacks a valid {name!r}; update p2psync on both.")


def _offered(payload: dict[str, Any]) -> Offered:
    try:
        offered = Offered(
            library_id=payload["library_id"],
            library_name=payload["library_name"],
            device_id=payload["device_id"],
            device_name=payload["device_name"],
            references=payload["references"],
            groups=payload["groups"],
            attachments=payload["attachments"],
            trash=payload.get("trash", 0),
        )
    except KeyError:
        raise ProtocolMismatch("The other device's pairing payload is incomplete; update p2psync on both.") from None
    strings = (offered.library_id, offered.library_name, offered.device_id, offered.device_name)
    numbers = (offered.references, offered.groups, offered.attachments, offered.trash)
    if not all(isinstance(s, str) and 0 < len(s) <= 200 for s in strings) or not all(
        type(n) is int and n >= 0 for n in numbers
    ):
        raise ProtocolMismatch("The other device's pairing payload is malformed; update p2psync on both.")
    return offered
