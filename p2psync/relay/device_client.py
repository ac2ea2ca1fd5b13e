"""The client side of the relay's device and key endpoints (protocol/relay.md §5), mixed into
RelayClient: each answer is checked for the shape the protocol gives it and becomes a typed
value; every failure is a p2psync error (client.py maps the error codes).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2psync.errors import ProtocolMismatch, RelayError
from p2psync.model.devices import is_device_id
from p2psync.relay.keyring import SEALED_BYTES, DeviceProof


class KeyEpochMoved(RelayError):
    """409 key_epoch: another device put a new library key in force meanwhile; read the keys again."""


def _bad(what: str) -> ProtocolMismatch:
    return ProtocolMismatch(f"The relay sent a malformed answer ({what}); nothing was changed. Try again later.")


def _bytes(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise _bad(what)
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(what) from None
    if size is not None and len(data) != size:
        raise _bad(what)
    return data


def _number(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= 2**53:
        raise _bad(what)
    return value


@dataclass(frozen=True)
class RelayDevice:
    """A device that proved its key to the relay (GET /devices)."""

    device: str
    proof: DeviceProof


@dataclass(frozen=True)
class RelayRevocation:
    device: str
    by: str
    upto: int
    signature: bytes


@dataclass(frozen=True)
class Epoch:
    epoch: int
    by: str
    check: bytes
    previous: bytes
    signature: bytes


@dataclass(frozen=True)
class KeysAnswer:
    """GET /keys."""

    key_epoch: int
    rotate: bool
    revoked: frozenset[str]
    wrapped_key: bytes | None
    wrapped_epoch: int
    epochs: Mapping[int, Epoch]
    sealed: Mapping[int, bytes]  # epoch -> this device's copy


class DeviceEndpoints:
    """POST /device, GET /devices, POST /revoke, GET /keys, POST /keys, POST /keys/account."""

    if TYPE_CHECKING:
        _request: Callable[..., Awaitable[tuple[int, Any]]]

    async def tie_device(self, proof: DeviceProof) -> None:
        """Tie this (older) token to the device that proves its key."""
        await self._request("POST", "/device", {"device": proof.as_json()})

    async def devices(self) -> tuple[list[RelayDevice], list[RelayRevocation]]:
        _, body = await self._request("GET", "/devices")
        if not isinstance(body, dict) or not isinstance(body.get("devices"), list):
            raise _bad("devices")
        devices: list[RelayDevice] = []
        for item in body["devices"]:
            if not isinstance(item, dict) or not is_device_id(item.get("device")):
                raise _bad("device")
            proof = DeviceProof(
                _bytes(item.get("key"), "device key", 32),
                _bytes(item.get("agreement_key"), "agreement key", 32),
                _number(item.get("time"), "device proof time"),
                _bytes(item.get("signature"), "device proof", 64),
            )
            if proof.device != item["device"]:
                raise _bad("device key")
            devices.append(RelayDevice(item["device"], proof))
        revoked: list[RelayRevocation] = []
        for item in body.get("revoked") or []:
            if not isinstance(item, dict) or not is_device_id(item.get("device")) or not is_device_id(item.get("by")):
                raise _bad("revocation")
            revoked.append(
                RelayRevocation(
                    item["device"],
                    item["by"],
                    _number(item.get("upto"), "revocation upto"),
                    _bytes(item.get("signature"), "revocation signature", 64),
                )
            )
        return devices, revoked

    async def revoke(self, device: str, upto: int, signature: bytes) -> bool:
        """Cut `device` off the account; whether it was revoked before (by anyone)."""
        _, body = await self._request(
            "POST", "/revoke", {"device": device, "upto": upto, "signature": base64.b64encode(signature).decode()}
        )
        return isinstance(body, dict) and body.get("already") is True

    async def keys(self) -> KeysAnswer:
        _, body = await self._request("GET", "/keys")
        if not isinstance(body, dict) or not isinstance(body.get("epochs"), list):
            raise _bad("keys")
        epochs: dict[int, Epoch] = {}
        for item in body["epochs"]:
            if not isinstance(item, dict) or not is_device_id(item.get("by")):
                raise _bad("key epoch")
            epoch = _number(item.get("epoch"), "key epoch")
            epochs[epoch] = Epoch(
                epoch,
                item["by"],
                _bytes(item.get("check"), "key check", 32),
                _bytes(item.get("previous"), "previous key"),
                _bytes(item.get("signature"), "key epoch signature", 64),
            )
        sealed: dict[int, bytes] = {}
        for item in body.get("sealed") or []:
            if not isinstance(item, dict):
                raise _bad("sealed key")
            sealed[_number(item.get("epoch"), "sealed key epoch")] = _bytes(
                item.get("sealed"), "sealed key", SEALED_BYTES
            )
        revoked = body.get("revoked")
        if not isinstance(revoked, list) or not all(is_device_id(d) for d in revoked):
            raise _bad("revoked devices")
        wrapped = body.get("wrapped_key")
        return KeysAnswer(
            key_epoch=_number(body.get("key_epoch"), "key epoch"),
            rotate=body.get("rotate") is True,
            revoked=frozenset(revoked),
            wrapped_key=_bytes(wrapped, "wrapped key") if wrapped is not None else None,
            wrapped_epoch=_number(body.get("wrapped_epoch"), "wrapped key epoch"),
            epochs=epochs,
            sealed=sealed,
        )

    async def rotate(
        self,
        epoch: int,
        check: bytes,
        previous: bytes,
        signature: bytes,
        wrapped_key: bytes | None,
        sealed: Mapping[str, bytes],
    ) -> None:
        """Put key epoch `epoch` in force; KeyEpochMoved if another device did first."""
        b64 = lambda data: base64.b64encode(data).decode("ascii")  # noqa: E731
        body = {
            "epoch": epoch,
            "check": b64(check),
            "previous": b64(previous),
            "signature": b64(signature),
            "wrapped_key": b64(wrapped_key) if wrapped_key is not None else None,
            "sealed": [{"device": d, "sealed": b64(s)} for d, s in sorted(sealed.items())],
        }
        await self._request("POST", "/keys", body)

    async def set_account_key(self, epoch: int, wrapped_key: bytes) -> None:
        await self._request(
            "POST", "/keys/account", {"epoch": epoch, "wrapped_key": base64.b64encode(wrapped_key).decode("ascii")}
        )
