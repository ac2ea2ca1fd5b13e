"""Accounts on a real relay (issue 18, items 7 and 8): secrets stay the owner's.

A real `p2psync relay serve` process on 127.0.0.1 and the real CLI (subprocesses), as a new user
and as an attacker would try them: plain http:// to another machine, the cost of the password's
key derivation (Argon2id, and accounts made with the first release's scrypt), weak passwords,
sign-up floods, probing which e-mail addresses have accounts, a sign-up that hits the storage
limit, and the daemon's relay log lines.

The suite runs with $P2PSYNC_TEST_ONLY_WEAK_KDF=1 (tests/conftest.py), so that the many accounts
the tests make do not cost half a second each; the tests here that are about the derivation's
cost run without it, at the production parameters.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2psync.store.library import Library
from tests.test_daemon_loopback import start_daemon, stop

P2PSYNC = [sys.executable, "-m", "p2psync"]
API = "/relay/v1"
PASSWORD = "correct horse battery"
WEAK_ENV = "P2PSYNC_TEST_ONLY_WEAK_KDF"
# The production parameters (protocol/relay.md §1): what a device without the test variable uses.
PRODUCTION_KDF = {"name": "argon2id", "memory_kib": 65536, "iterations": 10, "lanes": 1}
LEGACY_KDF = {"name": "scrypt", "n": 32768, "r": 8, "p": 1}
INSECURE = "uses plain http:// to another machine"


# --- a relay process and the CLI ----------------------------------------------------------------


class Relay:
    """`p2psync relay serve` on 127.0.0.1, its log in a file."""

    def __init__(self, data: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.log_path = data.parent / f"{data.name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [*P2PSYNC, "relay", "serve", "--port", "0", "--data", str(data), "--json", *extra],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError(f"the relay did not start: {self.log_path.read_text()}")
        self.url = json.loads(line)["listening"]

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGTERM)  # only the process this test started, by its PID
        try:
            assert self.proc.wait(30) == 0
        finally:
            self._log.close()

    def paths(self) -> list[str]:
        """The paths of every request the relay answered, from its access log."""
        lines = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]
        return [line["path"] for line in lines if "path" in line]

    def call(self, path: str, body: Any, token: str | None = None, address: str | None = None) -> tuple[int, Any]:
        headers = {"P2PSync-Protocol": "1", "Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if address:
            headers["X-Forwarded-For"] = address
        request = urllib.request.Request(self.url + API + path, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                data = answer.read()
                return answer.status, json.loads(data) if data else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def kdf_column(self, email: str) -> Any:
        with closing(sqlite3.connect(self.data / "relay.sqlite3", timeout=10)) as db:
            return db.execute("SELECT kdf FROM accounts WHERE email = ?", [email]).fetchone()[0]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    """The relay most tests share; behind a (pretend) proxy, so HTTP probes come from addresses of
    their own. The CLI sends no X-Forwarded-For: its requests count for 127.0.0.1."""
    server = Relay(tmp_path_factory.mktemp("relay") / "data", "--trust-proxy")
    yield server
    server.stop()


def cli_env(home: Path, weak: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("P2PSYNC_LIBRARY", WEAK_ENV)}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "xdg"))
    if weak:
        env[WEAK_ENV] = "1"
    return env


def run(home: Path, library: Path, *args: str, stdin: str = "", weak: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*P2PSYNC, "--library", str(library), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(home, weak),
        timeout=120,
    )


def account(home: Path, library: Path, verb: str, url: str, email: str, password: str = PASSWORD, *extra: str,
            weak: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    args = ["account", verb, "--relay", url, "--email", email, "--password-stdin", "--yes", *extra]
    return run(home, library, *args, stdin=password + "\n", weak=weak)


def new_email() -> str:
    return f"{uuid.uuid4().hex[:12]}@example.test"


def new_address() -> str:
    return f"198.51.100.{int.from_bytes(os.urandom(1)) % 250 + 1}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def titles(path: Path) -> list[str]:
    with Library.open(path) as library:
        return sorted(r["title"] for r in library.list_references())


def library_with(path: Path, *titles: str) -> None:
    with Library.create(path, path.name) as library:
        for title in titles:
            library.add_reference({"title": title})


# --- 1. plain http:// only to this machine ------------------------------------------------------


def test_plain_http_to_another_machine_is_refused_before_any_connection(tmp_path: Path) -> None:
    """192.0.2.1 is TEST-NET-1 (RFC 5737): nothing is there, and nothing may be sent there."""
    for verb in ("signup", "login"):
        library = tmp_path / f"new-{verb}"
        start = time.monotonic()
        proc = account(tmp_path, library, verb, "http://192.0.2.1:8740", "ada@example.org")
        assert proc.returncode == 1, proc
        assert proc.stderr.startswith("Error: The relay address http://192.0.2.1:8740 " + INSECURE), proc.stderr
        assert "https://" in proc.stderr and proc.stderr.count("\n") == 1
        assert time.monotonic() - start < 10  # the CLI's start-up, not a connection timing out
        assert not library.exists()  # refused before anything was made
    # A relay URL stored before this check (an older version) is refused wherever it is used.
    library = tmp_path / "linked"
    library_with(library, "Linked long ago")
    with Library.open(library) as lib, lib.db:
        lib.db.execute("INSERT INTO meta (key, value) VALUES ('relay_url', 'http://192.0.2.1:8740')")
        lib.db.execute("INSERT INTO meta (key, value) VALUES ('relay_email', 'ada@example.org')")
        lib.db.execute("INSERT INTO meta (key, value) VALUES ('relay_token', ?)", ["t" * 43])
        lib.db.execute("INSERT INTO meta (key, value) VALUES ('relay_key', ?)", [b64(b"k" * 32)])
    for args in (["sync", "--relay-only"], ["account", "status"]):
        start = time.monotonic()
        proc = run(tmp_path, library, *args)
        assert INSECURE in proc.stdout + proc.stderr, (args, proc)
        assert time.monotonic() - start < 10
    # https:// anywhere, and http:// to this machine, are accepted (normalize_url connects nowhere).
    from p2psync.relay.client import normalize_url

    for url in ("https://192.0.2.1", "http://127.0.0.1:8740", "http://127.9.9.9", "http://[::1]:1", "http://localhost"):
        assert normalize_url(url) == url


# --- 2. the password's key derivation -----------------------------------------------------------


def test_production_kdf_is_argon2id_memory_hard_and_the_test_floor_is_not_reachable_by_accident(
    tmp_path: Path,
) -> None:
    """Derives once with the production parameters in a child without the test variable, and
    measures its peak memory (VmHWM, from the RSS before) and time."""
    script = """
