"""Forgotten passwords (issue 23, point 11): `account signup` prints a recovery key, `account
recovery-key` makes a new one, `account recover` sets a new password with it. Against real relay
processes on both storage backends (SQLite, and PostgreSQL from tests/pg_support.py), through the
command line as a user runs it; the relay never holds the words or the key they derive.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from p2psync.crypto.wordlist import WORDS
from p2psync.errors import InvalidValue
from p2psync.relay import account_recovery, kdf, storage_migrations, storage_pg_migrations
from p2psync.relay.account_recovery_client import RECOVERY_AUTH_MESSAGE
from p2psync.relay.storage import SqliteStorage
from p2psync.relay.storage_recovery import COLUMNS
from tests.test_relay_accounts import Relay, new_email, run, titles
from tests.test_relay_pg import start_pg_relay, stop_pg_relay

PASSWORD = "correct horse battery staple 9"
NEW_PASSWORD = "a quite different tune 71"


@pytest.fixture(params=["sqlite", "postgresql"])
def relay_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh relay for the test on either backend (failed attempts count per client address)."""
    if request.param == "sqlite":
        server = Relay(tmp_path_factory.mktemp("relay") / "data")
        try:
            yield server.url
        finally:
            server.stop()
        return
    pg = start_pg_relay(request.getfixturevalue("pg_url"))
    try:
        yield pg.url
    finally:
        stop_pg_relay(pg)


