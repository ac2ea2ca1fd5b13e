"""A removed device is cut off from the relay too (issue 18, item 2; protocol/relay.md §5).

Every attack runs against a real `python -m p2psync relay serve` on 127.0.0.1, with libraries in
their own folders that never meet on a LAN. The attacker is a device of the account that has its
own token (read from its library, as a thief of the laptop would) and speaks HTTP to the relay
directly; `peers remove` and the removed device's sync go through the CLI, the rest through the
Python API (in process, faster).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from p2psync.errors import DeviceRemoved, RelayTampered
from p2psync.relay import crypto, keyring
from p2psync.store.library import Library
from p2psync.store.sync import recent_problems
from tests import relay_link as link
from tests.test_relay_sync import PASSWORD, Relay, start_relay, stop_relay

API = "/relay/v1"
REMOVED = "This device was removed from the library"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    server = start_relay(tmp_path_factory.mktemp("relay-data"))
    yield server
    stop_relay(server)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    out = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    out.update(HOME=str(home), XDG_DATA_HOME=str(home / "xdg"), PYTHONPYCACHEPREFIX=str(home / "pycache"))
    return out


def cli(env: dict[str, str], library: Path, *args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "p2psync", "--library", str(library), *args],
        input="",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def call(relay: Relay, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    """One request to the relay, as an attacker holding `token` would make it."""
    parts = urlsplit(relay.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    headers = {"P2PSync-Protocol": "1", "Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        conn.request(method, API + path, json.dumps(body).encode() if body is not None else None, headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, json.loads(data) if data else None


def token(library: Library) -> str:
    value = link.read_link(library).token
    assert value
    return value


def held(relay: Relay, email: str) -> tuple[list[tuple[Any, ...]], int]:
    """The relay's index of the account's change sets, and the bytes it counts (from its database)."""
    with closing(sqlite3.connect(relay.data / "relay.sqlite3")) as conn:
        account = conn.execute("SELECT id FROM accounts WHERE email = ?", [email]).fetchone()[0]
        rows = conn.execute(
            "SELECT num, device, first, last FROM changesets WHERE account = ? ORDER BY num", [account]
        ).fetchall()
        used = conn.execute("SELECT used_bytes FROM accounts WHERE id = ?", [account]).fetchone()[0]
    return rows, used


def titles(library: Library) -> set[str]:
    return {r["title"] for r in library.list_references()}


def three_devices(relay: Relay, tmp_path: Path, email: str) -> tuple[Library, Library, Library]:
    """A binds the account; B and X join it by password; all three hold the same library."""
    a = Library.create(tmp_path / "a", "a")
    a.add_reference({"title": "Written on A first", "year": "2020"})
    assert link.login(a, relay.url, email, PASSWORD, signup=True, ask=lambda q: True).mode == "bound"
    b, x = Library.create(tmp_path / "b", "b"), Library.create(tmp_path / "x", "x")
    for library in (b, x):
        report = link.login(library, relay.url, email, PASSWORD, ask=lambda q: True)
        assert report.mode == "joined" and report.sync is not None and report.sync.error is None, report.as_dict()
    for library in (a, b, x):
        assert link.sync_with_relay(library).error is None
    assert titles(a) == titles(b) == titles(x) == {"Written on A first"}
    return a, b, x


def change_set(library: Library, first: int, last: int, blob: bytes = b"not a change set at all") -> dict[str, Any]:
    return {"device": library.device_id, "first": first, "last": last, "blob": base64.b64encode(blob).decode()}


# --- (a) a device stores only its own change sets ------------------------------------------------------


def test_a_change_set_under_another_devices_id_is_refused_and_nothing_is_stored(relay: Relay, tmp_path: Path) -> None:
    email = "forger@example.org"
    a, b, x = three_devices(relay, tmp_path, email)
    before = held(relay, email)
    a_head = max(last for _, device, _, last in before[0] if device == a.device_id)
    # X, with its own valid token, posts under A's id: the next one, and the one that would shadow
    # everything A writes from now on.
    for first, last, status, code in (
        (a_head + 1, a_head + 1, 403, "wrong_device"),
        (a_head + 1, 2**53, 400, "malformed"),
    ):
        got, body = call(relay, "POST", "/changesets", token(x), {"items": [change_set(a, first, last)]})
        assert (got, body["error"]) == (status, code), body
        assert held(relay, email) == before  # nothing stored, nothing counted
    # A's real change sets still reach the others.
    a.add_reference({"title": "Written on A after the forgery", "year": "2021"})
    assert link.sync_with_relay(a).pushed >= 1
    report = link.sync_with_relay(b)
    assert report.error is None and not report.refused and "Written on A after the forgery" in titles(b)


# --- (b) each device's sequence stays contiguous ------------------------------------------------------


def test_a_device_cannot_post_past_gaps_overlaps_or_an_endless_range(relay: Relay, tmp_path: Path) -> None:
    email = "shadow@example.org"
    a, b, x = three_devices(relay, tmp_path, email)
    b.add_reference({"title": "Written on B", "year": "2021"})
    link.sync_with_relay(b)
    before = held(relay, email)
    mine = [(first, last) for _, device, first, last in before[0] if device == b.device_id]
    head = mine[-1][1]
    cases = [
        ((head + 1, 2**53), 400, "malformed"),  # would make every later change set of B a "duplicate"
        ((head + 1, head + 1001), 400, "malformed"),  # more sequence numbers than a change set can hold
        ((head + 2, head + 2), 409, "gap"),
        ((head, head + 1), 409, "gap"),  # overlaps what is stored
        ((1, head), 409, "gap"),  # within what is stored, but not one change set stored
    ]
    assert len(mine) >= 2 and mine[0][0] == 1
    for (first, last), status, code in cases:
        got, body = call(relay, "POST", "/changesets", token(b), {"items": [change_set(b, first, last)]})
        assert (got, body["error"]) == (status, code), (first, last, body)
        assert held(relay, email) == before
    # The real change sets of B go on reaching the others.
    b.add_reference({"title": "Written on B after the attempts", "year": "2022"})
    assert link.sync_with_relay(b).error is None
    for library in (a, x):
        report = link.sync_with_relay(library)
        assert report.error is None and not report.refused, report.as_dict()
        assert {"Written on B", "Written on B after the attempts"} <= titles(library)


# --- (c), (d) removing a device cuts it off, and the key changes ------------------------------------------


def test_a_removed_device_is_cut_off_and_cannot_read_what_is_written_after(
    relay: Relay, env: dict[str, str], tmp_path: Path
) -> None:
    email = "stolen@example.org"
    a, b, x = three_devices(relay, tmp_path, email)
    old_key = link.read_link(x).key
    assert old_key is not None
    x_token = token(x)
    (upto,) = a.db.execute("SELECT max(last) FROM changesets WHERE author = ?", [x.device_id]).fetchone()
    a.close()
    removed = cli(env, tmp_path / "a", "peers", "remove", x.device_id[:7], "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "password" in removed.stdout and "relay" in removed.stdout, removed.stdout
    a = Library.open(tmp_path / "a")

    # Until A meets the relay, X does not know; what it writes meanwhile is past what A accepts of it.
    x.add_reference({"title": "Written on X after its removal", "year": "2023"})
    assert link.sync_with_relay(x).pushed >= 1

    # A's next relay contact: X is revoked there and the library key changes.
    report = link.sync_with_relay(a)
    assert report.error is None, report.as_dict()

    # X's next sync: one clear sentence, in the error, in `status`, exit code 1; nothing new.
    with pytest.raises(DeviceRemoved, match=f"^{REMOVED}"):
        link.sync_with_relay(x)
    status, body = call(relay, "GET", "/keys", x_token)
    assert status == 403 and body["error"] == "device_revoked"  # no key, no change set, nothing
    status, body = call(relay, "GET", "/changesets?after=0", x_token)
    assert status == 403 and body["error"] == "device_revoked"
    assert not [row for row in held(relay, email)[0] if row[1] == x.device_id and row[3] > upto]  # dropped
    x.close()
    proc = cli(env, tmp_path / "x", "sync", "--relay-only")
    assert proc.returncode == 1 and proc.stderr.startswith(f"Error: {REMOVED}") and proc.stderr.count("\n") == 1
    status_text = cli(env, tmp_path / "x", "status").stdout
    assert REMOVED in status_text and "device_removed" in status_text, status_text
    # Logging in again as the same device, even with the password, is refused the same way.
    x = Library.open(tmp_path / "x")
    with pytest.raises(DeviceRemoved):
        link.login(x, relay.url, email, PASSWORD, ask=lambda q: True)

    # What A writes now is encrypted with a key X never had: its old key opens none of it.
    a.add_reference({"title": "Written on A after the removal", "year": "2024"})
    assert link.sync_with_relay(a).pushed >= 1
    rows = _stored(relay, email, a.device_id)
    newest = rows[-1]
    assert newest["key_epoch"] >= 1
    with pytest.raises(RelayTampered):
        crypto.decrypt_changeset(old_key, a.library_id, a.device_id, newest["first"], newest["last"], newest["blob"])
    with closing(sqlite3.connect(relay.data / "relay.sqlite3")) as conn:
        sealed_for = {d for (d,) in conn.execute("SELECT device FROM key_wraps")}
    assert x.device_id not in sealed_for and {a.device_id, b.device_id} <= sealed_for

    # B, still a member, takes the new key in and reads everything; and writes for the others.
    report = link.sync_with_relay(b)
    assert report.error is None and not report.refused, report.as_dict()
    assert "Written on A after the removal" in titles(b)
    assert "Written on X after its removal" not in titles(b)  # past what A accepts of X
    assert not [p for p in recent_problems(b, 50) if p["reason"] == "relay_check"]
    b.add_reference({"title": "Written on B after the removal", "year": "2024"})
    assert link.sync_with_relay(b).error is None
    assert link.sync_with_relay(a).error is None and "Written on B after the removal" in titles(a)

    # A new machine joins by password: it opens the account's copy of the new key, walks back to the
    # old ones, and reads all of it; what it writes reaches A and B.
    d = Library.create(tmp_path / "d", "d")
    joined_report = link.login(d, relay.url, email, PASSWORD, ask=lambda q: True)
    assert joined_report.mode == "joined" and joined_report.sync is not None
    assert joined_report.sync.error is None, joined_report.sync.as_dict()
    assert {"Written on A first", "Written on A after the removal", "Written on B after the removal"} <= titles(d)
    d.add_reference({"title": "Written on D", "year": "2025"})
    assert link.sync_with_relay(d).error is None
    for library in (a, b):
        assert link.sync_with_relay(library).error is None and "Written on D" in titles(library)
    assert not [p for p in recent_problems(a, 50) if p["reason"] in ("relay_check", "relay_revocation")]


def _stored(relay: Relay, email: str, device: str) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(relay.data / "relay.sqlite3")) as conn:
        account = conn.execute("SELECT id FROM accounts WHERE email = ?", [email]).fetchone()[0]
        rows = conn.execute(
            "SELECT first, last, key_epoch, blob FROM changesets WHERE account = ? AND device = ? ORDER BY num",
            [account, device],
        ).fetchall()
    return [
        {"first": f, "last": la, "key_epoch": e, "blob": (relay.data / "blobs" / account / name).read_bytes()}
        for f, la, e, name in rows
    ]


# --- who may revoke whom ---------------------------------------------------------------------------------


def test_a_removed_device_cannot_revoke_the_others(relay: Relay, tmp_path: Path) -> None:
    email = "revenge@example.org"
    a, b, x = three_devices(relay, tmp_path, email)
    x_token, x_identity = token(x), x.identity()
    a.revoke_device(x.device_id)
    assert link.sync_with_relay(a).error is None  # X is revoked on the relay now

    # X signs a revocation of B (and of A) with its own key: refused, X being revoked.
    for victim in (b, a):
        signature = x_identity.sign(keyring.revoke_message(a.library_id, victim.device_id, 0))
        body = {"device": victim.device_id, "upto": 0, "signature": base64.b64encode(signature).decode()}
        status, answer = call(relay, "POST", "/revoke", x_token, body)
        assert status == 403 and answer["error"] == "device_revoked", answer
    # Nor can it come back as itself with the password, to try again.
    with pytest.raises(DeviceRemoved):
        link.login(x, relay.url, email, PASSWORD, ask=lambda q: True)
    # A and B are untouched and go on syncing.
    b.add_reference({"title": "B still syncs", "year": "2024"})
    assert link.sync_with_relay(b).error is None
    assert link.sync_with_relay(a).error is None and "B still syncs" in titles(a)

    # A member may revoke another only with its own signature, never itself.
    b_token, b_identity = token(b), b.identity()
    forged = x_identity.sign(keyring.revoke_message(a.library_id, a.device_id, 0))  # not B's key
    body = {"device": a.device_id, "upto": 0, "signature": base64.b64encode(forged).decode()}
    status, answer = call(relay, "POST", "/revoke", b_token, body)
    assert status == 400 and answer["error"] == "malformed", answer
    own = b_identity.sign(keyring.revoke_message(a.library_id, b.device_id, 0))
    body = {"device": b.device_id, "upto": 0, "signature": base64.b64encode(own).decode()}
    status, answer = call(relay, "POST", "/revoke", b_token, body)
    assert status == 409 and answer["error"] == "self", answer
    assert link.sync_with_relay(a).error is None and link.sync_with_relay(b).error is None


def test_a_revocation_the_library_does_not_back_is_reported(relay: Relay, tmp_path: Path) -> None:
    """A member that turns hostile before it is removed can cut another off the relay, as it could
    remove it in the library; the members see that the library holds no such removal."""
    email = "contested@example.org"
    a, b, x = three_devices(relay, tmp_path, email)
    signature = x.identity().sign(keyring.revoke_message(a.library_id, b.device_id, 0))
    body = {"device": b.device_id, "upto": 0, "signature": base64.b64encode(signature).decode()}
    assert call(relay, "POST", "/revoke", token(x), body)[0] == 200
    assert link.sync_with_relay(a).error is None
    problems = [p["message"] for p in recent_problems(a, 50) if p["reason"] == "relay_revocation"]
    assert len(problems) == 1 and b.device_id[:7] in problems[0], problems
    link.sync_with_relay(a)  # reported once, not at every sync
    assert len([p for p in recent_problems(a, 50) if p["reason"] == "relay_revocation"]) == 1
    with pytest.raises(DeviceRemoved):
        link.sync_with_relay(b)


def test_relay_data_of_the_first_release_is_migrated(tmp_path: Path) -> None:
    """A data folder written before devices and key epochs keeps its accounts and change sets."""
    from p2psync.relay import storage_recovery as recovery
    from p2psync.relay.storage import SqliteStorage
    from p2psync.relay.storage_migrations import LATEST

    data = tmp_path / "old"
    with SqliteStorage(data) as storage:  # today's schema, then taken back to what the first release wrote
        account = storage.create_account("old@example.org", b"s" * 16, b"h" * 32, time.time())
    with closing(sqlite3.connect(data / "relay.sqlite3")) as conn:
        conn.executescript(
            "DROP TABLE devices; DROP TABLE revocations; DROP TABLE key_epochs; DROP TABLE key_wraps;"
            "DROP INDEX changesets_device;"
            "ALTER TABLE tokens DROP COLUMN device; ALTER TABLE accounts DROP COLUMN key_epoch;"
            "ALTER TABLE accounts DROP COLUMN wrapped_epoch; ALTER TABLE changesets DROP COLUMN key_epoch;"
            "ALTER TABLE chunks DROP COLUMN key_epoch; UPDATE meta SET value = '1' WHERE key = 'schema';"
            + "".join(f"ALTER TABLE accounts DROP COLUMN {c};" for c in recovery.COLUMNS)  # schema 3
        )
        conn.execute("INSERT INTO tokens (hash, account, expires) VALUES (?, ?, ?)", [b"t" * 32, account, 2e9])
        conn.execute(
            "INSERT INTO changesets (account, num, device, first, last, size, blob) VALUES (?, 1, ?, 1, 3, 5, 'x')",
            [account, "A" * 32],
        )
        conn.commit()
    with SqliteStorage(data) as storage:
        assert storage.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == str(LATEST)
        session = storage.token_session(b"t" * 32)
        assert session is not None and session.account == account and session.device is None  # ties itself later
        assert storage.db.execute("SELECT key_epoch FROM changesets").fetchall() == [(0,)]
    with closing(sqlite3.connect(data / "relay.sqlite3")) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
        conn.commit()
    from p2psync.errors import P2PSyncError

    with pytest.raises(P2PSyncError, match="schema 99"):
        SqliteStorage(data)


def test_a_link_made_before_devices_and_key_epochs_goes_on_working(relay: Relay, tmp_path: Path) -> None:
    """A device linked by the first release has a token tied to no device and no wrap key: its next
    sync ties the token, it can still remove a device, and another member gives the account its copy
    of the new key, so that a machine joining by password afterwards reads everything."""
    from p2psync.relay import crypto as relay_crypto
    from p2psync.relay import kdf

    email = "legacy@example.org"
    a, b, x = three_devices(relay, tmp_path, email)
    login_key, _ = relay_crypto.derive_keys(email, PASSWORD, kdf.default_params())
    status, session = call(
        relay, "POST", "/login", "", {"email": email, "login_key": base64.b64encode(login_key).decode()}
    )
    assert status == 200 and session["device"] is None  # a login as the first release made it
    with a.db.conn:
        a.db.execute("UPDATE meta SET value = ? WHERE key = 'relay_token'", [session["token"]])
        a.db.execute("DELETE FROM meta WHERE key IN ('relay_wrap', 'relay_keys', 'relay_key_epoch')")
    status, body = call(relay, "GET", "/state", session["token"])
    assert status == 403 and body["error"] == "device_required"

    a.revoke_device(x.device_id)
    report = link.sync_with_relay(a)  # ties its token, revokes X, makes epoch 1 without the account's copy
    assert report.error is None, report.as_dict()
    assert call(relay, "GET", "/account", session["token"])[1]["device"] == a.device_id
    assert call(relay, "GET", "/account", session["token"])[1]["wrapped_epoch"] == 0
    a.add_reference({"title": "Written on A after the removal", "year": "2024"})
    assert link.sync_with_relay(a).error is None
    assert link.sync_with_relay(b).error is None  # B opens its sealed copy, and gives the account one
    assert call(relay, "GET", "/account", session["token"])[1]["wrapped_epoch"] == 1

    d = Library.create(tmp_path / "d", "d")
    report = link.login(d, relay.url, email, PASSWORD, ask=lambda q: True)
    assert report.sync is not None and report.sync.error is None, report.sync.as_dict()
    assert "Written on A after the removal" in titles(d)


def test_a_device_that_joins_while_a_removal_waits_stays_a_member(relay: Relay, tmp_path: Path) -> None:
    """The new key moves the account's signing key, whose old membership is removed: the member
    that does it pulls first, so that a device that joined through the old one a moment before is
    not refused."""
    email = "joined-meanwhile@example.org"
    a, b, x = three_devices(relay, tmp_path, email)
    a.revoke_device(x.device_id)  # A has not met the relay since
    d = Library.create(tmp_path / "d", "d")
    report = link.login(d, relay.url, email, PASSWORD, ask=lambda q: True)
    assert report.mode == "joined" and report.sync is not None and report.sync.error is None
    report = link.sync_with_relay(a)  # pulls D's introduction, then revokes X and changes the key
    assert report.error is None and not report.received.rejected, report.as_dict()
    assert call(relay, "GET", "/account", token(a))[1]["key_epoch"] == 1
    d.add_reference({"title": "Written on D after the new key", "year": "2025"})
    assert link.sync_with_relay(d).error is None
    for library in (a, b):
        report = link.sync_with_relay(library)
        assert report.error is None and not report.received.rejected, report.as_dict()
        assert "Written on D after the new key" in titles(library)
