"""The relay server (protocol/relay.md §3) as a real process on 127.0.0.1, spoken to over HTTP:
accounts, tokens, failed-login limits, binding, change sets, chunks, quotas, purge, isolation of
accounts, hostile input (hypothesis), logs, TLS and a graceful stop. Plus the storage and the
app in-process with a clock that can be moved (30-day tokens, the 15-minute window)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import http.client
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import click
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psync.cli.relay_cmds import parse_size
from p2psync.model.devices import device_id_for
from p2psync.relay import keyring, passwords
from p2psync.relay.server import make_app
from p2psync.relay.storage import SqliteStorage, StorageLocked

P2PSYNC = [sys.executable, "-m", "p2psync"]
API = "/relay/v1"
SECRETS: list[str] = []  # every token issued here: none may ever appear in a relay's log


# --- a relay process ---------------------------------------------------------------------------


class RelayProcess:
    def __init__(self, data: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.log_path = data.parent / f"{data.name}.stderr"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (a file, not a pipe: the log can grow)
        self.proc = subprocess.Popen(
            [*P2PSYNC, "relay", "serve", "--port", "0", "--data", str(data), "--json", *extra],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError(f"relay did not start: {self.log_path.read_text()}")
        self.url = json.loads(line)["listening"]
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> int:
        """SIGTERM by PID; the exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(35)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise
        finally:
            self._log.close()
        return code

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        version: str | None = "1",
    ) -> tuple[int, dict[str, str], bytes]:
        sent: dict[str, str] = {}
        if version is not None:
            sent["P2PSync-Protocol"] = version
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        sent.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, payload, sent)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        status, headers, data = self.request(method, API + path, body, **kw)
        if status != 204 and headers.get("Content-Type", "").startswith("application/json"):
            return status, json.loads(data)
        return status, data


def key() -> bytes:
    return os.urandom(32)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def new_email() -> str:
    return f"{uuid.uuid4().hex[:12]}@example.test"


def new_device() -> str:
    return device_id_for(os.urandom(32))


def new_library() -> str:
    return base64.b32encode(os.urandom(10)).decode().lower()


def new_address() -> str:
    return f"198.51.100.{int.from_bytes(os.urandom(1)) % 250 + 1}-{uuid.uuid4().hex[:6]}"


def proof(email: str, device_key: Ed25519PrivateKey | None = None, now: float | None = None) -> dict[str, Any]:
    """A device's proof of its key (relay.md §5.1): its token is then tied to that device."""
    made = keyring.make_proof(device_key or Ed25519PrivateKey.generate(), email, time.time() if now is None else now)
    return made.as_json()


class User:
    """An account on a relay, made by signing up from one device (whose change sets it may store)."""

    def __init__(self, relay: RelayProcess, device_key: Ed25519PrivateKey | None = None) -> None:
        self.relay = relay
        self.email = new_email()
        self.key = key()
        self.device_key = device_key or Ed25519PrivateKey.generate()
        device = proof(self.email, self.device_key)
        body = {"email": self.email, "login_key": b64(self.key), "device": device}
        status, body = relay.call("POST", "/signup", body)
        assert status == 201, body
        self.account, self.token, self.device = body["account"], body["token"], body["device"]
        SECRETS.append(self.token)

    def another_device(self) -> User:
        """The same account, logged in from another device."""
        other = object.__new__(User)
        other.relay, other.email, other.key = self.relay, self.email, self.key
        other.device_key = Ed25519PrivateKey.generate()
        status, body = login(self.relay, self.email, self.key, new_address(), other.device_key)
        assert status == 200, body
        other.account, other.token, other.device = body["account"], body["token"], body["device"]
        return other

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        kw.setdefault("token", self.token)
        return self.relay.call(method, path, body, **kw)

    def bind(self, library: str | None = None, wrapped: bytes | None = None) -> str:
        library = library or new_library()
        status, body = self.call(
            "POST", "/bind", {"library_id": library, "wrapped_key": b64(wrapped or os.urandom(60))}
        )
        assert status == 200 and body["bound"] == "new", body
        return library

    def push(self, *items: tuple[str, int, int, bytes]) -> tuple[int, Any]:
        return self.call(
            "POST",
            "/changesets",
            {"items": [{"device": d, "first": f, "last": la, "blob": b64(b)} for d, f, la, b in items]},
        )

    def snapshot(self) -> tuple[Any, Any]:
        """What the relay holds for this account, as seen through the API."""
        status, info = self.call("GET", "/account")
        assert status == 200
        status, state = self.call("GET", "/state")
        assert status == 200
        return info, state