def signup(home: Path, library: Path, url: str, email: str) -> dict[str, object]:
    done = run(home, library, "account", "signup", "--relay", url, "--email", email, "--password-stdin", "--json",
               stdin=PASSWORD + "\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def login(home: Path, library: Path, url: str, email: str, password: str) -> subprocess.CompletedProcess[str]:
    return run(home, library, "account", "login", "--relay", url, "--email", email, "--password-stdin", "--yes",
               stdin=password + "\n")  # fmt: skip


def recover(home: Path, library: Path, url: str, email: str, words: str, password: str = NEW_PASSWORD,
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return run(home, library, "account", "recover", "--relay", url, "--email", email, "--stdin",
               stdin=f"{words}\n{password}\n")  # fmt: skip


def wrong_words(words: str) -> str:
    first, *rest = words.split()
    return " ".join([next(w for w in WORDS if w != first), *rest])


def test_signup_shows_a_recovery_key_that_sets_a_new_password(relay_url: str, tmp_path: Path) -> None:
    email = new_email()
    one = tmp_path / "one"
    run(tmp_path, one, "init")
    assert run(tmp_path, one, "ref", "add", "--title", "Kept through recovery").returncode == 0
    shown = signup(tmp_path, one, relay_url, email)
    words = str(shown["recovery_key"])
    assert len(words.split()) == account_recovery.WORD_COUNT and set(words.split()) <= set(WORDS)

    # The text form says it is shown once and to keep it safe.
    text = run(tmp_path, tmp_path / "other", "account", "signup", "--relay", relay_url, "--email", new_email(),
               "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert account_recovery.SHOWN_ONCE in text.stdout

    status = run(tmp_path, one, "account", "status")
    assert "Recovery:    set" in status.stdout

    # A wrong key: one sentence, exit 1, nothing changes (the old password still logs in).
    wrong = recover(tmp_path, tmp_path / "lost", relay_url, email, wrong_words(words))
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == f"Error: {RECOVERY_AUTH_MESSAGE}"
    assert login(tmp_path, tmp_path / "check", relay_url, email, NEW_PASSWORD).returncode == 1
    assert login(tmp_path, tmp_path / "check", relay_url, email, PASSWORD).returncode == 0

    # The right key (typed in capitals, by three-letter prefixes): the new password works, the old
    # one and every device's login stop; a new device receives the library with the new password.
    typed = " ".join(w[:3].upper() for w in words.split())
    done = recover(tmp_path, tmp_path / "lost", relay_url, email, typed)
    assert done.returncode == 0, done.stderr
    assert "set anew" in done.stdout
    assert login(tmp_path, tmp_path / "old", relay_url, email, PASSWORD).returncode == 1
    again = run(tmp_path, one, "account", "status", "--json")
    assert json.loads(again.stdout)["online_error"]  # this device's token was revoked
    fresh = login(tmp_path, tmp_path / "fresh", relay_url, email, NEW_PASSWORD)
    assert fresh.returncode == 0, fresh.stderr
    assert titles(tmp_path / "fresh") == ["Kept through recovery"]
    assert login(tmp_path, one, relay_url, email, NEW_PASSWORD).returncode == 0


def test_a_new_recovery_key_replaces_the_old_one(relay_url: str, tmp_path: Path) -> None:
    email = new_email()
    one = tmp_path / "one"
    old = str(signup(tmp_path, one, relay_url, email)["recovery_key"])
    made = run(tmp_path, one, "account", "recovery-key", "--json")
    assert made.returncode == 0, made.stderr
    new = json.loads(made.stdout)["recovery_key"]
    assert new != old
    refused = recover(tmp_path, tmp_path / "x", relay_url, email, old)
    assert refused.returncode == 1 and "recovery key" in refused.stderr
    assert recover(tmp_path, tmp_path / "x", relay_url, email, new).returncode == 0
    assert login(tmp_path, tmp_path / "y", relay_url, email, NEW_PASSWORD).returncode == 0


def test_recover_attempts_are_rate_limited_like_logins(tmp_path: Path) -> None:
    server = Relay(tmp_path / "data")
    try:
        email = new_email()
        words = str(signup(tmp_path, tmp_path / "one", server.url, email)["recovery_key"])
        for _ in range(5):
            assert recover(tmp_path, tmp_path / "x", server.url, email, wrong_words(words)).returncode == 1
        limited = recover(tmp_path, tmp_path / "x", server.url, email, words)  # even the right key waits
        assert limited.returncode == 1 and "Too many" in limited.stderr
        assert login(tmp_path, tmp_path / "y", server.url, email, PASSWORD).returncode == 1  # the same count
    finally:
        server.stop()


def test_the_relay_never_holds_the_words_or_their_wrap_key(tmp_path: Path) -> None:
    server = Relay(tmp_path / "data")
    try:
        email = new_email()
        words = str(signup(tmp_path, tmp_path / "one", server.url, email)["recovery_key"])
    finally:
        server.stop()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("relay.sqlite3*"))
    _, wrap_key = account_recovery.derive(email, words, kdf.default_params())
    assert words.encode() not in raw and wrap_key not in raw
    with closing(sqlite3.connect(tmp_path / "data" / "relay.sqlite3")) as db:
        row = db.execute(f"SELECT {', '.join(COLUMNS)} FROM accounts WHERE email = ?", [email]).fetchone()
    assert all(value is not None for value in row)


def test_bad_input_to_recover(tmp_path: Path) -> None:
    with pytest.raises(InvalidValue):
        account_recovery.parse_words("apple banana")
    with pytest.raises(InvalidValue):
        account_recovery.parse_words(" ".join(["zzzz"] * account_recovery.WORD_COUNT))
    run(tmp_path, tmp_path / "lib", "init")
    unlinked = run(tmp_path, tmp_path / "lib", "account", "recover", "--email", "a@example.test", "--stdin")
    assert unlinked.returncode == 2 and "--relay URL" in unlinked.stderr
    short = recover(tmp_path, tmp_path / "lib", "http://127.0.0.1:9", "a@example.test", "apple banana")
    assert short.returncode == 2 and account_recovery.BAD_KEY in short.stderr


def test_both_backends_have_the_recovery_columns_at_schema_3(tmp_path: Path, pg_url: str) -> None:
    assert storage_migrations.LATEST == storage_pg_migrations.LATEST == 3
    with SqliteStorage(tmp_path / "sqlite") as storage:
        names = {row[1] for row in storage.db.execute("PRAGMA table_info(accounts)")}
    assert set(COLUMNS) <= names
    import psycopg

    from p2psync.relay.storage_pg import PostgresStorage

    PostgresStorage(pg_url, pool_size=1).close()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'accounts'"
        ).fetchall()
    assert set(COLUMNS) <= {r[0] for r in rows}


def test_the_web_app_shows_the_key_at_sign_up_and_makes_a_new_one(tmp_path: Path) -> None:
    import re
    from urllib.parse import urlencode

    from p2psync.web.auth import CSRF_FIELD
    from tests.test_relay_accounts import cli_env
    from tests.web_support import csrf_of, log_in, request, web_app

    def post(path: str, **fields: str) -> str:
        body = urlencode({CSRF_FIELD: csrf_of(app, session), **fields})
        headers = {**session, "Content-Type": "application/x-www-form-urlencoded"}
        answer = request(app.base + path, "POST", headers, body)
        assert answer.status == 200, answer.text[-500:]
        return answer.text

    def shown(text: str) -> str:
        found = re.search(r'<code id="recovery-key">([a-z ]+)</code>', text)
        assert found is not None, text[-1500:]
        return found.group(1)

    server = Relay(tmp_path / "data")
    email = new_email()
    library = tmp_path / "lib"
    assert run(tmp_path, library, "init").returncode == 0
    try:
        with web_app(library, env=cli_env(tmp_path)) as app:
            session = log_in(app)
            text = post("/account/login", relay=server.url, email=email, password=PASSWORD, password_again=PASSWORD,
                        action="signup")  # fmt: skip
            first = shown(text)
            assert account_recovery.SHOWN_ONCE.replace("'", "&#39;") in text
            assert f"Signed up as {email}" in text
            second = shown(post("/account/recovery-key"))
            assert second != first and len(second.split()) == account_recovery.WORD_COUNT
            page = request(app.base + "/account", headers=session)
            assert second not in page.text and 'id="make-recovery-key"' in page.text  # shown once only
        assert recover(tmp_path, tmp_path / "x", server.url, email, first).returncode == 1
        assert recover(tmp_path, tmp_path / "x", server.url, email, second).returncode == 0
    finally:
        server.stop()
