"""The client side of the recovery key's endpoints (protocol/relay.md §3.1), mixed into
RelayClient: each answer checked for its shape; a refused key is one sentence."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2psync.errors import ProtocolMismatch, RelayAuthFailed, RelayInsecure, RelayRateLimited
from p2psync.model.ids import ID_PATTERN
from p2psync.relay.device_client import _bytes, _number
from p2psync.relay.kdf import KdfParams

RECOVERY_AUTH_MESSAGE = (
    "The relay refused the e-mail or recovery key, so nothing was changed; check the words and the address."
)


@dataclass(frozen=True)
class Opened:
    """What /recover/open gives: the library key wrapped with the recovery key, and its epoch."""

    library_id: str
    wrapped_key: bytes
    epoch: int
    key_epoch: int  # the epoch in force


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class RecoveryEndpoints:
    """POST /recovery, /recover/prelogin, /recover/open, /recover."""

    if TYPE_CHECKING:
        _request: Callable[..., Awaitable[tuple[int, Any]]]

    async def set_recovery(
        self, login_key: bytes, kdf: KdfParams, library_id: str, wrapped_key: bytes, epoch: int
    ) -> None:
        body = {
            "login_key": _b64(login_key),
            "kdf": kdf.as_wire(),
            "library_id": library_id,
            "wrapped_key": _b64(wrapped_key),
            "epoch": epoch,
        }
        await self._request("POST", "/recovery", body)

    async def recovery_prelogin(self, email: str) -> KdfParams:
        _, body = await self._request("POST", "/recover/prelogin", {"email": email}, auth=False)
        try:
            return KdfParams.from_wire(body.get("kdf") if isinstance(body, dict) else None)
        except ValueError as exc:
            raise RelayInsecure(f"Refused to derive the recovery key's keys as the relay asks: {exc}.") from None

    async def open_recovery(self, email: str, recovery_login_key: bytes) -> Opened:
        body = await self._proven("/recover/open", {"email": email, "recovery_key": _b64(recovery_login_key)})
        library_id = body.get("library_id") if isinstance(body, dict) else None
        if not isinstance(library_id, str) or ID_PATTERN.fullmatch(library_id) is None:
            raise ProtocolMismatch("The relay sent a malformed answer (recovery); nothing was changed.")
        return Opened(
            library_id,
            _bytes(body.get("wrapped_key"), "recovery wrapped key"),
            _number(body.get("epoch"), "recovery epoch"),
            _number(body.get("key_epoch"), "recovery key epoch"),
        )

    async def recover(
        self,
        email: str,
        recovery_login_key: bytes,
        login_key: bytes,
        kdf: KdfParams,
        library_id: str,
        wrapped_key: bytes,
    ) -> None:
        body = {
            "email": email,
            "recovery_key": _b64(recovery_login_key),
            "login_key": _b64(login_key),
            "kdf": kdf.as_wire(),
            "library_id": library_id,
            "wrapped_key": _b64(wrapped_key),
        }
        await self._proven("/recover", body)

    async def _proven(self, path: str, body: dict[str, Any]) -> Any:
        try:
            _, answer = await self._request("POST", path, body, auth=False, login=True)
        except RelayRateLimited:
            raise
        except RelayAuthFailed:
            raise RelayAuthFailed(RECOVERY_AUTH_MESSAGE) from None
        return answer
