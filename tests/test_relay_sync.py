"""Syncing through a real relay: `python -m p2psync relay serve` on 127.0.0.1, libraries in their
own folders that never meet on a LAN, the user-facing flows through the CLI (subprocesses) and
the rest through the Python API (in process, faster).

The relay is started once for the module (each test uses its own accounts) and stopped by its
PID with SIGTERM; the quota test starts its own with a small limit. Tampering is done the way a
hostile operator would: bytes flipped in a stored blob file, rows of the relay's SQLite index
deleted, copied or renumbered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from p2psync.errors import ProtocolMismatch, RelayAuthFailed, RelayBoundElsewhere, RelayTampered
from p2psync.relay import crypto, kdf
from p2psync.relay.client import RelayClient
from p2psync.store.library import Library
from p2psync.store.sync import recent_problems, sync_libraries, version_vector
from tests import relay_link as link
from tests.sync_support import digest, joined, view

PASSWORD = "correct horse battery"
TITLE = "Quasicrystalline Phonons in Zanzibar Lattices"
AUTHOR = "Wojciechowska-Thornbury, Eleonora"


@dataclass
class Relay:
    url: str
    data: Path
    proc: subprocess.Popen[str]

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.data / "relay.sqlite3", timeout=10, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    def account(self, email: str) -> str:
        with closing(self.db()) as conn:
            return str(conn.execute("SELECT id FROM accounts WHERE email = ?", [email]).fetchone()[0])

    def items(self, email: str) -> list[tuple[int, str, int, int, str]]:
        with closing(self.db()) as conn:
            rows = conn.execute(
                "SELECT num, device, first, last, blob FROM changesets WHERE account = ? ORDER BY num",
                [self.account(email)],
            ).fetchall()
        return [tuple(r) for r in rows]  # type: ignore[misc]

    def blob_file(self, email: str, relative: str) -> Path:
        return self.data / "blobs" / self.account(email) / relative


def start_relay(data: Path, *extra: str) -> Relay:
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2psync", "relay", "serve", "--port", "0", "--data", str(data), "--json", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise AssertionError(f"the relay did not start (exit {proc.returncode})")
    return Relay(json.loads(line)["listening"], data, proc)


def stop_relay(relay: Relay) -> None:
    os.kill(relay.proc.pid, signal.SIGTERM)  # only the process this test started, by its PID
    assert relay.proc.wait(20) == 0


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    server = start_relay(tmp_path_factory.mktemp("relay-data"), "--signups-per-hour", "1000")  # all from 127.0.0.1
    yield server
    stop_relay(server)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    out = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    out.update(HOME=str(home), XDG_DATA_HOME=str(home / "xdg"), PYTHONPYCACHEPREFIX=str(home / "pycache"))
    return out


def run(env: dict[str, str], library: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2psync", "--library", str(library), *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def ok_json(env: dict[str, str], library: Path, *args: str, stdin: str | None = None) -> Any:
    proc = run(env, library, *args, "--json", stdin=stdin)
    assert proc.returncode == 0, (args, proc.returncode, proc.stderr)
    return json.loads(proc.stdout)


def account_cli(env: dict[str, str], library: Path, verb: str, url: str, email: str, *extra: str) -> Any:
    return ok_json(env, library, "account", verb, "--relay", url, "--email", email, "--password-stdin", *extra,
                   stdin=PASSWORD + "\n")  # fmt: skip


def login_api(library: Library, relay: Relay, email: str, signup: bool = False) -> link.LoginReport:
    return link.login(library, relay.url, email, PASSWORD, signup=signup, ask=lambda question: True)


def sync(library: Library) -> link.RelaySyncReport:
    return link.sync_with_relay(library)


def new_library(path: Path, *titles: str) -> Library:
    library = Library.create(path, path.name)
    for title in titles:
        library.add_reference({"title": title, "year": "2020"})
    return library


def titles(library: Library) -> list[str]:
    return sorted(r["title"] for r in library.list_references())


def relay_problems(library: Library) -> list[str]:
    return [p["message"] for p in recent_problems(library, limit=50) if p["peer"] == "relay"]


# --- two machines, a third that joins ------------------------------------------------------------


def test_libraries_that_never_meet_sync_through_the_relay_and_a_new_machine_joins_by_password(
    relay: Relay, env: dict[str, str], tmp_path: Path
) -> None:
    email = "ada@example.org"
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.7\n" + os.urandom(400_000))
    home = new_library(tmp_path / "home")
    ref = home.add_reference({"title": TITLE, "authors": [AUTHOR], "year": "1999", "journal": "J. Phonons"})
    home.attach(ref, pdf)
    group = home.create_group("Reading list")
    home.add_to_group(group, [ref])
    home.close()

    signed = account_cli(env, tmp_path / "home", "signup", relay.url, email)
    assert signed["mode"] == "bound" and signed["sync"]["error"] is None
    assert signed["sync"]["sent"]["stored"] >= 1 and signed["sync"]["attachments"]["chunks_sent"] >= 1

    # The work machine has no library at all: logging in creates one and brings everything.
    joined_report = account_cli(env, tmp_path / "work", "login", relay.url, email)
    assert joined_report["mode"] == "joined" and joined_report["sync"]["attachments"]["files"] == 1
    home, work = Library.open(tmp_path / "home"), Library.open(tmp_path / "work")
    assert work.library_id == home.library_id
    assert work.attachment_path(ref, "paper.pdf").read_bytes() == pdf.read_bytes()
    assert [g["name"] for g in work.get_reference(ref)["groups"]] == ["Reading list"]

    # Edits on both sides between syncs: other fields merge, the same field becomes a conflict.
    home.edit_reference(ref, {"year": "2001", "volume": "7"})
    work.edit_reference(ref, {"year": "2002", "pages": "1-9"})
    new_on_work = work.add_reference({"title": "Written at work", "year": "2024"})
    assert sync(home).error is None
    second = sync(work)
    assert second.error is None and second.received.applied >= 1 and second.pushed >= 1
    assert sync(home).received.applied >= 1
    for library in (home, work):
        shown = library.get_reference(ref)
        assert shown["volume"] == "7" and shown["pages"] == "1-9"
        assert shown.get("conflicts") == ["year"]
        assert library.info()["conflicts"] == 1
    assert digest(home) == digest(work)

    # A third machine with an EMPTY library joins by password and can then write.
    Library.create(tmp_path / "laptop", "laptop").close()
    third = account_cli(env, tmp_path / "laptop", "login", relay.url, email)
    assert third["mode"] == "joined" and third["sync"]["error"] is None
    laptop = Library.open(tmp_path / "laptop")
    assert view(laptop)["refs"] == view(home)["refs"] and view(laptop)["groups"] == view(home)["groups"]
    assert laptop.attachment_path(ref, "paper.pdf").read_bytes() == pdf.read_bytes()
    laptop.edit_reference(new_on_work, {"title": "Written at work, edited on the laptop"})
    assert sync(laptop).pushed >= 1
    for library in (home, work):
        report = sync(library)
        assert report.error is None and not report.received.rejected, report.as_dict()
        assert "Written at work, edited on the laptop" in titles(library)
    assert digest(home) == digest(work) == digest(laptop)
    members = {d["name"] for d in home.devices()}
    assert "online account" in members

    # A sync with nothing new moves nothing and applies nothing twice.
    again = sync(home)
    assert again.received.applied == 0 and again.pushed == 0 and again.chunks_pushed == 0

    # status: the relay line with the last sync and what moved.
    status = ok_json(env, tmp_path / "home", "status")
    assert status["relay"]["relay"] == relay.url and status["relay"]["last_sync"]
    assert status["relay"]["last_error"] is None
    account = ok_json(env, tmp_path / "home", "account", "status")
    assert account["bound_here"] is True and account["usage"]["chunks"] >= 1
    text = run(env, tmp_path / "work", "sync", "--relay-only")
    assert text.returncode == 0 and text.stdout.startswith("Relay: 0 change sets in"), text

    # The relay holds no plaintext: no title, no author, no run of the PDF's bytes.
    needles = [TITLE.encode(), b"Wojciechowska-Thornbury", b"Eleonora", b"Zanzibar", pdf.read_bytes()[200_000:200_032]]
    for path in relay.data.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                assert needle not in data, f"{needle[:20]!r} in {path}"
    for library in (home, work, laptop):
        library.close()


def test_lan_and_relay_together_apply_nothing_twice(relay: Relay, tmp_path: Path) -> None:
    email = "lan-and-relay@example.org"
    a = new_library(tmp_path / "a", "One", "Two")
    b = joined(a, tmp_path / "b", "b")  # paired on a LAN (in process)
    assert login_api(a, relay, email, signup=True).mode == "bound"
    assert login_api(b, relay, email).mode == "same"
    a.add_reference({"title": "Three", "year": "2021"})
    sync(a)
    sync_libraries(a, b)  # b gets it on the LAN first...
    report = sync(b)  # ...and then from the relay: a duplicate, not applied again
    assert report.received.applied == 0 and report.received.duplicates >= 1 and report.error is None
    assert titles(b) == ["One", "Three", "Two"]
    b.add_reference({"title": "Four", "year": "2022"})
    sync(b)  # the relay first, then the LAN
    assert sync_libraries(a, b).sent_to_a.applied == 1
    assert sync(a).received.applied == 0
    assert link.read_link(a).cursor == relay.items(email)[-1][0]
    assert digest(a) == digest(b)


# --- binding, the one-account rule, reset --------------------------------------------------------


def test_binding_merging_and_one_library_per_account(relay: Relay, env: dict[str, str], tmp_path: Path) -> None:
    email, other = "bind@example.org", "bind-other@example.org"
    first = new_library(tmp_path / "first", "First paper", "Shared paper")
    first.close()
    assert account_cli(env, tmp_path / "first", "signup", relay.url, email)["mode"] == "bound"

    # A different library with references of its own: a question with the counts, then a merge.
    second = new_library(tmp_path / "second", "Second paper", "Shared paper", "Another one")
    second.close()
    args = ["account", "login", "--relay", relay.url, "--email", email, "--password-stdin"]
    asked = run(env, tmp_path / "second", *args, stdin=PASSWORD + "\n")
    assert asked.returncode == 3 and asked.stdout == ""
    assert "this one 3 " in asked.stderr and "the account holds 2 " in asked.stderr, asked.stderr
    assert Library.open(tmp_path / "second").library_id != Library.open(tmp_path / "first").library_id
    backups = str(tmp_path / "backups")
    merged = ok_json(env, tmp_path / "second", *args, "--yes", "--backup-dir", backups, stdin=PASSWORD)
    assert merged["mode"] == "merged" and merged["ours"]["references"] == 3 and merged["theirs"]["references"] == 2
    assert merged["sync"]["merge"]["added"] == 2 and len(merged["sync"]["merge"]["merged"]) == 1
    assert list((tmp_path / "backups").iterdir()), "a backup is made before a merge"
    first_lib = Library.open(tmp_path / "first")
    sync(first_lib)
    expected = ["Another one", "First paper", "Second paper", "Shared paper"]
    assert titles(first_lib) == expected == titles(Library.open(tmp_path / "second"))

    # Linked to account X, asked to use account Y: the exact sentence, and only --yes goes on.
    exact = (
        "A sync library can be linked to only one account. "
        "Do not proceed unless you intend to break the link to the original account."
    )
    y_args = ["account", "signup", "--relay", relay.url, "--email", other, "--password-stdin"]
    refused = run(env, tmp_path / "second", *y_args, stdin=PASSWORD + "\n")
    assert refused.returncode == 3 and refused.stderr == f"Error: {exact}\n"
    assert link.read_link(Library.open(tmp_path / "second")).email == email  # nothing changed
    moved = ok_json(env, tmp_path / "second", *y_args, "--yes", stdin=PASSWORD + "\n")
    assert moved["broke_link"] is True and moved["mode"] == "bound" and moved["email"] == other
    assert exact in run(env, tmp_path / "second", *args, stdin=PASSWORD + "\n").stderr  # and back to X: asked again

    # Reset, by command and by the e-mail suffix: the exact message, every reference kept, and
    # the next login and sync are complete (from cursor 0, pushing what the relay lacks).
    message = "Your local sync state has been reset. Please re-enter your e-mail address and sync again."
    proc = run(env, tmp_path / "first", "account", "reset")
    assert proc.returncode == 0 and proc.stdout == message + "\n"
    first_lib = Library.open(tmp_path / "first")
    assert titles(first_lib) == expected and not link.read_link(first_lib).linked
    assert "not linked" in run(env, tmp_path / "first", "sync", "--relay-only").stderr
    first_lib.add_reference({"title": "Written while unlinked", "year": "2023"})
    report = login_api(first_lib, relay, email)
    assert report.mode == "same" and report.sync is not None and report.sync.error is None
    assert report.sync.pulled == len(relay.items(email))  # all of it, from 0 (with what it just pushed)
    assert report.sync.pushed == 1 and report.sync.received.applied == 0
    suffixed = run(
        env, tmp_path / "first", "account", "login", "--relay", relay.url, "--email", f"{email}#!resetLocalSync"
    )
    assert suffixed.returncode == 0 and suffixed.stdout == message + "\n", suffixed
    first_lib = Library.open(tmp_path / "first")
    assert not link.read_link(first_lib).linked and len(titles(first_lib)) == 5


def test_purge_lets_another_library_bind_and_accounts_stay_apart(
    relay: Relay, env: dict[str, str], tmp_path: Path
) -> None:
    email, other = "purge@example.org", "purge-other@example.org"
    a = new_library(tmp_path / "a", "Kept on a")
    login_api(a, relay, email, signup=True)
    stranger = new_library(tmp_path / "stranger", "Not yours")
    login_api(stranger, relay, other, signup=True)
    sync(stranger)
    assert titles(a) == ["Kept on a"] and titles(stranger) == ["Not yours"]  # accounts stay apart

    # One account's token reaches nothing of another account's.

    async def peek() -> tuple[Any, Any]:
        async with RelayClient(relay.url, link.read_link(stranger).token) as client:
            state = await client.state()
            page, _ = await client.changesets(0)
            return state, page

    (heads, _), page = asyncio.run(peek())
    assert a.device_id not in heads and all(item.device != a.device_id for item in page)

    proc = run(env, tmp_path / "a", "account", "purge")
    assert proc.returncode == 3 and "Run again with --yes" in proc.stderr
    purged = ok_json(env, tmp_path / "a", "account", "purge", "--yes")
    assert purged["purged"] is True
    assert titles(a) == ["Kept on a"] and relay.items(email) == []
    info = ok_json(env, tmp_path / "a", "account", "status")
    assert info["bound_library"] is None and info["usage"]["used_bytes"] == 0

    b = new_library(tmp_path / "b", "Another library")
    assert login_api(b, relay, email).mode == "bound"  # another library binds the purged account
    with pytest.raises(RelayBoundElsewhere, match="holds another library"):
        sync(a)
    assert "another library" in (link.read_link(a).last_error or "")
    assert titles(stranger) == ["Not yours"]


# --- a hostile relay -----------------------------------------------------------------------------


def test_tampering_on_the_relay_is_detected_and_nothing_wrong_is_applied(relay: Relay, tmp_path: Path) -> None:
    email = "tamper@example.org"
    origin = new_library(tmp_path / "origin", "Edit 0")
    login_api(origin, relay, email, signup=True)
    ref = next(iter(origin.list_references()))["id"]
    for n in range(1, 5):  # one change set per edit on the relay
        origin.edit_reference(ref, {"title": f"Edit {n}"})
        sync(origin)
    items = [i for i in relay.items(email) if i[1] == origin.device_id]
    assert len(items) >= 5
    num, _device, first, _last, blob_name = items[2]  # the change set of "Edit 2"

    # 1. A flipped byte in a stored blob file: refused, reported, the cursor stays before it.
    path = relay.blob_file(email, blob_name)
    original = path.read_bytes()
    path.write_bytes(original[:40] + bytes([original[40] ^ 1]) + original[41:])
    victim = Library.create(tmp_path / "victim", found=False)
    report = login_api(victim, relay, email)
    assert report.sync is not None and any("fails its check" in r for r in report.sync.refused)
    assert titles(victim) == ["Edit 1"]  # nothing past the refused change set of its author
    assert version_vector(victim)[origin.device_id] == first - 1
    assert link.read_link(victim).cursor < num
    assert any("fails its check" in m for m in relay_problems(victim))
    assert "fails its check" in (link.read_link(victim).last_error or "")
    path.write_bytes(original)  # the relay repaired: the next sync completes
    assert sync(victim).error is None and titles(victim) == ["Edit 4"]
    assert link.read_link(victim).last_error is None

    # 2. A change set listed twice (a copied index row): reported, applied once.
    with closing(relay.db()) as conn:
        account = relay.account(email)
        conn.execute("BEGIN IMMEDIATE")
        (top,) = conn.execute("SELECT max(num) FROM changesets WHERE account = ?", [account]).fetchone()
        conn.execute(
            "INSERT INTO changesets (account, num, device, first, last, size, blob) "
            "SELECT account, ?, device, first, last, size, blob FROM changesets WHERE account = ? AND num = ?",
            [top + 1, account, num],
        )
        conn.execute("UPDATE accounts SET next_num = ? WHERE id = ?", [top + 2, account])
        conn.execute("COMMIT")
    twice = Library.create(tmp_path / "twice", found=False)
    report = login_api(twice, relay, email)
    assert report.sync is not None and any("twice" in r for r in report.sync.refused)
    assert titles(twice) == ["Edit 4"] and not report.sync.received.rejected
    sync(origin)
    sync(twice)
    assert digest(twice) == digest(origin)
    with closing(relay.db()) as conn:  # the copy goes again
        conn.execute("DELETE FROM changesets WHERE account = ? AND num = ?", [account, top + 1])

    # 3. Two change sets swapped in the relay's order: the later one is never applied first.
    with closing(relay.db()) as conn:
        conn.execute("BEGIN IMMEDIATE")
        a_num, b_num = items[1][0], items[2][0]
        conn.execute("UPDATE changesets SET num = -1 WHERE account = ? AND num = ?", [account, a_num])
        conn.execute("UPDATE changesets SET num = ? WHERE account = ? AND num = ?", [a_num, account, b_num])
        conn.execute("UPDATE changesets SET num = ? WHERE account = ? AND num = -1", [b_num, account])
        conn.execute("COMMIT")
    swapped = Library.create(tmp_path / "swapped", found=False)
    report = login_api(swapped, relay, email)
    assert report.sync is not None and any("out of order" in r for r in report.sync.refused)
    assert titles(swapped) == ["Edit 1"]  # "Edit 2", listed too early, was not applied ahead of its turn
    assert version_vector(swapped)[origin.device_id] == items[1][3] and relay_problems(swapped)
    with closing(relay.db()) as conn:  # put them back
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE changesets SET num = -1 WHERE account = ? AND num = ?", [account, a_num])
        conn.execute("UPDATE changesets SET num = ? WHERE account = ? AND num = ?", [a_num, account, b_num])
        conn.execute("UPDATE changesets SET num = ? WHERE account = ? AND num = -1", [b_num, account])
        conn.execute("COMMIT")

    # 4. A change set deleted from the index: what depends on it is refused, and status says so.
    with closing(relay.db()) as conn:
        conn.execute("DELETE FROM changesets WHERE account = ? AND num = ?", [account, items[3][0]])
    gap = Library.create(tmp_path / "gap", found=False)
    report = login_api(gap, relay, email)
    assert report.sync is not None and report.sync.error is not None
    assert titles(gap) == ["Edit 2"]
    status = link.status(gap, online=False)
    assert status["last_error"] and relay_problems(gap)


def test_a_blob_file_lost_on_the_relay_is_withheld_not_a_failure(relay: Relay, tmp_path: Path) -> None:
    email = "lostblob@example.org"
    origin = new_library(tmp_path / "origin", "Edit 0")
    login_api(origin, relay, email, signup=True)
    ref = next(iter(origin.list_references()))["id"]
    for n in range(1, 4):
        origin.edit_reference(ref, {"title": f"Edit {n}"})
        sync(origin)
    items = [i for i in relay.items(email) if i[1] == origin.device_id]
    lost_file = relay.blob_file(email, items[-2][4])  # the change set of "Edit 2"
    saved = lost_file.read_bytes()
    lost_file.unlink()
    later = Library.create(tmp_path / "later", found=False)
    report = login_api(later, relay, email)  # the relay answers; what depends on the lost one waits
    assert report.sync is not None and report.sync.error is not None, report.sync
    assert titles(later) == ["Edit 1"] and relay_problems(later)
    lost_file.write_bytes(saved)  # the operator restores the file: the next sync completes
    assert sync(later).error is None and titles(later) == ["Edit 3"]


# --- the storage limit, wrong passwords, an unreachable relay -------------------------------------


def test_over_quota_push_says_storage_limit_and_the_pull_still_happens(env: dict[str, str], tmp_path: Path) -> None:
    server = start_relay(tmp_path / "small-relay", "--quota", "40KB")
    try:
        email = "quota@example.org"
        a = new_library(tmp_path / "a", "Small")
        login_api(a, server, email, signup=True)
        b = Library.create(tmp_path / "b", found=False)
        login_api(b, server, email)
        b.add_reference({"title": "Sent by b", "year": "2020"})
        assert sync(b).error is None
        a.add_references({"title": f"Bulk {n}", "abstract": os.urandom(300).hex()} for n in range(100))
        a.close()
        proc = run(env, tmp_path / "a", "sync", "--relay-only", "--json")
        assert proc.returncode == 1 and "storage limit" in proc.stderr and proc.stderr.count("\n") == 1
        out = json.loads(proc.stdout)
        assert "storage limit" in out["relay"]["error"] and out["relay"]["received"]["applied"] >= 1
        a = Library.open(tmp_path / "a")
        assert "Sent by b" in titles(a)  # the pull happened
        assert "storage limit" in (link.summary(a) or {})["last_error"]
        status = run(env, tmp_path / "a", "status")
        assert "storage limit" in status.stdout
        # Nothing of the refused push was stored: b still syncs cleanly.
        assert sync(b).error is None and len(titles(b)) == 2
    finally:
        stop_relay(server)


def test_wrong_password_and_unreachable_relay_are_one_sentence(
    relay: Relay, env: dict[str, str], tmp_path: Path
) -> None:
    lib = tmp_path / "lib"
    new_library(lib, "Paper").close()
    base = ["account", "login", "--email", "nobody@example.org", "--password-stdin"]
    proc = run(env, lib, *base, "--relay", relay.url, stdin="not the password\n")
    assert proc.returncode == 1 and proc.stderr == "Error: The relay refused the e-mail or password.\n"
    proc = run(env, lib, *base, "--relay", "http://127.0.0.1:9", stdin="whatever\n")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: The relay at http://127.0.0.1:9 could not be reached")
    assert proc.stderr.count("\n") == 1
    proc = run(env, lib, "account", "login", "--relay", relay.url, "--email", "x@example.org")
    assert proc.returncode == 2 and "--password-stdin" in proc.stderr  # no terminal: no prompt, never argv
    assert not link.read_link(Library.open(lib)).linked


def test_logout_and_a_password_change(relay: Relay, env: dict[str, str], tmp_path: Path) -> None:
    email, new_password = "change@example.org", "a brand new passphrase"
    a = new_library(tmp_path / "a", "Paper")
    login_api(a, relay, email, signup=True)
    b = Library.create(tmp_path / "b", found=False)
    login_api(b, relay, email)
    a.close()
    changed = ok_json(env, tmp_path / "a", "account", "password", "--password-stdin", stdin=f"{new_password}\n" * 2)
    assert changed["password_changed"] is True
    proc = run(env, tmp_path / "a", "account", "password", "--password-stdin", stdin="one password\nanother\n")
    assert proc.returncode == 1 and "differ" in proc.stderr
    a = Library.open(tmp_path / "a")
    assert sync(a).error is None  # this device's login goes on
    with pytest.raises(RelayAuthFailed, match="no longer accepts this device's login"):
        sync(b)  # the other device's stops...
    report = link.login(b, relay.url, email, new_password)  # ...until it logs in with the new password
    assert report.mode == "same" and report.sync is not None and report.sync.error is None
    assert titles(b) == ["Paper"]

    logged_out = ok_json(env, tmp_path / "a", "account", "logout")
    assert logged_out == {"relay": relay.url, "email": email, "logged_out": True, "relay_told": True}
    proc = run(env, tmp_path / "a", "sync", "--relay-only")
    assert proc.returncode == 1 and "logged out" in proc.stderr
    a = Library.open(tmp_path / "a")
    state = link.read_link(a)
    assert state.linked and state.token is None and state.key is None and state.cursor > 0
    again = link.login(a, relay.url, email, new_password)  # logging in again continues from the cursor
    assert again.mode == "same" and again.sync is not None and again.sync.pulled == 0
    assert link.read_link(a).cursor == state.cursor


# --- a relay that answers nonsense ---------------------------------------------------------------


class HostileRelay:
    """A web server on 127.0.0.1 that speaks the relay's paths with answers a real relay never gives."""

    def __init__(self, library_id: str) -> None:
        self.library_id = library_id
        self.login_answer: Any = {"account": 5, "token": "t"}
        self.login_status = 200
        self.wrapped: str | None = None
        self.items: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.url = ""

    def __enter__(self) -> HostileRelay:
        app = web.Application()

        def answer(body: Callable[[], Any], status: Callable[[], int] = lambda: 200) -> Any:
            async def handler(request: web.Request) -> web.Response:
                return web.json_response(body(), status=status())

            return handler

        app.router.add_post("/relay/v1/prelogin", answer(lambda: {"kdf": kdf.default_params().as_wire()}))
        app.router.add_post("/relay/v1/login", answer(lambda: self.login_answer, lambda: self.login_status))
        app.router.add_get("/relay/v1/account", self.account)
        app.router.add_get("/relay/v1/keys", self.keys)
        app.router.add_get("/relay/v1/state", answer(lambda: {"heads": {}, "last_num": 99}))
        app.router.add_get("/relay/v1/changesets", answer(lambda: {"items": self.items, "more": False}))
        app.router.add_post("/relay/v1/changesets", answer(lambda: {"stored": 1, "duplicates": 0}))
        app.router.add_post("/relay/v1/logout", answer(lambda: None))

        async def start() -> int:
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.runner is not None
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def account(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "account": "acct",
                "email": "e@example.org",
                "library_id": self.library_id,
                "wrapped_key": self.wrapped,
                "used_bytes": 0,
                "quota_bytes": None,
                "change_sets": 0,
                "chunks": 0,
                "device": "A" * 32,  # the token is tied to a device (relay.md §5.1)
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        body = {"key_epoch": 0, "rotate": False, "revoked": [], "epochs": [], "sealed": []}
        return web.json_response({**body, "wrapped_key": self.wrapped, "wrapped_epoch": 0})


def test_nonsense_from_a_relay_changes_nothing_and_is_one_sentence(tmp_path: Path) -> None:
    library = new_library(tmp_path / "lib", "Mine")
    before = digest(library)
    with HostileRelay(library.library_id) as hostile:
        with pytest.raises(ProtocolMismatch, match="malformed answer"):
            link.login(library, hostile.url, "e@example.org", PASSWORD)
        hostile.login_answer, hostile.login_status = {"error": "protocol", "supported": [7]}, 400
        with pytest.raises(ProtocolMismatch, match=r"^The relay speaks another protocol version; update p2psync\.$"):
            link.login(library, hostile.url, "e@example.org", PASSWORD)
        # A wrapped key the relay made up does not open: nothing is linked.
        hostile.login_answer, hostile.login_status = {"account": "acct", "token": "t"}, 200
        hostile.wrapped = base64.b64encode(os.urandom(60)).decode()
        with pytest.raises(RelayTampered, match="does not open with this password"):
            link.login(library, hostile.url, "e@example.org", PASSWORD)
        assert not link.read_link(library).linked and digest(library) == before

        # Linked (as if it had logged in), the relay sends change sets it forged or mangled.
        key = os.urandom(32)
        _, wrap_key = crypto.derive_keys("e@example.org", PASSWORD, kdf.default_params())
        hostile.wrapped = base64.b64encode(crypto.wrap_library_key(wrap_key, key, library.library_id)).decode()
        device = library.device_id
        forged = crypto.encrypt_changeset(os.urandom(32), library.library_id, device, 1, 1, b"{}")
        other_headers = crypto.encrypt_changeset(key, library.library_id, device, 5, 5, b'{"body":{"author":"X"}}')
        hostile.items = [
            {"num": 1, "device": device, "first": 1, "last": 1, "blob": base64.b64encode(forged).decode()},
            {"num": 2, "device": device, "first": 5, "last": 5, "blob": base64.b64encode(other_headers).decode()},
        ]
        report = link.login(library, hostile.url, "e@example.org", PASSWORD)
        assert report.mode == "same" and report.sync is not None
        assert len(report.sync.refused) == 2 and report.sync.received.applied == 0
        assert all(r.startswith("The relay sent a change set that fails its check: ") for r in report.sync.refused)
        assert link.read_link(library).cursor == 0 and digest(library) == before
        hostile.items = [{"num": 3, "device": "not a device", "first": 1, "last": 1, "blob": "AAAA"}]
        with pytest.raises(ProtocolMismatch, match="malformed answer"):
            link.sync_with_relay(library)
        assert digest(library) == before and "malformed" in (link.read_link(library).last_error or "")


def test_a_backup_holds_no_relay_session_and_the_restored_library_logs_in_again(relay: Relay, tmp_path: Path) -> None:
    import zipfile

    from p2psync.store.backup import backup, restore

    email = "backup@example.org"
    home = new_library(tmp_path / "home", "Backed up")
    login_api(home, relay, email, signup=True)
    backup(home, tmp_path / "home.zip")
    with zipfile.ZipFile(tmp_path / "home.zip") as archive:
        (tmp_path / "snapshot.sqlite3").write_bytes(archive.read("library.sqlite3"))
    with closing(sqlite3.connect(tmp_path / "snapshot.sqlite3")) as conn:
        keys = {k for (k,) in conn.execute("SELECT key FROM meta WHERE key LIKE 'relay_%'")}
    assert "relay_url" in keys and not keys & {"relay_token", "relay_key"}
    restore(tmp_path / "home.zip", tmp_path / "restored")
    with Library.open(tmp_path / "restored") as restored:
        state = link.read_link(restored)
        assert state.url == relay.url and not state.logged_in
        login_api(restored, relay, email)  # the same account: no question, and it syncs
        restored.add_reference({"title": "After the restore"})
        assert sync(restored).error is None
    assert sync(home).error is None and "After the restore" in titles(home)


def test_the_password_is_asked_on_a_terminal_without_echo(relay: Relay, env: dict[str, str], tmp_path: Path) -> None:
    """Signup on a real pseudo-terminal: a hidden prompt, asked twice, never shown."""
    import pty
    import select
    import time

    library = tmp_path / "tty"
    new_library(library, "Typed at a terminal").close()
    secret = "a secret typed at the keyboard"
    argv = [sys.executable, "-m", "p2psync", "--library", str(library), "account", "signup"]
    argv += ["--relay", relay.url, "--email", "tty@example.org", "--yes"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: p2psync itself, on the terminal
        os.execve(sys.executable, argv, env)
    seen = b""
    answered = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        seen += data
        prompts = seen.lower().count(b"password") + seen.lower().count(b"repeat")
        if answered < 2 and prompts > answered:
            os.write(fd, secret.encode() + b"\r")
            answered += 1
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")
    assert answered == 2 and secret.encode() not in seen, seen.decode(errors="replace")
    with Library.open(library) as lib:
        assert link.read_link(lib).logged_in


def test_an_attachment_fetch_through_the_relay_resumes_from_its_partial_file(relay: Relay, tmp_path: Path) -> None:
    import random

    from p2psync.store import transfers

    email = "resume@example.org"
    home = new_library(tmp_path / "home", "With a scan")
    ref = next(iter(home.list_references()))["id"]
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes(b"%PDF-1.7\n" + random.Random(3).randbytes(2_000_000))
    home.attach(ref, pdf)
    login_api(home, relay, email, signup=True)  # pushes the chunks
    work = Library.create(tmp_path / "work", found=False)
    login_api(work, relay, email)
    arrived = work.attachment_path(ref, "scan.pdf")
    assert arrived.read_bytes() == pdf.read_bytes()
    # As a fetch cut off halfway would leave it: the file not in place, half of it in the partial file.
    sha = home.list_attachments(ref)[0]["sha256"]
    partial = transfers.partial_path(work, ref, sha)
    partial.write_bytes(pdf.read_bytes()[:1_000_000])
    arrived.unlink()
    report = sync(work)
    assert report.error is None and report.files == 1, report
    assert report.bytes_resumed >= 1_000_000 - 131_072 and report.bytes_fetched <= 1_000_009 + 131_072, report
    assert arrived.read_bytes() == pdf.read_bytes() and not partial.exists()