def login(
    relay: RelayProcess,
    email: str,
    login_key: bytes,
    address: str | None = None,
    device_key: Ed25519PrivateKey | None = None,
) -> tuple[int, Any]:
    headers = {"X-Forwarded-For": address} if address else None
    body = {"email": email, "login_key": b64(login_key), "device": proof(email, device_key)}
    status, body = relay.call("POST", "/login", body, headers=headers)
    if status == 200:
        SECRETS.append(body["token"])
    return status, body


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """The relay most tests share: behind a (pretend) proxy, so each test logs in from its own address."""
    process = RelayProcess(
        tmp_path_factory.mktemp("relay") / "data", "--trust-proxy", "--quota", "20MB", "--signups-per-hour", "1000"
    )
    yield process
    assert process.stop() == 0


@pytest.fixture
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """No --trust-proxy, and a small quota. One per test: the failed logins from 127.0.0.1 that one
    test makes would stop the next one's sign-ups (they count for sign-ups too)."""
    process = RelayProcess(tmp_path_factory.mktemp("strict") / "data", "--quota", "64KiB")
    yield process
    assert process.stop() == 0


# --- the basics --------------------------------------------------------------------------------


def test_health_needs_no_header_everything_else_needs_protocol_1(relay: RelayProcess) -> None:
    assert relay.call("GET", "/health", version=None) == (200, {"ok": True, "protocol": [1]})
    for version in (None, "2", "abc", "1.0", ""):
        status, body = relay.call("GET", "/account", version=version)
        assert status == 400 and body["error"] == "protocol" and body["supported"] == [1], (version, body)
        assert body["message"]
    status, body = relay.call("POST", "/signup", {"email": new_email(), "login_key": b64(key())}, version=None)
    assert status == 400 and body["error"] == "protocol"


def test_unknown_paths_and_methods_answer_json(relay: RelayProcess) -> None:
    status, body = relay.call("GET", "/nothing-here")
    assert status == 404 and body["error"] == "not_found" and body["message"]
    status, _, data = relay.request("GET", "/elsewhere")
    assert status == 404 and json.loads(data)["error"] == "not_found"
    status, body = relay.call("DELETE", "/signup")
    assert status == 405 and body["error"] == "method"
    status, body = relay.call("GET", "/login")
    assert status == 405 and body["error"] == "method"


def test_signup_login_logout(relay: RelayProcess) -> None:
    user = User(relay)
    assert passwords.is_token(user.token)
    # A taken address answers a sign-up as a wrong password (test_relay_accounts.py has the rest).
    status, body = relay.call("POST", "/signup", {"email": user.email, "login_key": b64(key())})
    assert status == 401 and body["error"] == "auth_failed"
    # The address is taken whatever its case and surrounding spaces.
    status, body = relay.call("POST", "/signup", {"email": f"  {user.email.upper()} ", "login_key": b64(key())})
    assert status == 401 and body["error"] == "auth_failed"

    status, session = login(relay, user.email, user.key, new_address())
    assert status == 200 and session["account"] == user.account and session["token"] != user.token
    expires = dt.datetime.fromisoformat(session["expires"].replace("Z", "+00:00"))
    assert abs((expires - dt.datetime.now(dt.UTC)).total_seconds() - 30 * 86400) < 120

    status, info = user.call("GET", "/account")
    assert status == 200 and info == {
        "account": user.account,
        "email": user.email,
        "library_id": None,
        "wrapped_key": None,
        "used_bytes": 0,
        "quota_bytes": 20_000_000,
        "change_sets": 0,
        "chunks": 0,
        "device": user.device,
        "key_epoch": 0,
        "wrapped_epoch": 0,
        "recovery_epoch": None,
    }
    assert user.call("POST", "/logout")[0] == 204
    status, body = user.call("GET", "/account")
    assert status == 401 and body["error"] == "auth_failed"
    assert relay.call("GET", "/account", token=session["token"])[0] == 200  # the other token still works


def test_bad_tokens_are_auth_failed(relay: RelayProcess) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic " + b64(b"a:b")},
        {"Authorization": "Bearer " + passwords.new_token()[0]},  # well formed, unknown
    ):
        status, body = relay.call("GET", "/state", headers=headers)
        assert status == 401 and body["error"] == "auth_failed", headers


def test_wrong_key_and_unknown_email_are_auth_failed(relay: RelayProcess) -> None:
    user = User(relay)
    status, body = login(relay, user.email, key(), new_address())
    assert status == 401 and body["error"] == "auth_failed"
    status, body = login(relay, new_email(), user.key, new_address())
    assert status == 401 and body["error"] == "auth_failed"
    for bad in (
        {"email": user.email},
        {"email": 3, "login_key": b64(user.key)},
        {"email": user.email, "login_key": "x"},
    ):
        status, body = relay.call("POST", "/login", bad)
        assert status == 400 and body["error"] == "malformed"
    status, body = relay.call("POST", "/login", {"email": user.email, "login_key": b64(user.key[:16])})
    assert status == 400 and body["error"] == "malformed"


