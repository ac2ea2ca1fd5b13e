"""The relay inside the deterministic simulation: a real relay, the real client.

RelayWorld runs the relay application of p2psync/relay/server.py (make_app, with its SQLite
storage in `tmp`) in this process, on 127.0.0.1 at a port of its own, on a background thread's
event loop, as relay/serving.py runs it in a process. The devices' side is the real client code:
link_rules.login / reset and sync_round.sync_with_relay through library_calls.OnThisThread, each
call one `asyncio.run` on the caller's thread (as tests/relay_link.py does). The simulation is
single-threaded and runs one step at a time, and every device call waits for its answer, so the
order of everything the relay does is fixed by the schedule; the relay's own thread only answers.

One account per RelayWorld (EMAIL, PASSWORD): the first device signs it up and binds its library,
the others log in to it (a merge is answered yes; no backups are made). Keys, tokens and nonces are
random (os.urandom, as in reality): they never change what a library holds, only its bytes.

Errors: every method raises what the real code raises (P2PSyncError subclasses: RelayError and
its family, DeviceRemoved for a removed device, RelayBoundElsewhere...); the world catches them.
A login's own first sync reports its errors instead of raising them (link_rules: the login itself
worked), as the CLI's `account login` does.

Time (the virtual clock). The simulation patches p2psync.engine.clock.now_ms with per-device
skewed virtual time. What reads time on the relay path:
- the device: clock.now_ms for the library's hybrid logical clock (every entry a sync writes) and
  for relay_last_sync / relay_last_error_at (status only): skewed, as in reality, harmless;
- the device proof sent at signup/login (relay/keys.proof) reads time.time(), not clock.now_ms,
  so the simulation's skew does not reach it;
- the relay: its own clock (make_app's `clock`, time.time here, never skewed) for token expiry
  (30 days), the proof's time window (keyring.PROOF_SECONDS, one hour), sign-up and failed-login
  rate limits, and the times it records (devices, revocations, key rotations).
So in the simulation no step is refused for skew. In reality a device whose wall clock is more
than an hour off the relay's is refused at signup/login (400 `clock`: a RelayError "...clock is
more than an hour off...") and its sync goes on with the token it has. A run lasts minutes and the
relay reads wall time only against windows of an hour or more, so this does not break replay.
(tests/test_chaos_relay_actor.py: devices 7 and 9 hours off converge through the relay.)
Sign-ups per hour from 127.0.0.1 are not limited here (the simulation signs up once per relay).

Speed (shared 2-core machine under load, medians of 15 runs, tiny libraries): a relay started
in 39 ms (max 92), signup 129 ms (about half of it the relay hashing the login key), login 86 ms
(its own sync included), a sync round 9 ms with nothing to move and 15 ms with one edit, restart
14 ms, close 1.4 ms. So one relay per seed; 100 seeds of start, signup, login, two syncs,
restart and close ran in about 0.22 s each, and left no thread or file descriptor behind.

`snoop` is the removed device turned attacker; it is written against the most stable parts of the
API (read_link for url and token, the keys in the library, RelayClient.changesets and .account,
crypto.decrypt_changeset / unwrap_library_key), so it can be adapted to older code. At 8638958^
(a removed device's token still pulled, and the key never changed) this module runs with these
changes: link_rules -> `p2psync.relay.link` (its login and sync_with_relay block: call them
without _run), read_link from relay.link, the held key is `read_link(lib).key`, no wrap key, and
no `RELAY`/drain in _Process._stop. There tests/test_chaos_relay_actor.py's removal test fails
(the snoop reads both writes made after the removal) and its four other tests pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from p2psync.errors import P2PSyncError
from p2psync.relay import crypto, keys, link_rules, sync_round
from p2psync.relay.client import RelayClient
from p2psync.relay.kdf import TEST_ENV
from p2psync.relay.library_calls import OnThisThread
from p2psync.relay.server import RELAY, make_app
from p2psync.relay.state import read_link
from p2psync.relay.storage import SqliteStorage
from p2psync.store.library import Library

T = TypeVar("T")

EMAIL = "chaos@relay.example"
PASSWORD = "correct horse battery"  # zxcvbn score 3 (tests/test_relay_sync.py uses it too)
HOST = "127.0.0.1"
START_SECONDS = 30.0  # generous: the machine is shared and loaded
STOP_SECONDS = 10.0
PAGES = 10_000  # a bound on the pages one snoop reads (256 change sets each)
UNLIMITED_SIGNUPS = 1_000_000


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """One device call: the coroutine run to the end on the caller's thread."""
    return asyncio.run(coroutine)


def _yes(_question: link_rules.Question) -> bool:
    return True