import json, re, time
from p2psync.relay import kdf, crypto
def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
params = kdf.default_params()
with open("/proc/self/clear_refs", "w") as reset:
    reset.write("5")  # the peak RSS starts again from the current RSS (Linux): imports do not count
before = peak_kib()
start = time.perf_counter()
login_key, wrap_key = crypto.derive_keys("ada@example.org", "correct horse battery", params)
seconds = time.perf_counter() - start
grown = peak_kib() - before
refused = []
for weak in (kdf.TEST_PARAMS, kdf.KdfParams.from_wire({"name": "argon2id", "memory_kib": 65536,
             "iterations": 1, "lanes": 1})):
    try:
        kdf.check(weak)
    except Exception as exc:
        refused.append(str(exc))
print(json.dumps({"params": params.as_wire(), "seconds": seconds, "grown_kib": grown, "refused": refused}))
"""
    env = cli_env(tmp_path, weak=False)
    out = json.loads(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                    timeout=120, check=True).stdout)  # fmt: skip
    assert out["params"] == PRODUCTION_KDF
    assert out["grown_kib"] >= 60 * 1024, out  # 64 MiB of Argon2 memory, really touched
    assert out["grown_kib"] <= 100 * 1024, out  # and not much more: the daemon's budget is 200 MB
    assert 0.1 <= out["seconds"] <= 5.0, out  # about 0.5 s here (docs/security.md)
    assert len(out["refused"]) == 2 and all("weaker" in r for r in out["refused"]), out
    # Any other value of the variable than "1" is refused, not taken as "off" or "on".
    bad = {**env, WEAK_ENV: "yes"}
    proc = subprocess.run([sys.executable, "-c", script], env=bad, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and WEAK_ENV in proc.stderr


def test_a_production_relay_refuses_an_account_made_with_the_test_parameters(tmp_path: Path) -> None:
    server = Relay(tmp_path / "data", env=cli_env(tmp_path, weak=False))
    try:
        email = new_email()
        status, body = server.call("/prelogin", {"email": email})
        assert status == 200 and body == {"kdf": PRODUCTION_KDF}  # what an unknown address is told
        weak = {"name": "argon2id", "memory_kib": 256, "iterations": 1, "lanes": 1}
        status, body = server.call("/signup", {"email": email, "login_key": b64(os.urandom(32)), "kdf": weak})
        assert status == 400 and body["error"] == "weak_kdf", body
        # A device built for tests cannot sign up there either: the relay says why, in one sentence.
        proc = account(tmp_path, tmp_path / "lib", "signup", server.url, email)
        assert proc.returncode == 1 and "weaker" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    finally:
        server.stop()


def _hkdf(secret: bytes, info: bytes) -> bytes:
    prk = hmac.new(b"\x00" * 32, secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def legacy_keys(email: str, password: str) -> tuple[bytes, bytes]:
    """The first release's derivation (protocol/relay.md §1, kdf "scrypt"), written out here."""
    salt = b"p2psync/1 account\x00" + email.encode()
    master = hashlib.scrypt(password.encode(), salt=salt, n=2**15, r=8, p=1, maxmem=64 << 20, dklen=32)
    return _hkdf(master, b"p2psync/1 login"), _hkdf(master, b"p2psync/1 wrap")


