"""The relay's endpoints for devices and key epochs (protocol/relay.md §5): POST /device,
GET /devices, POST /revoke, GET /keys, POST /keys, POST /keys/account; and tie_device, which
/login and /signup use to tie a new token to the device that proves its key.

Who may do what. Every token is tied to one device, which proved its Ed25519 key when it logged
in; a change set is stored only from its own device (server.py push). A device may revoke any
other device of its account, never itself, and only while it is not revoked itself: a device
once revoked is refused everything, at once and for good (its tokens answer 403 device_revoked,
it cannot log in again as itself). The relay cannot read the library, so it cannot check that a
revocation matches a `device.revoke` there; it keeps the revoker's signature so that every member
can (relay/keys.py checks each against its library and reports those the library does not hold).
Any device may put a new key epoch in force, signed by it; the relay checks only the signature
and the number, and keeps no copy of the new key for a revoked device.
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from p2psync.errors import Refusal, RelayCode
from p2psync.model.devices import is_device_id
from p2psync.relay import keyring
from p2psync.relay.requests import MAX_SEQUENCE, b64_field, malformed, read_object
from p2psync.relay.server import (
    DEVICE,
    MAX_WRAPPED_KEY,
    RELAY,
    TOKEN,
    Relay,
    answer,
    authed,
    authed_any,
)
from p2psync.relay.storage_keys import DeviceRecord, EpochRecord

MAX_SEALED = 64  # copies of a new key in one rotation: one per member device
CHECK_BYTES = 32


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_SEQUENCE


async def tie_device(relay: Relay, account: str, value: Any, email: str) -> str:
    """Check a device proof (relay.md §5.1), keep it, and return the device id; 403 device_revoked
    if that device was removed from the account's library."""
    try:
        proof = keyring.parse_proof(value)
    except keyring.ProofError as exc:
        raise malformed(str(exc)) from None
    now = relay.clock()
    if abs(proof.time - now) > keyring.PROOF_SECONDS:
        raise Refusal(
            400,
            RelayCode.CLOCK,
            "The device's clock is more than an hour away from the relay's; set the clock right and log in again.",
        )
    if not proof.verifies(email):
        raise Refusal(400, RelayCode.MALFORMED, "The device proof's signature does not verify with its key.")
    record = DeviceRecord(proof.device, proof.public_key, proof.agreement_key, proof.time, proof.signature, now)
    await relay.call(relay.storage.register_device, account, record)
    return proof.device


@authed_any
async def tie(request: web.Request, account: str) -> web.Response:
    """POST /device: tie a token made before devices existed to the device that proves its key."""
    relay = request.app[RELAY]
    body = await read_object(request)
    info = await relay.call(relay.storage.account_info, account)
    device = await tie_device(relay, account, body.get("device"), info.email)
    if not await relay.call(relay.storage.tie_token, request[TOKEN], device):
        raise Refusal(409, RelayCode.DEVICE_TIED, "This token is tied to another device; log in again.")
    return answer({"device": device})


@authed
async def devices(request: web.Request, account: str) -> web.Response:
    relay = request.app[RELAY]
    known, revocations = await relay.call(relay.storage.devices, account)
    return answer(
        {
            "devices": [
                {
                    "device": d.device,
                    "key": _b64(d.public_key),
                    "agreement_key": _b64(d.agreement_key),
                    "time": d.proof_time,
                    "signature": _b64(d.proof_signature),
                }
                for d in known
            ],
            "revoked": [
                {"device": r.device, "by": r.by, "upto": r.upto, "signature": _b64(r.signature)} for r in revocations
            ],
        }
    )


async def _bound_library(request: web.Request, account: str) -> str:
    relay = request.app[RELAY]
    info = await relay.call(relay.storage.account_info, account)
    if info.library_id is None:
        raise Refusal(409, RelayCode.NOT_BOUND, "The account holds no library.")
    return info.library_id


async def _signer_key(request: web.Request, account: str) -> bytes:
    relay = request.app[RELAY]
    key = await relay.call(relay.storage.public_key, account, request[DEVICE])
    if key is None:  # a token tied by an older proof: cannot happen, every tie keeps the proof
        raise Refusal(403, RelayCode.DEVICE_REQUIRED, "This device has not proved its key here; log in again.")
    return key