class _Process:
    """One run of the relay: its storage, its app and its listening socket on a thread's loop."""

    def __init__(self, data: Path, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="chaos-relay", daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._start(data, port), self.loop).result(START_SECONDS)
        except BaseException:
            self.stop()
            raise

    async def _start(self, data: Path, port: int) -> int:
        app = make_app(SqliteStorage(data), None, signups_per_hour=UNLIMITED_SIGNUPS)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_SECONDS)
        await self.runner.setup()
        await web.TCPSite(self.runner, HOST, port).start()
        return int(self.runner.addresses[0][1])

    async def _stop(self) -> None:
        if self.runner is None:
            return
        for site in list(self.runner.sites):  # as serving.serve: stop listening, let requests finish
            await site.stop()
        await self.runner.app[RELAY].drain(STOP_SECONDS)
        await self.runner.cleanup()  # closes the storage

    def stop(self) -> None:
        """Stop within a bounded time; a relay that does not stop is left to die with the process."""
        if self.loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(STOP_SECONDS * 2)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(STOP_SECONDS)
        if not self.thread.is_alive():
            self.loop.close()


class RelayWorld:
    """A real relay server in this process (storage under tmp) and the one account the devices use."""

    def __init__(self, tmp: Path) -> None:
        """Start the relay on 127.0.0.1 (a free port, kept across restarts: the devices store its
        address). Sets P2PSYNC_TEST_ONLY_WEAK_KDF=1 (fast logins) as tests/conftest.py does."""
        os.environ[TEST_ENV] = "1"
        self.data = Path(tmp) / "relay-data"
        self.data.mkdir(parents=True, exist_ok=True)
        self._process: _Process | None = _Process(self.data, 0)
        self.port = self._process.port
        self.url = f"http://{HOST}:{self.port}"

    def close(self) -> None:
        """Stop the relay (bounded: a few seconds at most). Idempotent."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    def restart(self) -> None:
        """A relay process restart: stopped (requests finish, the storage closes) and started again
        on the same storage and the same port. Everything it stored stays; tokens stay valid."""
        self.close()
        self._process = _Process(self.data, self.port)

    def signup(self, lib: Library) -> None:
        """The first device makes the account and binds its library (or, if the account exists
        already, logs in to it with the same password: the relay answers a sign-up so), then the
        login's own sync runs (its errors reported, not raised)."""
        _run(link_rules.login(lib, self.url, EMAIL, PASSWORD, signup=True, ask=_yes, backup=None))

    def login(self, lib: Library) -> None:
        """Another device logs in to the account: it joins the account's library (empty), re-links
        (same library), or merges (another library with content: answered yes); no backup made.
        Then the login's own sync runs (its errors reported, not raised). A removed device is
        refused (DeviceRemoved: it cannot log in again as itself)."""
        _run(link_rules.login(lib, self.url, EMAIL, PASSWORD, ask=_yes, backup=None))

    def sync(self, lib: Library) -> None:
        """One relay sync round (sync_round.sync_with_relay). Raises what it raises: RelayNotLinked
        before any login, DeviceRemoved for a removed device, RelayError... Errors that stop only
        part of a round (items refused, quota) are recorded in the library and not raised."""
        _run(sync_round.sync_with_relay(OnThisThread(lib)))

    def reset_and_relink(self, lib: Library) -> None:
        """`account reset` (the e-mail typed with #!resetLocalSync: every relay_* row forgotten and
        the token logged out on the relay), then a login again as `login` does."""
        _run(link_rules.login(lib, self.url, EMAIL + link_rules.RESET_SUFFIX, PASSWORD, ask=_yes, backup=None))
        self.login(lib)

    def snoop(self, lib: Library) -> list[bytes]:
        """A removed device as an attacker: with the token in its library and every key it still
        holds (each epoch's library key, and the password's wrap key, which opens the account's
        copy of the key if the relay hands it out), pull every change set from the relay directly
        (RelayClient, not the sync round, which refuses to run for a removed device) and decrypt
        what it can. Returns the wires it could read, in the relay's order; [] when the relay
        cuts it off (or it holds no token). Never raises a P2PSyncError: a refusal midway ends
        the pull with what was read until then."""
        return _run(_snoop(lib))


def _held_keys(lib: Library) -> list[bytes]:
    ring = keys.read_ring(lib)
    return list(ring.keys.values()) if ring is not None else []


async def _snoop(lib: Library) -> list[bytes]:
    link = read_link(lib)
    if not link.url or not link.token:
        return []
    held = _held_keys(lib)
    library_id = lib.library_id
    wires: list[bytes] = []
    async with RelayClient(link.url, link.token) as client:
        try:
            wrap = keys.read_wrap(lib)
            account = await client.account()
            if wrap is not None and account.wrapped_key is not None and account.library_id is not None:
                with contextlib.suppress(P2PSyncError):
                    held.append(crypto.unwrap_library_key(wrap, account.wrapped_key, account.library_id))
                library_id = account.library_id
            after = 0
            for _ in range(PAGES):
                items, more = await client.changesets(after)
                for item in items:
                    after = item.num
                    for key in held:
                        with contextlib.suppress(P2PSyncError):
                            wires.append(
                                crypto.decrypt_changeset(key, library_id, item.device, item.first, item.last, item.blob)
                            )
                            break
                if not more or not items:
                    break
        except P2PSyncError:
            pass  # cut off: what was read until then
    return wires