def test_five_failures_per_email_then_429_even_with_the_right_key(relay: RelayProcess) -> None:
    user, other = User(relay), User(relay)
    for _ in range(5):
        assert login(relay, user.email, key(), new_address())[0] == 401  # each from another address
    status, headers, data = relay.request(
        "POST",
        API + "/login",
        {"email": user.email, "login_key": b64(user.key)},
        headers={"X-Forwarded-For": new_address()},
    )
    body = json.loads(data)
    assert status == 429 and body["error"] == "rate_limited"
    assert type(body["retry_after"]) is int and 800 < body["retry_after"] <= 900
    assert headers["Retry-After"] == str(body["retry_after"])
    assert login(relay, other.email, other.key, new_address())[0] == 200  # other accounts are not limited
    # The token from sign-up still works: the limit is on logging in, not on the account.
    assert user.call("GET", "/account")[0] == 200


def test_five_failures_per_client_address(relay: RelayProcess) -> None:
    user = User(relay)
    address = new_address()
    for n in range(5):
        # What a client puts first in X-Forwarded-For is its own say-so: the proxy's (last) entry counts.
        assert login(relay, new_email(), key(), f"10.0.0.{n}, {address}")[0] == 401
    status, body = login(relay, user.email, user.key, f"10.9.9.9, {address}")
    assert status == 429 and body["error"] == "rate_limited"
    assert login(relay, user.email, user.key, new_address())[0] == 200


def test_concurrent_failures_cannot_slip_past_the_limit(relay: RelayProcess) -> None:
    user = User(relay)
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda _: login(relay, user.email, key(), new_address())[0], range(10)))
    assert sorted(statuses) == [401] * 5 + [429] * 5


def test_without_trust_proxy_forwarded_for_is_ignored(strict: RelayProcess) -> None:
    user = User(strict)
    for _ in range(5):
        assert login(strict, new_email(), key(), new_address())[0] == 401
    status, body = login(strict, user.email, user.key, new_address())
    assert status == 429 and body["error"] == "rate_limited"  # all came from 127.0.0.1


def test_tokens_expire(tmp_path: Path) -> None:
    short = RelayProcess(tmp_path / "data", env={passwords.ENV_TOKEN_DAYS: str(1.5 / 86400)})
    try:
        user = User(short)
        assert user.call("GET", "/account")[0] == 200
        time.sleep(1.7)
        status, body = user.call("GET", "/account")
        assert status == 401 and body["error"] == "token_expired"
        status, session = login(short, user.email, user.key)
        assert status == 200
        assert short.call("GET", "/state", token=session["token"])[0] == 200
    finally:
        assert short.stop() == 0


def test_password_change_replaces_both_and_ends_every_other_token(relay: RelayProcess) -> None:
    user = User(relay)
    _, second = login(relay, user.email, user.key, new_address())
    user.bind(wrapped=b"w" * 60)
    new_key = key()
    for bad in ({"login_key": b64(new_key)}, {"login_key": b64(new_key), "wrapped_key": None}, {"wrapped_key": "AA=="}):
        status, body = user.call("POST", "/password", bad)
        assert status == 400 and body["error"] == "malformed", bad
    assert relay.call("GET", "/state", token=second["token"])[0] == 200  # nothing changed yet

    status, _ = user.call("POST", "/password", {"login_key": b64(new_key), "wrapped_key": b64(b"v" * 60)})
    assert status == 200
    status, body = relay.call("GET", "/state", token=second["token"])
    assert status == 401 and body["error"] == "auth_failed"
    status, info = user.call("GET", "/account")
    assert status == 200 and base64.b64decode(info["wrapped_key"]) == b"v" * 60
    assert login(relay, user.email, user.key, new_address())[0] == 401
    assert login(relay, user.email, new_key, new_address())[0] == 200

    unbound = User(relay)  # no library, so no wrapped key to replace: null is fine
    assert unbound.call("POST", "/password", {"login_key": b64(key()), "wrapped_key": None})[0] == 200
    assert unbound.call("GET", "/account")[1]["wrapped_key"] is None


def test_bind_new_same_and_bound(relay: RelayProcess) -> None:
    user = User(relay)
    library = new_library()
    status, body = user.call("POST", "/bind", {"library_id": library, "wrapped_key": b64(b"a" * 60)})
    assert (status, body) == (200, {"bound": "new"})
    status, body = user.call("POST", "/bind", {"library_id": library, "wrapped_key": b64(b"b" * 60)})
    assert (status, body) == (200, {"bound": "same"})
    other = new_library()
    status, body = user.call("POST", "/bind", {"library_id": other, "wrapped_key": b64(b"c" * 60)})
    assert status == 409 and body["error"] == "bound" and body["library_id"] == library
    info = user.call("GET", "/account")[1]
    assert info["library_id"] == library and base64.b64decode(info["wrapped_key"]) == b"a" * 60  # nothing replaced
    for bad in (
        {"library_id": "UPPERCASEUPPERCA", "wrapped_key": b64(b"a")},
        {"library_id": library},
        {"library_id": library, "wrapped_key": ""},
        {"library_id": library, "wrapped_key": "not base64!"},
        {"library_id": 5, "wrapped_key": b64(b"a")},
    ):
        status, body = User(relay).call("POST", "/bind", bad)
        assert status == 400 and body["error"] == "malformed", bad


