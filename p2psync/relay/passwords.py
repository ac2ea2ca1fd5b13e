"""The relay's secrets: how it keeps login keys and tokens, and how it limits failed logins.

Sans-IO and synchronous. Hashing is deliberately slow (scrypt, ~30 ms and 16 MiB per call), so
the server runs it on a thread pool, never on the event loop. See protocol/relay.md §1 and §3.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
import secrets
from collections.abc import Sequence

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

SALT_BYTES = 16
HASH_BYTES = 32
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
LOGIN_KEY_BYTES = 32

TOKEN_BYTES = 32
TOKEN_SECONDS = 30 * 86400  # a token expires 30 days after login (relay.md §3)
ENV_TOKEN_DAYS = "P2PSYNC_RELAY_TOKEN_DAYS"  # for tests and operators; never needed in production
_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding

MAX_FAILED_LOGINS = 5
FAILED_LOGIN_WINDOW = 15 * 60

# Hashed in place of a real account's when the e-mail is unknown, so that the answer takes as long
# whether or not an account exists.
_DUMMY_SALT = b"p2psync relay!!!"


def hash_login_key(login_key: bytes, salt: bytes) -> bytes:
    """scrypt(login_key, salt, n = 2^14, r = 8, p = 1, 32 bytes): what the relay stores."""
    return Scrypt(salt=salt, length=HASH_BYTES, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(login_key)


def new_login_hash(login_key: bytes) -> tuple[bytes, bytes]:
    """A fresh random salt and the hash of login_key with it."""
    salt = os.urandom(SALT_BYTES)
    return salt, hash_login_key(login_key, salt)


def verify_login_key(login_key: bytes, salt: bytes | None, expected: bytes | None) -> bool:
    """Whether login_key hashes to expected; with no account (salt None) it still spends the time."""
    if salt is None or expected is None:
        hash_login_key(login_key, _DUMMY_SALT)
        return False
    return hmac.compare_digest(hash_login_key(login_key, salt), expected)


def new_token() -> tuple[str, bytes]:
    """A new token (what the device gets) and its SHA-256 (all the relay keeps)."""
    token = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode("ascii")
    return token, token_hash(token)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def is_token(text: str) -> bool:
    return _TOKEN_PATTERN.fullmatch(text) is not None


def token_seconds(environ: dict[str, str] | None = None) -> float:
    """How long a token lives: 30 days, unless $P2PSYNC_RELAY_TOKEN_DAYS says otherwise (tests)."""
    text = (os.environ if environ is None else environ).get(ENV_TOKEN_DAYS, "").strip()
    if not text:
        return TOKEN_SECONDS
    try:
        days = float(text)
    except ValueError:
        raise ValueError(f"${ENV_TOKEN_DAYS} must be a number of days, not {text!r}.") from None
    if not (0 < days <= 3650):
        raise ValueError(f"${ENV_TOKEN_DAYS} must be more than 0 and at most 3650 days.")
    return days * 86400


def retry_after(
    failures: Sequence[float],
    now: float,
    limit: int = MAX_FAILED_LOGINS,
    window: float = FAILED_LOGIN_WINDOW,
) -> int | None:
    """Seconds until one more login may be tried, or None if one may be tried now.

    `failures` are the times of failed logins for one key (an e-mail or a client address). At
    `limit` failures within `window`, the next attempt waits until the limit-th newest one leaves
    the window (attempts refused by the limit are not counted, so a user is never locked out for
    longer than the window)."""
    recent = sorted((t for t in failures if t > now - window), reverse=True)
    if len(recent) < limit:
        return None
    return max(1, math.ceil(recent[limit - 1] + window - now))
