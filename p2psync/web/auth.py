"""The web app's door: who may use it, and which requests may change anything.

Only the user who can read the library folder gets in. The server holds a secret in
`<library>/web-secret` (0600); a login link carries a token signed with it that is good once and
for a few minutes. `p2psync web` mints one (from the secret, so it works for a daemon's app too),
and the browser trades it at /login for a session cookie: HttpOnly (no script reads it),
SameSite=Strict (no other site's page sends it), named after the port (two apps on localhost do
not overwrite each other's cookie). Every request must also name the app by a loopback Host
(a DNS-rebinding page names its own host), and every state-changing request must carry the
session's CSRF token and, if the browser sent one, our own Origin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from p2psync.files import write_atomic

SECRET_FILE = "web-secret"
TOKEN_SECONDS = 600  # a login link not used within ten minutes is dead
SESSION_SECONDS = 7 * 24 * 3600
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_secret(folder: Path, create: bool = True) -> bytes | None:
    """The library's web secret; made (0600) on first use when `create`."""
    path = folder / SECRET_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        if not create:
            return None
    secret = os.urandom(32)
    write_atomic(path, secret.hex().encode() + b"\n", mode=0o600)
    return secret


def mint_token(secret: bytes, now: float | None = None) -> str:
    """A login token: a random nonce, an expiry and their MAC. Good once, until the expiry."""
    expires = int((time.time() if now is None else now) + TOKEN_SECONDS)
    body = f"{_b64(os.urandom(12))}.{expires}"
    mac = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest()[:16])
    return f"{body}.{mac}"


@dataclass
class Session:
    csrf: str
    expires: float
    notices: list[str] = field(default_factory=list)  # said once, on the next page (after a redirect)


@dataclass
class Door:
    """Login tokens spent, sessions open, and the checks on each request (see the module text)."""

    secret: bytes
    port: int
    spent: dict[str, float] = field(default_factory=dict)  # nonce -> its token's expiry
    sessions: dict[str, Session] = field(default_factory=dict)

    @property
    def cookie_name(self) -> str:
        return f"p2psync-{self.port}"

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(f"http://{host}" for host in self.hosts)

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(f"{name}:{self.port}" for name in ("127.0.0.1", "localhost", "[::1]"))

    def host_ok(self, host: str | None) -> bool:
        return (host or "").lower() in self.hosts

    def spend(self, token: str, now: float | None = None) -> bool:
        """Whether `token` is a good login token; it is good only the first time."""
        now = time.time() if now is None else now
        self.spent = {nonce: until for nonce, until in self.spent.items() if until >= now}
        try:
            nonce, expires_text, mac = token.split(".")
            expires = int(expires_text)
        except ValueError:
            return False
        want = _b64(hmac.new(self.secret, f"{nonce}.{expires_text}".encode(), hashlib.sha256).digest()[:16])
        if not hmac.compare_digest(want, mac) or expires < now or nonce in self.spent:
            return False
        self.spent[nonce] = expires
        return True

    def open_session(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        self.sessions = {sid: s for sid, s in self.sessions.items() if s.expires >= now}  # forget the dead
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = Session(secrets.token_urlsafe(24), now + SESSION_SECONDS)
        return sid

    def session(self, sid: str | None, now: float | None = None) -> Session | None:
        found = self.sessions.get(sid or "")
        if found is None or found.expires < (time.time() if now is None else now):
            return None
        return found

    def close_session(self, sid: str | None) -> None:
        self.sessions.pop(sid or "", None)
