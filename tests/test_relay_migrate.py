"""`relay migrate`: a SQLite relay's store moved into PostgreSQL (the session's own server,
tests/pg_support.py) with devices that go on syncing afterwards without logging in again, and
what the move refuses (a running relay, a non-empty database, a damaged blob file), each leaving
the database as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from p2psync.errors import RelayAuthFailed
from p2psync.store.library import Library
from tests import relay_link as link
from tests.sync_support import digest
from tests.test_relay_pg import PgRelay, listening, new_library, stop_pg_relay, titles

PASSWORD = "correct horse battery"


def start_sqlite_relay(data: Path, *extra: str) -> PgRelay:
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2psync", "relay", "serve", "--port", "0", "--data", str(data), "--json",
         "--signups-per-hour", "1000", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    return listening(proc)


def start_pg_relay_on(database: str, port: int) -> PgRelay:
    env = {**os.environ, "P2PSYNC_RELAY_DATABASE": database}
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2psync", "relay", "serve", "--port", str(port), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    return listening(proc)


def migrate(source: Path, database: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "P2PSYNC_RELAY_DATABASE": database}  # the URL never on the command line
    return subprocess.run(
        [sys.executable, "-m", "p2psync", "relay", "migrate", "--from", str(source), *extra],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def test_devices_go_on_syncing_after_their_relay_moved_to_postgresql(pg_url: str, tmp_path: Path) -> None:
    email = "moving@example.org"
    data = tmp_path / "relay-data"
    relay = start_sqlite_relay(data)
    port = urlsplit(relay.url).port
    assert port is not None
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.7\n" + os.urandom(300_000))
    try:
        home = new_library(tmp_path / "home", "Before the move")
        ref = home.add_reference({"title": "With a PDF", "year": "2021"})
        home.attach(ref, pdf)
        assert link.login(home, relay.url, email, PASSWORD, signup=True, ask=lambda q: True).sync is not None
        Library.create(tmp_path / "work", "work").close()
        work = Library.open(tmp_path / "work")
        link.login(work, relay.url, email, PASSWORD, ask=lambda q: True)
        work = Library.open(tmp_path / "work")
        work.add_reference({"title": "Also before the move", "year": "2022"})
        assert link.sync_with_relay(work).error is None
        assert link.sync_with_relay(home).error is None
        for _ in range(2):  # two failed logins: the limit goes on counting after the move
            with pytest.raises(RelayAuthFailed):
                link.login(Library.create(tmp_path / f"x{_}", "x"), relay.url, email, "not the password")
    finally:
        stop_pg_relay(relay)

    done = migrate(data, pg_url, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["verified"] is True and report["rows"]["accounts"] == 1 and report["rows"]["tokens"] >= 2
    assert report["rows"]["changesets"] >= 3 and report["rows"]["chunks"] >= 1 and report["blobs"] >= 4
    assert report["rows"]["login_attempts"] == 2 and report["rows"]["devices"] == 2
    assert "copying blobs" in done.stderr and "verified" in done.stderr
    assert "postgresql://" in report["target"] and pg_url.split("@")[0] not in report["target"][:12]

    relay = start_pg_relay_on(pg_url, port)  # the same address: the devices never hear of the move
    try:
        home.add_reference({"title": "After the move, at home", "year": "2025"})
        first = link.sync_with_relay(home)
        assert first.error is None and first.pushed >= 1, first.as_dict()
        second = link.sync_with_relay(work)
        assert second.error is None and second.received.applied >= 1
        assert "After the move, at home" in titles(work)
        other = tmp_path / "other.pdf"
        other.write_bytes(b"%PDF-1.7\n" + os.urandom(200_000))
        new_ref = work.add_reference({"title": "After the move, at work", "year": "2025"})
        work.attach(new_ref, other)
        assert link.sync_with_relay(work).error is None
        assert link.sync_with_relay(home).error is None
        assert home.attachment_path(new_ref, "other.pdf").read_bytes() == other.read_bytes()
        assert work.attachment_path(ref, "paper.pdf").read_bytes() == pdf.read_bytes()
        assert digest(home) == digest(work)
    finally:
        stop_pg_relay(relay)


def test_migrate_refuses_a_running_relay_a_full_database_and_a_damaged_blob(pg_url: str, tmp_path: Path) -> None:
    import psycopg

    data = tmp_path / "relay-data"
    relay = start_sqlite_relay(data)
    try:
        home = new_library(tmp_path / "home", "One")
        link.login(home, relay.url, "r@example.org", PASSWORD, signup=True, ask=lambda q: True)
        refused = migrate(data, pg_url)
        assert refused.returncode != 0 and "A relay is running on" in refused.stderr
    finally:
        stop_pg_relay(relay)

    def accounts() -> int:
        with psycopg.connect(pg_url) as conn:
            present = conn.execute("SELECT to_regclass('accounts')").fetchone()
            if present is None or present[0] is None:
                return 0
            row = conn.execute("SELECT count(*) FROM accounts").fetchone()
            return int(row[0]) if row else 0

    blob = next(p for p in (data / "blobs").rglob("*") if p.is_file())
    original = blob.read_bytes()
    blob.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    damaged = migrate(data, pg_url)
    assert damaged.returncode == 1 and "does not match its SHA-256" in damaged.stderr
    assert "Traceback" not in damaged.stderr and accounts() == 0  # nothing moved
    blob.write_bytes(original)

    assert migrate(data, pg_url).returncode == 0 and accounts() == 1
    again = migrate(data, pg_url)
    assert again.returncode != 0 and "holds 1 accounts already; give --replace" in again.stderr
    replaced = migrate(data, pg_url, "--replace", "--json")
    assert replaced.returncode == 0 and json.loads(replaced.stdout)["replaced"] is True and accounts() == 1
    bad = subprocess.run(
        [sys.executable, "-m", "p2psync", "relay", "migrate", "--from", str(data), "--to", "sqlite:///x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "must be a PostgreSQL URL" in bad.stderr