# --- change sets -------------------------------------------------------------------------------


def test_push_duplicates_gap_and_pull(relay: RelayProcess) -> None:
    user = User(relay)
    user.bind()
    second = user.another_device()  # a device stores its own change sets only (relay.md §5.2)
    one, two = user.device, second.device
    blobs = [os.urandom(100 + n) for n in range(4)]
    assert user.push((one, 1, 1, blobs[0]), (one, 2, 3, blobs[1])) == (200, {"stored": 2, "duplicates": 0})
    assert second.push((two, 1, 1, blobs[2])) == (200, {"stored": 1, "duplicates": 0})
    status, body = user.push((one, 1, 1, blobs[0]), (one, 2, 3, blobs[1]))
    assert (status, body) == (200, {"stored": 0, "duplicates": 2})
    assert second.push((two, 1, 1, blobs[2])) == (200, {"stored": 0, "duplicates": 1})
    before = user.snapshot()
    assert before[1] == {"heads": {one: 3, two: 1}, "last_num": 3}
    assert before[0]["used_bytes"] == sum(map(len, blobs[:3])) and before[0]["change_sets"] == 3

    # A gap anywhere refuses the whole request: the good first item is not stored either.
    for by, items, device, head in (
        (user, [(one, 4, 4, blobs[3]), (one, 6, 6, blobs[3])], one, 3),
        (user, [(one, 4, 4, blobs[3]), (one, 3, 5, blobs[3])], one, 3),  # overlaps the head
        (user, [(one, 2, 2, blobs[3])], one, 3),  # within what is stored, but not a change set stored
        (second, [(two, 3, 3, blobs[3])], two, 1),
    ):
        status, body = by.push(*items)
        assert status == 409 and body["error"] == "gap" and body["message"], items
        assert (body["device"], body["head"]) == (device, head)  # what the relay holds, to resume from
        assert user.snapshot() == before
    status, body = second.push((two, 2, 2, blobs[3]))
    assert (status, body) == (200, {"stored": 1, "duplicates": 0})

    status, page = user.call("GET", "/changesets?after=0&limit=2")
    assert status == 200 and page["more"] is True
    assert [(i["num"], i["device"], i["first"], i["last"]) for i in page["items"]] == [(1, one, 1, 1), (2, one, 2, 3)]
    assert [base64.b64decode(i["blob"]) for i in page["items"]] == blobs[:2]
    status, page = user.call("GET", "/changesets?after=2")
    assert status == 200 and page["more"] is False
    assert [(i["num"], i["device"], base64.b64decode(i["blob"])) for i in page["items"]] == [
        (3, two, blobs[2]),
        (4, two, blobs[3]),
    ]
    assert user.call("GET", "/changesets?after=4") == (200, {"items": [], "more": False})
    assert user.call("GET", "/changesets?limit=100000")[1]["more"] is False  # clamped to 256
    for query in ("after=-1", "after=x", "limit=0", "limit=", "after=1e3"):
        status, body = user.call("GET", f"/changesets?{query}")
        assert status == 400 and body["error"] == "malformed", query
    assert user.call("GET", "/state")[1] == {"heads": {one: 3, two: 2}, "last_num": 4}


def test_a_page_holds_at_most_8_mib_of_blobs(relay: RelayProcess) -> None:
    user = User(relay)
    device = user.device
    big = [os.urandom(3 * 1024 * 1024) for _ in range(3)]
    assert user.push(*[(device, n + 1, n + 1, blob) for n, blob in enumerate(big)]) == (
        200,
        {"stored": 3, "duplicates": 0},
    )
    status, page = user.call("GET", "/changesets")
    assert status == 200 and len(page["items"]) == 2 and page["more"] is True
    status, page = user.call("GET", "/changesets?after=2")
    assert status == 200 and len(page["items"]) == 1 and page["more"] is False
    assert base64.b64decode(page["items"][0]["blob"]) == big[2]


# --- chunks ------------------------------------------------------------------------------------