@authed
async def revoke(request: web.Request, account: str) -> web.Response:
    """POST /revoke: cut a device off the account, at the word of another device (signed)."""
    relay = request.app[RELAY]
    body = await read_object(request)
    device: Any = body.get("device")
    upto: Any = body.get("upto")
    if not is_device_id(device) or not _count(upto):
        raise malformed("'device' must be a device id and 'upto' a sequence number (0 or more).")
    signature = b64_field(body, "signature", 64, 64)
    if device == request[DEVICE]:
        raise Refusal(
            409, RelayCode.SELF, "A device cannot revoke itself; log out instead, or remove it from another device."
        )
    library_id = await _bound_library(request, account)
    if not keyring.verify(
        await _signer_key(request, account), signature, keyring.revoke_message(library_id, device, upto)
    ):
        raise Refusal(400, RelayCode.MALFORMED, "The revocation's signature does not verify with this device's key.")
    done = await relay.call(relay.storage.revoke, account, request[DEVICE], device, upto, signature, relay.clock())
    return answer({"device": device, "already": done.already, "dropped": done.dropped})


@authed
async def keys(request: web.Request, account: str) -> web.Response:
    """GET /keys: the key epochs, the account's copy, and this device's sealed copies."""
    relay = request.app[RELAY]
    view = await relay.call(relay.storage.keys, account, request[DEVICE])
    return answer(
        {
            "key_epoch": view.epoch,
            "rotate": view.rotate,
            "revoked": view.revoked,
            "wrapped_key": _b64(view.wrapped_key),
            "wrapped_epoch": view.wrapped_epoch,
            "epochs": [
                {
                    "epoch": e.epoch,
                    "by": e.by,
                    "check": _b64(e.check),
                    "previous": _b64(e.previous),
                    "signature": _b64(e.signature),
                }
                for e in view.epochs
            ],
            "sealed": [{"epoch": epoch, "sealed": _b64(blob)} for epoch, blob in view.sealed],
        }
    )


@authed
async def rotate(request: web.Request, account: str) -> web.Response:
    """POST /keys: put the next key epoch in force (409 key_epoch if another device was quicker)."""
    relay = request.app[RELAY]
    body = await read_object(request)
    epoch: Any = body.get("epoch")
    if not _count(epoch) or epoch < 1:
        raise malformed("'epoch' must be the next key epoch (1 or more).")
    check = b64_field(body, "check", CHECK_BYTES, CHECK_BYTES)
    previous = b64_field(body, "previous", 1, MAX_WRAPPED_KEY)
    signature = b64_field(body, "signature", 64, 64)
    wrapped = None if body.get("wrapped_key") is None else b64_field(body, "wrapped_key", 1, MAX_WRAPPED_KEY)
    sealed = body.get("sealed")
    if not isinstance(sealed, list) or len(sealed) > MAX_SEALED:
        raise malformed(f"'sealed' must be a list of at most {MAX_SEALED} copies of the new key.")
    copies: list[tuple[str, bytes]] = []
    for item in sealed:
        if not isinstance(item, dict) or not is_device_id(item.get("device")):
            raise malformed("Each of 'sealed' is {device, sealed}.")
        copies.append((item["device"], b64_field(item, "sealed", keyring.SEALED_BYTES, keyring.SEALED_BYTES)))
    library_id = await _bound_library(request, account)
    message = keyring.rotation_message(library_id, epoch, check)
    if not keyring.verify(await _signer_key(request, account), signature, message):
        raise Refusal(400, RelayCode.MALFORMED, "The new key epoch's signature does not verify with this device's key.")
    record = EpochRecord(epoch, request[DEVICE], check, previous, signature)
    kept = await relay.call(relay.storage.rotate, account, record, wrapped, copies, relay.clock())
    return answer({"key_epoch": epoch, "sealed": kept})


@authed
async def account_key(request: web.Request, account: str) -> web.Response:
    """POST /keys/account: the account's copy of a newer epoch's key (a device that knows the
    password's wrap key and the key, when the device that made the epoch could not)."""
    relay = request.app[RELAY]
    body = await read_object(request)
    epoch = body.get("epoch")
    if not _count(epoch):
        raise malformed("'epoch' must be a key epoch.")
    wrapped = b64_field(body, "wrapped_key", 1, MAX_WRAPPED_KEY)
    if not await relay.call(relay.storage.set_account_key, account, epoch, wrapped):
        raise Refusal(
            409, RelayCode.KEY_EPOCH, "The account's copy is of a newer epoch, or that epoch is not in force."
        )
    return answer({"wrapped_epoch": epoch})


ROUTES = [
    ("POST", "/device", tie),
    ("GET", "/devices", devices),
    ("POST", "/revoke", revoke),
    ("GET", "/keys", keys),
    ("POST", "/keys", rotate),
    ("POST", "/keys/account", account_key),
]
