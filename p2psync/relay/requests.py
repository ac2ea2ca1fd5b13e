"""What a relay request may hold: its body read within a bound, JSON objects, base64 fields,
e-mail addresses, key-derivation parameters, sequence numbers, query integers and chunk ids.
Anything else is refused with 400 malformed (or 413), in one sentence, before a handler acts."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson
from aiohttp import web

from p2psync.errors import Refusal, RelayCode, RelayInsecure
from p2psync.relay import kdf, passwords

MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_SEQUENCE = 2**53  # sequence numbers and cursors stay exact in every JSON reader
CHUNK_ID = re.compile(r"[0-9a-f]{64}")


def malformed(message: str) -> Refusal:
    return Refusal(400, RelayCode.MALFORMED, message)


# --- reading requests --------------------------------------------------------------------------


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be longer than limit."""
    if request.content_length is not None and request.content_length > limit:
        raise Refusal(413, RelayCode.TOO_LARGE, f"This request's body is at most {limit} bytes.")
    parts: list[bytes] = []
    size = 0
    async for piece in request.content.iter_any():
        size += len(piece)
        if size > limit:
            raise Refusal(413, RelayCode.TOO_LARGE, f"This request's body is at most {limit} bytes.")
        parts.append(piece)
    return b"".join(parts)


async def read_object(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request, MAX_JSON_BYTES)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed("The request body is not JSON (UTF-8).") from None
    if not isinstance(body, dict):
        raise malformed("The request body must be a JSON object.")
    return body


def b64_field(body: dict[str, Any], name: str, min_size: int, max_size: int) -> bytes:
    """A field of standard base64 with padding (relay.md §3), decoded, of min_size..max_size bytes."""
    value = body.get(name)
    if not isinstance(value, str):
        raise malformed(f"'{name}' must be a base64 string.")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise malformed(f"'{name}' is not standard base64 with padding.") from None
    if not (min_size <= len(data) <= max_size):
        size = f"{min_size} bytes" if min_size == max_size else f"{min_size} to {max_size} bytes"
        raise malformed(f"'{name}' must decode to {size}.")
    return data


def login_fields(body: dict[str, Any]) -> tuple[str, bytes]:
    email = email_field(body)
    key = b64_field(body, "login_key", passwords.LOGIN_KEY_BYTES, passwords.LOGIN_KEY_BYTES)
    return email, key


def email_field(body: dict[str, Any]) -> str:
    email = body.get("email")
    if not isinstance(email, str):
        raise malformed("'email' must be a string.")
    # relay.md §1: the device sends the address trimmed and lower-cased; doing it again here is
    # harmless and keeps one account per address whatever a client does.
    email = email.strip().lower()
    if not (3 <= len(email) <= 254) or "@" not in email or any(c.isspace() or not c.isprintable() for c in email):
        raise malformed("'email' must be an e-mail address (at most 254 characters, no spaces).")
    return email


def kdf_field(body: dict[str, Any]) -> kdf.KdfParams | None:
    """The key derivation a request names (relay.md §1); None if absent (a device of the first
    release: scrypt). Refused with 400 weak_kdf if out of kdf.py's bounds."""
    try:
        return kdf.from_request(body.get("kdf"))
    except ValueError as exc:
        raise malformed(f"'kdf': {exc}.") from None
    except RelayInsecure as exc:
        raise Refusal(400, RelayCode.WEAK_KDF, exc.message) from None


def sequence(value: Any) -> bool:
    return type(value) is int and 1 <= value <= MAX_SEQUENCE


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 16) or not (low <= int(text)):
        raise malformed(f"'{name}' must be a whole number of at least {low}.")
    return min(int(text), high)


def chunk_id(request: web.Request) -> str:
    value = request.match_info["id"]
    if CHUNK_ID.fullmatch(value) is None:
        raise malformed("A chunk id is 64 lower-case hexadecimal characters.")
    return value


def client_address(request: web.Request, trust_proxy: bool) -> str:
    """Who is logging in, for the failed-login limit. Behind a proxy (--trust-proxy) the last
    X-Forwarded-For entry is the address the proxy saw; earlier entries are the client's say-so."""
    if trust_proxy:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",")]
        if forwarded[-1]:
            return forwarded[-1][:64]
    return (request.remote or "unknown")[:64]