def test_chunks_have_put_get(relay: RelayProcess) -> None:
    user = User(relay)
    first, second = os.urandom(32).hex(), os.urandom(32).hex()
    blob = os.urandom(130_000)
    assert user.call("POST", "/chunks/have", {"ids": [first, second]}) == (200, {"have": [False, False]})
    status, _ = user.call("PUT", f"/chunks/{first}", raw=blob, headers={"Content-Type": "application/octet-stream"})
    assert status == 201
    status, _ = user.call("PUT", f"/chunks/{first}", raw=os.urandom(10))
    assert status == 200  # already there: kept as it was
    assert user.call("POST", "/chunks/have", {"ids": [first, second, first]}) == (200, {"have": [True, False, True]})
    status, headers, data = user.relay.request("GET", f"{API}/chunks/{first}", token=user.token)
    assert status == 200 and data == blob and headers["Content-Type"] == "application/octet-stream"
    status, body = user.call("GET", f"/chunks/{second}")
    assert status == 404 and body["error"] == "not_found"
    info = user.call("GET", "/account")[1]
    assert info["chunks"] == 1 and info["used_bytes"] == len(blob)

    for bad in ("ABC", first.upper(), first + "0", "..%2F..%2Fx"):
        status, body = user.call("GET", f"/chunks/{bad}")
        assert status in (400, 404) and body["error"] in ("malformed", "not_found"), bad
    status, body = user.call("PUT", f"/chunks/{second}", raw=os.urandom(1024 * 1024 + 1))
    assert status == 413 and body["error"] == "too_large"
    status, body = user.call("PUT", f"/chunks/{second}", raw=b"")
    assert status == 400 and body["error"] == "malformed"
    for ids in ([], [first] * 1025, ["xyz"], [1], None, "abc"):
        status, body = user.call("POST", "/chunks/have", {"ids": ids})
        assert status == 400 and body["error"] == "malformed", ids
    assert user.call("GET", "/account")[1] == info  # nothing changed


# --- quota and purge ---------------------------------------------------------------------------


def blob_files(relay: RelayProcess, account: str) -> int:
    return sum(len(files) for _, _, files in os.walk(relay.data / "blobs" / account))


def test_quota_refuses_whole_requests_and_purge_resets(strict: RelayProcess) -> None:
    user = User(strict)
    user.bind()
    device = user.device
    assert user.push((device, 1, 1, os.urandom(40_000)))[0] == 200
    before = user.snapshot()
    status, body = user.push((device, 2, 2, os.urandom(20_000)), (device, 3, 3, os.urandom(10_000)))
    assert status == 507 and body["error"] == "quota_exceeded" and body["message"]
    assert user.snapshot() == before and blob_files(strict, user.account) == 1
    assert user.push((device, 2, 2, os.urandom(20_000)))[0] == 200
    chunk = os.urandom(32).hex()
    status, body = user.call("PUT", f"/chunks/{chunk}", raw=os.urandom(10_000))
    assert status == 507 and body["error"] == "quota_exceeded"
    assert user.call("POST", "/chunks/have", {"ids": [chunk]})[1] == {"have": [False]}
    assert user.call("PUT", f"/chunks/{chunk}", raw=os.urandom(5_000))[0] == 201
    info = user.call("GET", "/account")[1]
    assert (info["used_bytes"], info["quota_bytes"], info["change_sets"], info["chunks"]) == (65_000, 65_536, 2, 1)
    assert blob_files(strict, user.account) == 3
    # What is stored stays readable.
    status, page = user.call("GET", "/changesets")
    assert status == 200 and len(page["items"]) == 2

    status, body = user.call("POST", "/purge")
    assert (status, body) == (200, {"change_sets": 2, "chunks": 1, "bytes": 65_000})
    info, state = user.snapshot()
    assert (info["used_bytes"], info["change_sets"], info["chunks"], info["library_id"], info["wrapped_key"]) == (
        0,
        0,
        0,
        None,
        None,
    )
    assert state == {"heads": {}, "last_num": 2}  # nums are never reused, so old cursors miss nothing
    assert user.call("GET", "/changesets") == (200, {"items": [], "more": False})
    assert user.call("GET", f"/chunks/{chunk}")[0] == 404
    deadline = time.monotonic() + 5
    while blob_files(strict, user.account) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert blob_files(strict, user.account) == 0
    user.bind()  # another library can bind now
    assert user.push((device, 1, 1, b"again")) == (200, {"stored": 1, "duplicates": 0})
    assert user.call("GET", "/changesets")[1]["items"][0]["num"] == 3


# --- isolation ---------------------------------------------------------------------------------


