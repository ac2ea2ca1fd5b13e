"""An HTTP client for every endpoint of the relay (protocol/relay.md section 3).

One RelayClient is one aiohttp session to one relay. Every answer is checked for the shape the
protocol gives it before anything uses it, and every failure becomes one p2psync error in words
(errors.py, the Relay* family): the caller never sees an aiohttp exception or a half-read answer.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from p2psync.engine.vectors import VersionVector, is_count
from p2psync.errors import (
    DeviceRemoved,
    InvalidValue,
    ProtocolMismatch,
    RelayAccountExists,
    RelayAuthFailed,
    RelayBoundElsewhere,
    RelayCode,
    RelayError,
    RelayInsecure,
    RelayQuotaExceeded,
    RelayRateLimited,
    RelayUnreachable,
)
from p2psync.model.devices import is_device_id
from p2psync.relay.account_recovery_client import RecoveryEndpoints
from p2psync.relay.device_client import DeviceEndpoints, KeyEpochMoved
from p2psync.relay.kdf import TEST_ENV, KdfParams
from p2psync.relay.keyring import DeviceProof
from p2psync.relay.outcomes import BindOutcome

PREFIX = "/relay/v1"
VERSION_HEADER = "P2PSync-Protocol"
PROTOCOL_VERSION = 1
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0  # between two pieces of an answer
MAX_JSON_ANSWER = 32 * 1024 * 1024  # a page of change sets is at most 8 MiB of blobs, in base64
MAX_CHUNK_BLOB = 1024 * 1024 + 64
PAGE_LIMIT = 256  # change sets per page (the relay's maximum)
KEY_HEADER = "P2PSync-Key-Epoch"  # which epoch's library key a chunk needs (relay.md §5)
HAVE_LIMIT = 1024  # chunk ids per /chunks/have

AUTH_MESSAGE = "The relay refused the e-mail or password."
# A sign-up to a taken address with another password is answered like a wrong password (relay.md §3).
SIGNUP_AUTH_MESSAGE = (
    "The relay refused the e-mail or password (if this address has an account there, log in with its password)."
)
TOKEN_MESSAGE = "The relay no longer accepts this device's login (it expired, or the password was changed); " + (
    "log in again with 'p2psync account login'."
)
QUOTA_MESSAGE = (
    "The account's storage limit on the relay is reached; what is stored stays and changes still come in, "
    "but nothing more goes up until the relay's operator raises the limit or the account is purged."
)
PROTOCOL_MESSAGE = "The relay speaks another protocol version; update p2psync."


class GapError(RelayError):
    """409 gap: the relay's heads moved since they were read (another device pushed); read them again."""


def normalize_url(url: str) -> str:
    """The relay's base address as stored: scheme, host, port and path, without a trailing slash.
    Plain http:// only to this machine (RelayInsecure otherwise): the login key, the token and the
    account's traffic must never cross a network unprotected. Every RelayClient checks it, so a
    relay address stored before this rule is refused too, before any connection."""
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise InvalidValue(f"{url!r} is not a relay address; give it like https://relay.example.org.")
    text = text.rstrip("/")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise RelayInsecure(
            f"The relay address {text} uses plain http:// to another machine, which would send the login and "
            "everything else unprotected over the network; use its https:// address (plain http:// is only for "
            "a relay on this machine, such as http://127.0.0.1:8740)."
        )
    return text


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context() -> ssl.SSLContext:
    """The system's trust store, as $SSL_CERT_FILE / $SSL_CERT_DIR say now (aiohttp's own default
    context is made once at import, before a caller could set them)."""
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _tls_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    return ssl.create_default_context()  # reads the two variables (OpenSSL's default verify paths)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _malformed(what)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(what) from None


def _malformed(what: str) -> ProtocolMismatch:
    return ProtocolMismatch(f"The relay sent a malformed answer ({what}); nothing was changed. Try again later.")


def _count(value: Any) -> bool:
    return is_count(value)


@dataclass(frozen=True)
class Session:
    """What /signup and /login give."""

    account: str
    token: str
    expires: Any
    created: bool = True  # False: a sign-up to an address that has an account, with its password (a login)


