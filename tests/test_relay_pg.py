"""The relay on PostgreSQL, as a process: `relay serve` with the database from
P2PSYNC_RELAY_DATABASE (never on the command line), devices syncing through it, its schema made
by numbered migrations under an advisory lock (two relays starting at once on an empty database),
and what `relay serve` refuses. The server is the session's own (tests/pg_support.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from p2psync.relay import storage_pg_migrations as pg
from p2psync.store.library import Library
from tests import relay_link as link
from tests.sync_support import digest

PASSWORD = "correct horse battery"


@dataclass
class PgRelay:
    url: str
    proc: subprocess.Popen[str]


def launch_pg_relay(database: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "P2PSYNC_RELAY_DATABASE": database}
    return subprocess.Popen(
        [sys.executable, "-m", "p2psync", "relay", "serve", "--port", "0", "--json", "--signups-per-hour", "1000",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip


def start_pg_relay(database: str, *extra: str) -> PgRelay:
    return listening(launch_pg_relay(database, *extra))


def listening(proc: subprocess.Popen[str]) -> PgRelay:
    """The relay once it listens (its first line)."""
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise AssertionError(f"the relay did not start (exit {proc.returncode}): {proc.stderr.read()[-2000:]}")
    return PgRelay(json.loads(line)["listening"], proc)


def stop_pg_relay(relay: PgRelay) -> None:
    os.kill(relay.proc.pid, signal.SIGTERM)  # only the process this test started, by its PID
    assert relay.proc.wait(20) == 0


@pytest.fixture
def pg_relay(pg_url: str) -> Iterator[PgRelay]:
    relay = start_pg_relay(pg_url)
    yield relay
    stop_pg_relay(relay)


def new_library(path: Path, *titles: str) -> Library:
    library = Library.create(path, path.name)
    for title in titles:
        library.add_reference({"title": title, "year": "2020"})
    return library


def titles(library: Library) -> list[str]:
    return sorted(r["title"] for r in library.list_references())


def test_devices_sync_through_a_relay_on_postgresql(pg_relay: PgRelay, tmp_path: Path) -> None:
    email = "pg@example.org"
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.7\n" + os.urandom(300_000))
    home = new_library(tmp_path / "home", "Kept in PostgreSQL")
    ref = home.add_reference({"title": "With a PDF", "year": "2021"})
    home.attach(ref, pdf)
    report = link.login(home, pg_relay.url, email, PASSWORD, signup=True, ask=lambda question: True)
    assert report.sync is not None and report.sync.error is None
    work_path = tmp_path / "work"
    Library.create(work_path, "work").close()
    work = Library.open(work_path)
    joined = link.login(work, pg_relay.url, email, PASSWORD, ask=lambda question: True)
    assert joined.sync is not None and joined.sync.error is None
    work = Library.open(work_path)
    assert titles(work) == ["Kept in PostgreSQL", "With a PDF"]
    assert work.attachment_path(ref, "paper.pdf").read_bytes() == pdf.read_bytes()
    work.add_reference({"title": "Written at work", "year": "2024"})
    assert link.sync_with_relay(work).error is None
    assert link.sync_with_relay(home).received.applied >= 1
    assert digest(home) == digest(work)


def test_relay_serve_refuses_a_bad_database_and_two_stores(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "p2psync", "relay", "serve", "--port", "0"]
    env = {**os.environ, "P2PSYNC_RELAY_DATABASE": "mysql://x@y/z"}
    done = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "must be a PostgreSQL URL" in done.stderr
    env["P2PSYNC_RELAY_DATABASE"] = "postgresql://u@127.0.0.1:1/db"
    done = subprocess.run([*base, "--data", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "not both" in done.stderr
    done = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60)  # nothing listens on port 1
    assert done.returncode != 0 and "Cannot use the database postgresql://u@127.0.0.1:1/db" in done.stderr
    assert done.stderr.count("\n") <= 2, done.stderr  # one clear sentence, no traceback


def test_two_relays_starting_at_once_on_an_empty_database_migrate_it_once(pg_url: str) -> None:
    import psycopg

    procs = [launch_pg_relay(pg_url), launch_pg_relay(pg_url)]  # both run their migrations at once
    relays = [listening(proc) for proc in procs]
    try:
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (str(pg.LATEST),)
    finally:
        for relay in relays:
            stop_pg_relay(relay)


def test_storages_opened_at_the_same_moment_by_two_processes_on_an_empty_database(pg_url: str) -> None:
    """Without the advisory lock, the second CREATE TABLE fails (a duplicate type or relation)."""
    import time

    script = (
        "import sys, time\n"
        "from p2psync.relay.storage_pg import PostgresStorage\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "PostgresStorage(sys.argv[1], pool_size=1).close()\n"
        "print('ok')\n"
    )
    for _ in range(3):
        at = str(time.time() + 1.5)
        procs = [
            subprocess.Popen([sys.executable, "-c", script, pg_url, at], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]  # fmt: skip
        outcomes = [proc.communicate(timeout=60) for proc in procs]
        assert [out for out, _ in outcomes] == ["ok\n"] * 3, [err[-1500:] for _, err in outcomes]
        import psycopg

        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (str(pg.LATEST),)
            conn.execute("DROP SCHEMA public CASCADE")  # empty again for the next round
            conn.execute("CREATE SCHEMA public")


def test_connections_the_database_dropped_are_replaced_not_answered_with_an_error(pg_url: str) -> None:
    """A PostgreSQL restart (or an idle timeout) ends the pool's connections; the next calls must
    get fresh ones, not one failure per stale connection."""
    import psycopg

    from p2psync.relay.storage_pg import PostgresStorage

    storage = PostgresStorage(pg_url, pool_size=3)
    try:
        storage.ping()
        storage.pool.wait(timeout=30)  # (the pool has opened its connections)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        for _ in range(5):
            storage.ping()
    finally:
        storage.close()