def test_one_accounts_token_never_reaches_another_accounts_data(relay: RelayProcess) -> None:
    shared = Ed25519PrivateKey.generate()  # one device in two accounts: the same device id in both
    alice, bob = User(relay, shared), User(relay, shared)
    bob_library = bob.bind(wrapped=b"bob" * 20)
    alice.bind()
    device = bob.device
    bob_blob, bob_chunk, chunk_id = os.urandom(500), os.urandom(700), os.urandom(32).hex()
    assert bob.push((device, 1, 2, bob_blob))[0] == 200
    assert bob.call("PUT", f"/chunks/{chunk_id}", raw=bob_chunk)[0] == 201
    bob_before = bob.snapshot()

    assert alice.call("GET", f"/chunks/{chunk_id}")[0] == 404
    assert alice.call("POST", "/chunks/have", {"ids": [chunk_id]})[1] == {"have": [False]}
    for query in ("", "?after=0", f"?account={bob.account}", "?after=0&limit=256"):
        assert alice.call("GET", "/changesets" + query)[1] == {"items": [], "more": False}
    assert alice.call("GET", f"/state?account={bob.account}")[1] == {"heads": {}, "last_num": 0}
    assert alice.call("GET", "/account", headers={"X-Account": bob.account})[1]["account"] == alice.account
    status, body = alice.call("POST", "/bind", {"library_id": bob_library, "wrapped_key": b64(b"x")})
    assert status == 409 and body["error"] == "bound"  # alice's own binding, not bob's

    # The same device and sequence, the same chunk id: alice's own, stored beside bob's.
    assert alice.push((device, 1, 2, b"alice's")) == (200, {"stored": 1, "duplicates": 0})
    assert alice.call("PUT", f"/chunks/{chunk_id}", raw=b"alice's chunk")[0] == 201
    assert relay.request("GET", f"{API}/chunks/{chunk_id}", token=bob.token)[2] == bob_chunk
    assert relay.request("GET", f"{API}/chunks/{chunk_id}", token=alice.token)[2] == b"alice's chunk"
    assert alice.call("POST", "/purge")[0] == 200
    assert bob.snapshot() == bob_before
    assert base64.b64decode(bob.call("GET", "/changesets")[1]["items"][0]["blob"]) == bob_blob


# --- hostile input -----------------------------------------------------------------------------


def test_malformed_and_oversized_bodies_change_nothing(relay: RelayProcess) -> None:
    user = User(relay)
    user.bind()
    device = user.device
    assert user.push((device, 1, 1, b"x"))[0] == 200
    before = user.snapshot()
    good = {"device": device, "first": 2, "last": 2, "blob": b64(b"y")}
    cases: list[tuple[str, bytes]] = [
        ("/changesets", b"not json"),
        ("/changesets", b"\xff\xfe"),
        ("/changesets", b"[]"),
        ("/changesets", b"{}"),
        ("/changesets", json.dumps({"items": {"0": good}}).encode()),
        ("/changesets", json.dumps({"items": [good, {**good, "device": "nope"}]}).encode()),
        ("/changesets", json.dumps({"items": [good, {**good, "first": 3, "last": 3, "blob": "***"}]}).encode()),
        ("/changesets", json.dumps({"items": [{**good, "first": 2.0}]}).encode()),
        ("/changesets", json.dumps({"items": [{**good, "first": True, "last": True}]}).encode()),
        ("/changesets", json.dumps({"items": [{**good, "first": 3, "last": 2}]}).encode()),
        ("/changesets", json.dumps({"items": [{**good, "first": 0, "last": 0}]}).encode()),
        ("/changesets", json.dumps({"items": [{**good, "last": 2**60}]}).encode()),
        ("/changesets", json.dumps({"items": [{**good, "blob": ""}]}).encode()),
        ("/changesets", b'{"items": [' + json.dumps(good).encode() + b"]"),  # cut short
        ("/bind", b"null"),
        ("/bind", b'{"library_id": "aaaaaaaaaaaaaaaa", "wrapped_key": 1}'),
        ("/password", b"[1, 2]"),
        ("/chunks/have", b'{"ids": "x"}'),
    ]
    for path, raw in cases:
        status, body = user.call("POST", path, raw=raw)
        assert status == 400 and body["error"] == "malformed" and body["message"], (path, raw[:80])
        assert user.snapshot() == before
    huge = b'{"items": [{"blob": "' + b"A" * (16 * 1024 * 1024) + b'"}]}'
    status, body = user.call("POST", "/changesets", raw=huge)
    assert status == 413 and body["error"] == "too_large"
    assert user.snapshot() == before
    # A body without a length (chunked), too large: refused as it arrives.
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=30)
    try:
        headers = {"P2PSync-Protocol": "1", "Authorization": f"Bearer {user.token}"}
        conn.request(
            "POST", API + "/changesets", iter([huge[i : i + 2**20] for i in range(0, len(huge), 2**20)]), headers
        )
        response = conn.getresponse()
        assert response.status == 413 and json.loads(response.read())["error"] == "too_large"
    finally:
        conn.close()
    assert user.snapshot() == before


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def target(relay: RelayProcess) -> tuple[User, str, str]:
    """One bound account for the hypothesis tests, with a few change sets of one device."""
    user = User(relay)
    library = user.bind(wrapped=b"k" * 60)
    device = user.device
    assert user.push((device, 1, 1, b"one"), (device, 2, 2, b"two"))[0] == 200
    return user, library, device