@dataclass(frozen=True)
class Account:
    """What /account gives."""

    account: str
    email: str
    library_id: str | None
    wrapped_key: bytes | None
    used_bytes: int
    quota_bytes: int | None
    change_sets: int
    chunks: int
    device: str | None = None  # the device this token is tied to (None: a login from before devices)
    key_epoch: int = 0  # the library key's epoch in force
    wrapped_epoch: int = 0  # the epoch of the key in wrapped_key
    recovery_epoch: int | None = None  # the epoch of the key the recovery key opens (None: no recovery key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "email": self.email,
            "library_id": self.library_id,
            "used_bytes": self.used_bytes,
            "quota_bytes": self.quota_bytes,
            "change_sets": self.change_sets,
            "chunks": self.chunks,
        }


@dataclass(frozen=True)
class Item:
    """One stored change set as the relay lists it."""

    num: int
    device: str
    first: int
    last: int
    blob: bytes
    key: int = 0  # the epoch of the library key it needs


class RelayClient(DeviceEndpoints, RecoveryEndpoints):
    def __init__(self, url: str, token: str | None = None, timeout: float | None = None) -> None:
        self.url = normalize_url(url)
        self.base = self.url + PREFIX
        self.token = token
        self.proof: DeviceProof | None = None  # sent with /signup and /login: the token is tied to this device
        total = aiohttp.ClientTimeout(total=timeout, connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
        self._timeout = total
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            host = urlsplit(self.url).hostname or ""
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={VERSION_HEADER: str(PROTOCOL_VERSION)},
                raise_for_status=False,
                connector=aiohttp.TCPConnector(ssl=tls_context()),
                # HTTPS_PROXY / NO_PROXY (and ~/.netrc) as every other tool reads them; a relay on this
                # machine is never reached through a proxy.
                trust_env=not _loopback(host),
            )
        return self._session

    # --- one request ------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        data: bytes | None = None,
        auth: bool = True,
        params: Mapping[str, str] | None = None,
        limit: int = MAX_JSON_ANSWER,
        binary: bool = False,
        login: bool = False,
        signup: bool = False,
        answer_headers: dict[str, str] | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, decoded JSON, or bytes with binary=True) of a successful answer; errors raise."""
        headers: dict[str, str] = dict(extra_headers or {})
        if auth:
            if not self.token:
                raise RelayAuthFailed(TOKEN_MESSAGE)
            headers["Authorization"] = f"Bearer {self.token}"
        payload: bytes | None = data
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif data is not None:
            headers["Content-Type"] = "application/octet-stream"
        try:
            async with self._http().request(
                method, self.base + path, data=payload, headers=headers, params=params
            ) as response:
                raw = await _read(response, limit)
                status = response.status
                if answer_headers is not None:
                    answer_headers.update(response.headers)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise RelayUnreachable(
                f"The relay at {self.url} could not be reached: this machine does not trust its TLS certificate "
                f"({exc.certificate_error}); if the relay uses its own CA, point SSL_CERT_FILE to that CA's "
                "certificate, then sync again."
            ) from None
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or str(exc.os_error) or "no connection"
            raise RelayUnreachable(
                f"The relay at {self.url} could not be reached ({reason}); check the address and the network, "
                "then sync again."
            ) from None
        except TimeoutError:
            raise RelayUnreachable(
                f"The relay at {self.url} could not be reached (it stopped answering); sync again later."
            ) from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise RelayUnreachable(
                f"The relay at {self.url} could not be reached (the connection broke off: {exc}); sync again."
            ) from None
        except aiohttp.ClientError as exc:
            raise RelayUnreachable(f"The relay at {self.url} could not be reached ({exc}); sync again later.") from None
        if status >= 400:
            raise _error(status, raw, self.url, login, signup)
        if binary:
            return status, raw
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _malformed("not JSON") from None

    # --- the endpoints ----------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        _, body = await self._request("GET", "/health", auth=False)
        if not isinstance(body, dict) or body.get("ok") is not True:
            raise _malformed("health")
        versions = body.get("protocol")
        if not isinstance(versions, list) or PROTOCOL_VERSION not in versions:
            raise ProtocolMismatch(PROTOCOL_MESSAGE)
        return body

    async def prelogin(self, email: str) -> KdfParams:
        """The account's key derivation as the relay tells it (for an unknown address, the same answer
        as for a new account): the caller checks it before deriving anything (kdf.check)."""
        try:
            _, body = await self._request("POST", "/prelogin", {"email": email}, auth=False)
        except _NotFound:
            raise ProtocolMismatch(
                f"The relay at {self.url} does not tell how to derive the password's keys (it is older than this "
                "p2psync); ask its operator to update it."
            ) from None
        if not isinstance(body, dict):
            raise _malformed("prelogin")
        try:
            return KdfParams.from_wire(body.get("kdf"))
        except ValueError as exc:
            raise RelayInsecure(
                f"Refused to derive the password's keys as the relay asks: {exc}; update p2psync if the relay is newer."
            ) from None

    async def signup(self, email: str, login_key: bytes, kdf: KdfParams) -> Session:
        """A new account; for an address that has one, a login if login_key is its key (created False)."""
        status, body = await self._request(
            "POST",
            "/signup",
            {"email": email, "login_key": b64(login_key), "kdf": kdf.as_wire(), **self._device()},
            auth=False,
            login=True,
            signup=True,
        )
        return self._session_from(body, created=status == 201)

    async def login(self, email: str, login_key: bytes) -> Session:
        _, body = await self._request(
            "POST", "/login", {"email": email, "login_key": b64(login_key), **self._device()}, auth=False, login=True
        )
        return self._session_from(body)

    def _device(self) -> dict[str, Any]:
        return {"device": self.proof.as_json()} if self.proof is not None else {}

    def _session_from(self, body: Any, created: bool = False) -> Session:
        if not isinstance(body, dict) or not isinstance(body.get("account"), str) or not body["account"]:
            raise _malformed("login")
        token = body.get("token")
        if not isinstance(token, str) or not token or len(token) > 512 or not token.isascii():
            raise _malformed("login token")
        self.token = token
        return Session(body["account"], token, body.get("expires"), created)

    async def logout(self) -> None:
        await self._request("POST", "/logout")
        self.token = None

    async def account(self) -> Account:
        _, body = await self._request("GET", "/account")
        if not isinstance(body, dict) or not isinstance(body.get("account"), str):
            raise _malformed("account")
        library_id = body.get("library_id")
        wrapped = body.get("wrapped_key")
        if library_id is not None and (not isinstance(library_id, str) or not library_id.isascii()):
            raise _malformed("account library")
        if (library_id is None) != (wrapped is None):
            raise _malformed("account binding")
        quota = body.get("quota_bytes")
        numbers = [body.get("used_bytes"), body.get("change_sets"), body.get("chunks")]
        if not all(_count(n) for n in numbers) or not (quota is None or _count(quota)):
            raise _malformed("account usage")
        return Account(
            account=body["account"],
            email=str(body.get("email", "")),
            library_id=library_id,
            wrapped_key=unb64(wrapped, "wrapped key") if wrapped is not None else None,
            used_bytes=body["used_bytes"],
            quota_bytes=quota,
            change_sets=body["change_sets"],
            chunks=body["chunks"],
            device=device if is_device_id(device := body.get("device")) else None,
            key_epoch=int(body.get("key_epoch", 0)) if _count(body.get("key_epoch", 0)) else 0,
            wrapped_epoch=int(body.get("wrapped_epoch", 0)) if _count(body.get("wrapped_epoch", 0)) else 0,
            recovery_epoch=recovery if _count(recovery := body.get("recovery_epoch")) else None,
        )

    async def change_password(self, login_key: bytes, wrapped_key: bytes, kdf: KdfParams) -> None:
        body = {"login_key": b64(login_key), "wrapped_key": b64(wrapped_key), "kdf": kdf.as_wire()}
        await self._request("POST", "/password", body)

    async def upgrade_kdf(self, login_key: bytes, wrapped_key: bytes | None, kdf: KdfParams) -> None:
        """The same password's keys derived with new parameters; the other devices stay logged in."""
        body = {"login_key": b64(login_key), "wrapped_key": b64(wrapped_key) if wrapped_key else None}
        await self._request("POST", "/kdf", {**body, "kdf": kdf.as_wire()})

    async def bind(self, library_id: str, wrapped_key: bytes) -> BindOutcome:
        """NEW or SAME; RelayBoundElsewhere (with the other library's id) if bound to another."""
        _, body = await self._request("POST", "/bind", {"library_id": library_id, "wrapped_key": b64(wrapped_key)})
        bound = body.get("bound") if isinstance(body, dict) else None
        if bound not in tuple(BindOutcome):
            raise _malformed("bind")
        return BindOutcome(bound)

    async def purge(self) -> None:
        await self._request("POST", "/purge")

    async def state(self) -> tuple[dict[str, int], int]:
        """(heads: device -> last sequence stored, last_num)."""
        _, body = await self._request("GET", "/state")
        last_num = body.get("last_num") if isinstance(body, dict) else None
        try:
            heads = VersionVector.parse(body.get("heads") if isinstance(body, dict) else None)
        except InvalidValue:
            raise _malformed("state") from None
        if not _count(last_num):
            raise _malformed("state")
        return dict(heads), int(last_num)  # type: ignore[arg-type]

    async def changesets(self, after: int, limit: int = PAGE_LIMIT) -> tuple[list[Item], bool]:
        """One page of stored change sets after `after` (in num order), and whether more follow."""
        _, body = await self._request("GET", "/changesets", params={"after": str(after), "limit": str(limit)})
        items = body.get("items") if isinstance(body, dict) else None
        more = body.get("more") if isinstance(body, dict) else None
        if not isinstance(items, list) or not isinstance(more, bool) or len(items) > PAGE_LIMIT:
            raise _malformed("change sets")
        out: list[Item] = []
        previous = after
        for item in items:
            if not isinstance(item, dict):
                raise _malformed("change set item")
            num, device, first, last = item.get("num"), item.get("device"), item.get("first"), item.get("last")
            if not (
                _count(num)
                and isinstance(device, str)
                and is_device_id(device)
                and _count(first)
                and _count(last)
                and 1 <= first <= last  # type: ignore[operator]
            ):
                raise _malformed("change set header")
            if num <= previous:  # type: ignore[operator]
                raise _malformed("change sets out of order")
            previous = num  # type: ignore[assignment]
            key = item.get("key", 0)
            if not _count(key):
                raise _malformed("change set key epoch")
            blob = unb64(item.get("blob"), "change set blob")
            out.append(Item(int(num), device, int(first), int(last), blob, int(key)))  # type: ignore[arg-type]
        if more and not out:
            raise _malformed("an empty page that says more follow")
        return out, more

    async def push(self, items: list[dict[str, Any]]) -> tuple[int, int]:
        """Store change sets ({"device", "first", "last", "key", "blob": bytes}); (stored, duplicates)."""
        body = {"items": [{**i, "blob": b64(i["blob"])} for i in items]}
        _, answer = await self._request("POST", "/changesets", body)
        stored = answer.get("stored") if isinstance(answer, dict) else None
        duplicates = answer.get("duplicates") if isinstance(answer, dict) else None
        if not _count(stored) or not _count(duplicates):
            raise _malformed("push")
        return int(stored), int(duplicates)  # type: ignore[arg-type]

    async def have(self, ids: list[str]) -> list[bool]:
        _, body = await self._request("POST", "/chunks/have", {"ids": ids})
        have = body.get("have") if isinstance(body, dict) else None
        if not isinstance(have, list) or len(have) != len(ids) or not all(isinstance(h, bool) for h in have):
            raise _malformed("chunks have")
        return have

    async def put_chunk(self, cid: str, blob: bytes, key_epoch: int = 0) -> bool:
        """Store a chunk encrypted with the key of key_epoch; whether it was new (201) rather than
        already there (200)."""
        status, _ = await self._request(
            "PUT", f"/chunks/{cid}", data=blob, binary=True, extra_headers={KEY_HEADER: str(key_epoch)}
        )
        return status == 201

    async def get_chunk(self, cid: str) -> tuple[bytes, int] | None:
        """A chunk's blob and the epoch of the key it needs, or None if the relay does not have it."""
        headers: dict[str, str] = {}
        try:
            _, blob = await self._request(
                "GET", f"/chunks/{cid}", binary=True, limit=MAX_CHUNK_BLOB, answer_headers=headers
            )
        except _NotFound:
            return None
        epoch = headers.get(KEY_HEADER, "0")
        if not (epoch.isascii() and epoch.isdigit() and len(epoch) <= 16):
            raise _malformed("chunk key epoch")
        return bytes(blob), int(epoch)


