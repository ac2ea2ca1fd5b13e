"""A backup before any sync that can change the library (issue 23, point 1; EndNote's rules 7 and 47).

A real relay process on 127.0.0.1 and the real CLI (subprocesses): a sign-up that binds the account,
a login that re-links a library after `#!resetLocalSync`, and a plain re-login with an explicit
--backup each make a backup (unless --no-backup), say where on stderr in one sentence, and give its
path as `backup` in --json output.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_relay_accounts import Relay, account, library_with, new_email, run


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    server = Relay(tmp_path_factory.mktemp("relay") / "data")
    yield server
    server.stop()


def zips(folder: Path) -> list[Path]:
    return sorted(folder.glob("*-p2psync-*.zip")) if folder.exists() else []


def reason_of(archive: Path) -> str:
    with zipfile.ZipFile(archive) as opened:
        return str(json.loads(opened.read("p2psync-backup.json"))["reason"])


def test_a_signup_that_binds_the_account_backs_up_first_and_says_where(relay: Relay, tmp_path: Path) -> None:
    library, kept = tmp_path / "home", tmp_path / "backups"
    library_with(library, "Before the first sync")
    proc = account(tmp_path, library, "signup", relay.url, new_email(), "correct horse battery",
                   "--backup-dir", str(kept), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [made] = zips(kept)
    report = json.loads(proc.stdout)
    assert report["mode"] == "bound" and report["backup"] == str(made)
    assert f"Backed up this library to {made} before its first sync with the account." in proc.stderr
    assert reason_of(made) == "first sync"


def test_no_backup_skips_it_and_json_says_none(relay: Relay, tmp_path: Path) -> None:
    library, kept = tmp_path / "home", tmp_path / "backups"
    library_with(library, "Not backed up")
    proc = account(tmp_path, library, "signup", relay.url, new_email(), "correct horse battery",
                   "--backup-dir", str(kept), "--no-backup", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert zips(kept) == [] and json.loads(proc.stdout)["backup"] is None
    assert "Backed up" not in proc.stderr


def test_a_library_relinking_after_a_reset_is_backed_up(relay: Relay, tmp_path: Path) -> None:
    library, kept, email = tmp_path / "home", tmp_path / "backups", new_email()
    library_with(library, "Linked once")
    signed = account(tmp_path, library, "signup", relay.url, email, "correct horse battery", "--no-backup")
    assert signed.returncode == 0, signed.stderr
    reset = account(tmp_path, library, "login", relay.url, email + "#!resetLocalSync")
    assert reset.returncode == 0 and "reset" in reset.stdout, reset.stderr
    proc = account(tmp_path, library, "login", relay.url, email, "correct horse battery",
                   "--backup-dir", str(kept), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [made] = zips(kept)
    assert json.loads(proc.stdout)["backup"] == str(made)
    assert f"Backed up this library to {made} before it re-links to the account." in proc.stderr
    # A plain login again (the link is there): nothing by default, one with an explicit --backup.
    run(tmp_path, library, "account", "logout")
    again = account(tmp_path, library, "login", relay.url, email, "correct horse battery",
                    "--backup-dir", str(kept), "--json")  # fmt: skip
    assert again.returncode == 0 and json.loads(again.stdout)["backup"] is None, again.stderr
    asked = account(tmp_path, library, "login", relay.url, email, "correct horse battery",
                    "--backup-dir", str(kept), "--backup", "--json")  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert len(zips(kept)) == 2 and json.loads(asked.stdout)["backup"] in map(str, zips(kept))


def test_an_empty_library_receiving_the_account_needs_no_backup(relay: Relay, tmp_path: Path) -> None:
    email, kept = new_email(), tmp_path / "backups"
    library_with(tmp_path / "first", "On the account")
    assert account(tmp_path, tmp_path / "first", "signup", relay.url, email, "correct horse battery",
                   "--no-backup").returncode == 0  # fmt: skip
    proc = account(tmp_path, tmp_path / "second", "login", relay.url, email, "correct horse battery",
                   "--backup-dir", str(kept), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mode"] == "joined" and json.loads(proc.stdout)["backup"] is None
    assert zips(kept) == []