def _items(device: str) -> st.SearchStrategy[Any]:
    field = st.one_of(json_values, st.integers(-3, 5))
    item = st.fixed_dictionaries(
        {},
        optional={
            "device": st.one_of(st.just(device), st.just(new_device()), json_values),
            "first": field,
            "last": field,
            "blob": st.one_of(st.just(b64(b"z")), st.just("=="), st.just(""), json_values),
        },
    )
    return st.one_of(json_values, st.fixed_dictionaries({"items": st.one_of(st.lists(item, max_size=3), json_values)}))


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_json_at_changesets_is_a_4xx_and_changes_nothing(target: tuple[User, str, str], data: Any) -> None:
    user, _, device = target
    body = data.draw(_items(device))
    before = user.snapshot()
    status, answer = user.call("POST", "/changesets", raw=json.dumps(body).encode())
    assert status < 500, answer
    if status >= 400:
        assert set(answer) >= {"error", "message"} and answer["error"] in ("malformed", "gap", "wrong_device")
        assert user.snapshot() == before
    else:
        assert status == 200 and set(answer) == {"stored", "duplicates"}  # a body that was valid after all


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {},
            optional={
                "library_id": st.one_of(st.sampled_from(["aaaaaaaaaaaaaaaa", "AAAA", ""]), json_values),
                "wrapped_key": st.one_of(st.sampled_from([b64(b"q" * 60), "", "!!"]), json_values),
            },
        ),
    )
)
def test_random_json_at_bind_is_a_4xx_and_changes_nothing(target: tuple[User, str, str], body: Any) -> None:
    user, library, _ = target
    before = user.snapshot()
    status, answer = user.call("POST", "/bind", raw=json.dumps(body).encode())
    assert 400 <= status < 500 and answer["error"] in ("malformed", "bound"), answer
    assert user.snapshot() == before and before[0]["library_id"] == library


# --- the process -------------------------------------------------------------------------------