class _NotFound(RelayError):
    pass


async def _read(response: aiohttp.ClientResponse, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while chunk := await response.content.read(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise ProtocolMismatch(f"The relay sent an answer of more than {limit:,} bytes; refused.")
        parts.append(chunk)
    return b"".join(parts)


def _error(status: int, raw: bytes, url: str, login: bool, signup: bool = False) -> RelayError | ProtocolMismatch:
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        body = None
    code = body.get("error") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) and isinstance(body.get("message"), str) else None
    if code == RelayCode.PROTOCOL:
        return ProtocolMismatch(PROTOCOL_MESSAGE)
    if status == 401:
        return RelayAuthFailed((SIGNUP_AUTH_MESSAGE if signup else AUTH_MESSAGE) if login else TOKEN_MESSAGE)
    if status == 429:
        wait = body.get("retry_after") if isinstance(body, dict) else None
        after = f" in {max(1, round(wait / 60))} minutes" if isinstance(wait, int) and _count(wait) else " later"
        what = "sign-ups or failed logins from this address" if signup else "failed logins for this account"
        return RelayRateLimited(f"Too many {what}; try again{after}.")
    if status == 400 and code == RelayCode.WEAK_KDF:
        return RelayInsecure(
            "The relay refuses the password key derivation of this p2psync as weaker than it accepts; update "
            f"p2psync (and leave ${TEST_ENV} unset: it is for tests only)."
        )
    if status == 507 or code == RelayCode.QUOTA_EXCEEDED:
        return RelayQuotaExceeded(QUOTA_MESSAGE)
    if status == 409 and code == RelayCode.EMAIL_TAKEN:
        return RelayAccountExists(
            "The relay already has an account for this e-mail address; log in with 'p2psync account login'."
        )
    if status == 409 and code == RelayCode.BOUND:
        other = body.get("library_id") if isinstance(body, dict) else None
        return RelayBoundElsewhere(
            "The account holds another library.", other if isinstance(other, str) and other.isascii() else None
        )
    if status == 403 and code == RelayCode.DEVICE_REVOKED:
        return DeviceRemoved()
    if status == 403 and code == RelayCode.DEVICE_REQUIRED:
        return RelayAuthFailed(TOKEN_MESSAGE)
    if status == 409 and code == RelayCode.KEY_EPOCH:
        return KeyEpochMoved("The library key changed on the relay meanwhile; sync again.")
    if status == 400 and code == RelayCode.CLOCK:
        return RelayError(
            "The relay refused this device's proof of its key because this machine's clock is more than an hour off; "
            "set the clock right and try again."
        )
    if status == 409 and code == RelayCode.GAP:
        return GapError("The relay's change sets moved on meanwhile; sync again.")
    if status == 404:
        return _NotFound(f"The server at {url} does not answer as a p2psync relay (not found); check the address.")
    if status == 413:
        return RelayError("The relay refused a request as too large; update p2psync or ask the relay's operator.")
    if status >= 500:
        return RelayError(f"The relay at {url} failed ({message or status}); sync again later.")
    return RelayError(f"The relay at {url} refused a request ({code or status}: {message or 'no reason given'}).")