def meta(path: Path, key: str) -> str | None:
    with closing(sqlite3.connect(path / "library.sqlite3")) as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


def test_an_account_of_the_first_release_logs_in_and_is_upgraded(relay: Relay, tmp_path: Path) -> None:
    email = new_email()
    home = tmp_path / "home"
    library_with(home, "Written before the upgrade")
    assert account(tmp_path, home, "signup", relay.url, email).returncode == 0
    # As the first release left it: its `account password` sent the scrypt login key and the library
    # key wrapped with the scrypt wrap key, and no "kdf" (it knew none).
    with Library.open(home) as lib:
        library_id = lib.library_id
    token, library_key = meta(home, "relay_token"), base64.b64decode(meta(home, "relay_key") or "")
    login_key, wrap_key = legacy_keys(email, PASSWORD)
    nonce = os.urandom(12)
    wrapped = nonce + AESGCM(wrap_key).encrypt(nonce, library_key, b"p2psync/1 library key\x00" + library_id.encode())
    status, _ = relay.call("/password", {"login_key": b64(login_key), "wrapped_key": b64(wrapped)}, token)
    assert status == 200
    assert relay.call("/prelogin", {"email": email}) == (200, {"kdf": LEGACY_KDF})
    assert relay.kdf_column(email) is None  # an account of the first release

    # A new machine logs in with the password, at the production cost: it joins, and upgrades.
    work = tmp_path / "work"
    start = time.monotonic()
    proc = account(tmp_path, work, "login", relay.url, email, weak=False)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 30
    assert titles(work) == ["Written before the upgrade"]
    assert relay.call("/prelogin", {"email": email}) == (200, {"kdf": PRODUCTION_KDF})
    assert json.loads(relay.kdf_column(email)) == PRODUCTION_KDF
    # The scrypt login key no longer works; the machine that was logged in still is (same password).
    status, body = relay.call("/login", {"email": email, "login_key": b64(login_key)}, address=new_address())
    assert status == 401 and body["error"] == "auth_failed"
    proc = run(tmp_path, home, "sync", "--relay-only")
    assert proc.returncode == 0, proc.stderr
    # A third machine logs in with the password at the production parameters, and unwraps the key.
    proc = account(tmp_path, tmp_path / "third", "login", relay.url, email, weak=False)
    assert proc.returncode == 0, proc.stderr
    assert titles(tmp_path / "third") == ["Written before the upgrade"]