def test_a_second_relay_on_the_same_data_is_refused(relay: RelayProcess) -> None:
    done = subprocess.run(
        [*P2PSYNC, "relay", "serve", "--port", "0", "--data", str(relay.data)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and "Another relay is using" in done.stderr and done.stdout == ""


def test_serve_options_are_checked(tmp_path: Path) -> None:
    assert parse_size("500MB") == 500_000_000
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("1.5 gb") == 1_500_000_000
    assert parse_size("64KiB") == 65_536
    assert parse_size("1000") == 1000
    assert parse_size("unlimited") is None
    for bad in ("abc", "5 parsecs", "-1MB", "0", ""):
        with pytest.raises(click.BadParameter):
            parse_size(bad)
    for argv in (["--quota", "lots"], ["--tls-cert", __file__], ["--port", "70000"]):
        done = subprocess.run(
            [*P2PSYNC, "relay", "serve", "--data", str(tmp_path), *argv], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 2 and done.stdout == "", argv
    done = subprocess.run([*P2PSYNC, "relay", "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "--quota" in done.stdout


def test_stop_finishes_the_request_in_flight_and_exits_0(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "data")
    body = json.dumps({"email": new_email(), "login_key": b64(key())}).encode()
    with socket.create_connection(("127.0.0.1", relay.port), timeout=30) as sock:
        sock.sendall(
            b"POST /relay/v1/signup HTTP/1.1\r\nHost: relay\r\nP2PSync-Protocol: 1\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        time.sleep(0.3)
        os.kill(relay.proc.pid, signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(OSError):  # no new connections once stopping
            socket.create_connection(("127.0.0.1", relay.port), timeout=2).close()
        sock.sendall(body[10:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201") and b'"token"' in answer
    assert relay.stop() == 0
    lines = [json.loads(line) for line in relay.log_lines()]
    assert [line["event"] for line in lines if "event" in line] == ["listening", "stopping", "stopped"]
    assert [line["status"] for line in lines if "status" in line] == [201]  # answered while stopping
    assert RelayProcess(tmp_path / "data").stop() == 0  # the folder is free again


def test_sigkill_mid_push_keeps_every_answered_change_set(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "data")
    user = User(relay)
    device = user.device
    sent: dict[int, bytes] = {}
    answered = 0
    killer = threading.Timer(0.6, os.kill, [relay.proc.pid, signal.SIGKILL])
    killer.start()
    try:
        while True:
            blob = os.urandom(50_000)
            sent[answered + 1] = blob
            status, _ = user.push((device, answered + 1, answered + 1, blob))
            assert status == 200
            answered += 1
    except (ConnectionError, http.client.HTTPException):
        pass  # killed mid-request
    finally:
        killer.join()
    assert relay.stop() == -signal.SIGKILL and answered > 0
    again = RelayProcess(tmp_path / "data")
    try:
        user.relay = again  # the token was stored before it was given out, so it still works
        heads = user.call("GET", "/state")[1]["heads"]
        assert heads.get(device, 0) >= answered  # the one in flight may or may not have made it
        items: list[Any] = []
        while True:
            page = user.call("GET", f"/changesets?after={items[-1]['num'] if items else 0}")[1]
            items += page["items"]
            if not page["more"]:
                break
        assert [(i["first"], base64.b64decode(i["blob"])) for i in items] == [
            (n, sent[n]) for n in range(1, heads[device] + 1)
        ]
        assert list((again.data / "tmp").iterdir()) == []
    finally:
        assert again.stop() == 0


def test_tls(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(private, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    relay = RelayProcess(
        tmp_path / "data", "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")
    )
    try:
        assert relay.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        context.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", relay.port, context=context, timeout=10)
        conn.request("GET", API + "/health")
        assert json.loads(conn.getresponse().read()) == {"ok": True, "protocol": [1]}
        conn.close()
    finally:
        assert relay.stop() == 0


def test_log_lines_are_json_and_hold_no_secrets(relay: RelayProcess) -> None:
    """Runs after the tests above on the shared relay: every line JSON, no token, no e-mail."""
    User(relay).call("GET", "/state")
    text = relay.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    access = [line for line in lines if "status" in line]
    assert len(access) > 100
    assert all(set(line) == {"time", "method", "path", "status", "ms", "account"} for line in access)
    assert {line["status"] for line in access} >= {200, 201, 204, 400, 401, 404, 405, 409, 413, 429}
    assert "example.test" not in text and "login_key" not in text
    assert SECRETS and not [token for token in SECRETS if token in text]


# --- in-process: the storage and the app with a clock that moves -------------------------------


def test_storage_limits_failed_logins_in_a_window(tmp_path: Path) -> None:
    with SqliteStorage(tmp_path) as storage:
        for n in range(5):
            assert storage.claim_login("a@x", "c1", 1000.0 + n).wait is None  # counted until released
        assert storage.claim_login("a@x", "c2", 1010.0).wait == 890
        assert storage.claim_login("b@x", "c1", 1010.0).wait == 890  # the client's five too
        storage.release_claim(storage.claim_login("b@x", "c2", 1010.0))  # the right key
        assert storage.claim_login("a@x", "c3", 1900.5).wait is None  # the oldest left the window
        assert storage.claim_login("a@x", "c3", 1900.6).wait == 1  # five again: 1001 leaves at 1901
        assert storage.db.execute("SELECT count(*) FROM login_attempts").fetchone()[0] == 5  # old ones pruned
        assert passwords.retry_after([0, 1, 2, 3], 10) is None
        assert passwords.retry_after([0, 1, 2, 3, 4], 10) == 890


def test_storage_cleans_up_after_a_crash_and_owns_its_folder(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path)
    with pytest.raises(StorageLocked):
        SqliteStorage(tmp_path)
    account = storage.create_account("a@x", b"s" * 16, b"h" * 32, 0.0)
    storage.push(account, [], None)
    storage.close()
    # What a crash can leave: a temp file, a folder half in the trash, a purge not yet swept.
    (tmp_path / "tmp" / "half.tmp").write_bytes(b"half")
    (tmp_path / "trash" / "old.0.x").mkdir()
    doomed = tmp_path / "blobs" / account / "7"
    doomed.mkdir(parents=True)
    (doomed / "blob").write_bytes(b"purged")
    db = sqlite3.connect(tmp_path / "relay.sqlite3")
    db.execute("INSERT INTO doomed (account, epoch) VALUES (?, 7)", [account])
    db.commit()
    db.close()
    with SqliteStorage(tmp_path) as storage:
        assert list((tmp_path / "tmp").iterdir()) == [] and list((tmp_path / "trash").iterdir()) == []
        assert not doomed.exists()
        assert storage.db.execute("SELECT count(*) FROM doomed").fetchone()[0] == 0


def test_app_tokens_last_30_days_and_the_window_15_minutes(tmp_path: Path) -> None:
    clock = [1_800_000_000.0]

    async def scenario() -> None:
        app = make_app(SqliteStorage(tmp_path), None, clock=lambda: clock[0])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}{API}"
        login_key = b64(key())
        try:
            async with aiohttp.ClientSession(headers={"P2PSync-Protocol": "1"}) as http:

                async def call(method: str, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any]:
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    async with http.request(method, base + path, headers=headers, **kw) as response:
                        return response.status, await response.json()

                device = proof("a@x.test", now=clock[0])
                body = {"email": "a@x.test", "login_key": login_key, "device": device}
                status, session = await call("POST", "/signup", json=body)
                assert status == 201 and session["expires"] == "2027-02-14T08:00:00Z"  # 1.8e9 s + 30 days
                clock[0] += 30 * 86400 - 1
                assert (await call("GET", "/state", session["token"]))[0] == 200
                clock[0] += 1
                assert (await call("GET", "/state", session["token"]))[1]["error"] == "token_expired"
                for _ in range(5):
                    bad = {"email": "a@x.test", "login_key": b64(key())}
                    assert (await call("POST", "/login", json=bad))[0] == 401
                status, body = await call("POST", "/login", json={"email": "a@x.test", "login_key": login_key})
                assert status == 429 and body["retry_after"] == 900
                clock[0] += 900
                status, body = await call("POST", "/login", json={"email": "a@x.test", "login_key": login_key})
                assert status == 200
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