class HostileRelay:
    """A web server on 127.0.0.1, in a thread of its own, that tells weak key-derivation parameters
    and records every request it gets."""

    def __init__(self, kdf: dict[str, Any]) -> None:
        self.kdf = kdf
        self.paths: list[str] = []

    def __enter__(self) -> str:
        async def prelogin(request: web.Request) -> web.Response:
            self.paths.append(request.path)
            return web.json_response({"kdf": self.kdf})

        async def anything(request: web.Request) -> web.Response:
            self.paths.append(request.path)
            return web.json_response({"error": "auth_failed", "message": "no"}, status=401)

        async def start() -> int:
            app = web.Application()
            app.router.add_post(API + "/prelogin", prelogin)
            app.router.add_route("*", API + "/{tail:.*}", anything)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
            return int(self.runner.addresses[0][1])

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_a_hostile_relay_cannot_make_a_device_derive_weak_keys(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv(WEAK_ENV, raising=False)
    from p2psync.errors import RelayInsecure
    from tests import relay_link as link

    weak = [
        {"name": "argon2id", "memory_kib": 1024, "iterations": 10, "lanes": 1},
        {"name": "argon2id", "memory_kib": 65536, "iterations": 2, "lanes": 1},
        {"name": "scrypt", "n": 1024, "r": 8, "p": 1},
        {"name": "md5"},
        {"name": "argon2id", "memory_kib": 64 << 20, "iterations": 10, "lanes": 1},  # 64 GiB: a trap, not weak
    ]
    for n, kdf in enumerate(weak):
        hostile = HostileRelay(kdf)
        with hostile as url, Library.create(tmp_path / f"lib{n}") as library, pytest.raises(RelayInsecure) as caught:
            link.login(library, url, "ada@example.org", PASSWORD)
        assert hostile.paths == [API + "/prelogin"], (kdf, hostile.paths)  # nothing derived was sent
        message = caught.value.message
        assert "password" in message and message.endswith("."), message

    # A device that logged in with Argon2id refuses the first release's scrypt afterwards.
    hostile = HostileRelay(LEGACY_KDF)
    with hostile as url, Library.create(tmp_path / "remembers") as library:
        rows = [("relay_url", url), ("relay_email", "ada@example.org"), ("relay_kdf", json.dumps(PRODUCTION_KDF))]
        for row in rows:
            library.db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", row)
        with pytest.raises(RelayInsecure) as caught:
            link.login(library, url, "ada@example.org", PASSWORD)
    assert hostile.paths == [API + "/prelogin"] and "weaker" in caught.value.message


# --- 3. weak passwords --------------------------------------------------------------------------


def test_a_weak_password_is_refused_with_the_reason_and_nothing_is_sent(relay: Relay, tmp_path: Path) -> None:
    before = len(relay.paths())
    library = tmp_path / "lib"
    proc = account(tmp_path, library, "signup", relay.url, "weak@example.org", "password1")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("Error: This password is too easy to guess"), proc.stderr
    assert "very common password" in proc.stderr.lower()  # the estimator's own feedback
    # The e-mail address is a guess too: a password made of it is refused.
    proc = account(tmp_path, library, "signup", relay.url, "weak@example.org", "weak@example.org!")
    assert proc.returncode == 1 and "too easy to guess" in proc.stderr, proc.stderr
    assert not library.exists()
    assert len(relay.paths()) == before  # the relay heard nothing of it
    # A password change is held to the same rule.
    email = new_email()
    home = tmp_path / "home"
    assert account(tmp_path, home, "signup", relay.url, email).returncode == 0
    proc = run(tmp_path, home, "account", "password", "--password-stdin", stdin="qwerty123\nqwerty123\n")
    assert proc.returncode == 1 and "too easy to guess" in proc.stderr, proc.stderr


# --- 4. sign-ups per address, and which addresses have accounts -----------------------------------


def test_signups_are_limited_per_client_address(tmp_path: Path) -> None:
    server = Relay(tmp_path / "data", "--trust-proxy", "--signups-per-hour", "3")
    try:
        address, taken = new_address(), new_email()
        for n in range(3):
            email = taken if n == 0 else new_email()
            status, body = server.call("/signup", {"email": email, "login_key": b64(os.urandom(32))}, address=address)
            assert status == 201, body
        for email in (new_email(), taken):  # refused alike, taken or not
            status, body = server.call("/signup", {"email": email, "login_key": b64(os.urandom(32))}, address=address)
            assert status == 429 and body["error"] == "rate_limited" and 3000 < body["retry_after"] <= 3600, body
        status, _ = server.call("/signup", {"email": new_email(), "login_key": b64(os.urandom(32))}, new_address())
        assert status == 201  # another address may
    finally:
        server.stop()
    # The default: 10 an hour.
    server = Relay(tmp_path / "default", env=cli_env(tmp_path))
    try:
        statuses = [server.call("/signup", {"email": new_email(), "login_key": b64(os.urandom(32))})[0]
                    for _ in range(11)]  # fmt: skip
        assert statuses == [201] * 10 + [429]
    finally:
        server.stop()


def test_a_taken_address_answers_a_signup_like_a_wrong_password(relay: Relay, tmp_path: Path) -> None:
    email, key = new_email(), os.urandom(32)
    status, created = relay.call("/signup", {"email": email, "login_key": b64(key)}, address=new_address())
    assert status == 201
    unknown = relay.call("/login", {"email": new_email(), "login_key": b64(key)}, address=new_address())
    wrong = relay.call("/login", {"email": email, "login_key": b64(os.urandom(32))}, address=new_address())
    taken = relay.call("/signup", {"email": email, "login_key": b64(os.urandom(32))}, address=new_address())
    assert taken == wrong == unknown and taken[0] == 401 and taken[1]["error"] == "auth_failed"
    # With the right key a sign-up of a taken address logs in, as /login would.
    status, session = relay.call("/signup", {"email": email, "login_key": b64(key)}, address=new_address())
    assert status == 200 and session["account"] == created["account"] and session["token"] != created["token"]
    # And a sign-up to a taken address counts as a failed login: five, then 429 whatever the key.
    for _ in range(3):
        assert relay.call("/signup", {"email": email, "login_key": b64(os.urandom(32))}, new_address())[0] == 401
    status, body = relay.call("/signup", {"email": email, "login_key": b64(key)}, address=new_address())
    assert status == 429 and body["error"] == "rate_limited"
    # Through the CLI: a second machine that "signs up" with the right password joins the account.
    other = new_email()
    library_with(tmp_path / "first", "First machine")
    assert account(tmp_path, tmp_path / "first", "signup", relay.url, other).returncode == 0
    proc = account(tmp_path, tmp_path / "second", "signup", relay.url, other)
    assert proc.returncode == 0, proc.stderr
    assert titles(tmp_path / "second") == ["First machine"]


# --- 5. item 8: the storage limit at sign-up, log lines, leftover folders ------------------------


def test_a_signup_stopped_by_the_storage_limit_exits_1_and_says_so(tmp_path: Path) -> None:
    server = Relay(tmp_path / "data", "--quota", "300KB")
    try:
        library = tmp_path / "lib"
        with Library.create(library, "lib") as lib:
            ref = lib.add_reference({"title": "A long scan"})
            pdf = tmp_path / "scan.pdf"
            pdf.write_bytes(b"%PDF-1.7\n" + os.urandom(3_000_000))  # many chunks, ten times the limit
            lib.attach(ref, pdf)
        proc = account(tmp_path, library, "signup", server.url, new_email())
        assert proc.returncode == 1, proc
        assert proc.stderr.endswith("Error: The account's storage limit on the relay is reached; what is stored "
                                    "stays and changes still come in, but nothing more goes up until the relay's "
                                    "operator raises the limit or the account is purged.\n"), proc.stderr  # fmt: skip
        assert "never awaited" not in proc.stderr and "Traceback" not in proc.stderr
        assert "Signed up as" in proc.stdout  # the account was made and linked: only the upload stopped
        proc = run(tmp_path, library, "sync", "--relay-only")
        assert proc.returncode == 1 and "storage limit" in proc.stderr and "never awaited" not in proc.stderr
    finally:
        server.stop()


def test_the_daemon_logs_relay_rounds_in_words(relay: Relay, tmp_path: Path) -> None:
    home = tmp_path / "home"
    library_with(home, "Logged in words")
    assert account(tmp_path, home, "signup", relay.url, new_email()).returncode == 0
    daemon, _port = start_daemon(home, "--interval", "1s")
    try:
        time.sleep(3)
    finally:
        code, err = stop(daemon)
    assert code == 0, err
    lines = [line for line in err.splitlines() if "with the relay" in line]
    assert lines, err
    for line in lines:
        assert "{" not in line and "'" not in line, line
        assert "change sets in" in line and " out" in line, line


def test_a_failed_signup_or_login_leaves_no_library_folder(relay: Relay, tmp_path: Path) -> None:
    cases = [
        ("signup", "http://127.0.0.1:9", PASSWORD),  # nothing listens there
        ("login", relay.url, "a wrong but long password"),
        ("signup", relay.url, "abc"),  # too weak
    ]
    for verb, url, password in cases:
        library = tmp_path / "deep" / "new" / "library"
        proc = account(tmp_path, library, verb, url, new_email(), password)
        assert proc.returncode == 1, proc
        assert not (tmp_path / "deep").exists(), (verb, url, proc.stderr)
    # A library that was there before stays, whatever happens.
    library = tmp_path / "kept"
    library_with(library, "Mine")
    proc = account(tmp_path, library, "login", relay.url, new_email(), "a wrong but long password")
    assert proc.returncode == 1 and titles(library) == ["Mine"]
