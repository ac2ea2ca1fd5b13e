"""The trash before a merge (issue 23, point 3; EndNote's rule 28, "empty the trash before syncing").

The merge question of `pair` and of `account login` says how many references each side holds in
its trash, and `--skip-trash` leaves the joining library's trashed references out: after the backup
(which keeps them) they are deleted for good there, so they are never sent, and both sides still
end with the same library (store/before_merge.py says precisely what is left out). Real processes: a
`pair` offer and join on 127.0.0.1, a real relay.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from p2psync.store.library import Library
from tests.sync_support import digest
from tests.test_pair_loopback import Offering, join_cli
from tests.test_relay_accounts import Relay, account, new_email, run


def library_with_trash(path: Path, name: str, kept: list[str], trashed: list[str]) -> None:
    with Library.create(path, name) as library:
        for title in kept:
            library.add_reference({"title": title, "year": "2001"})
        for title in trashed:
            library.trash.put(library.add_reference({"title": title, "year": "2002"}))


def titles(path: Path, trashed: bool) -> list[str]:
    with Library.open(path) as library:
        return sorted(r["title"] for r in library.list_references(trashed=trashed))


def trash_in_backup(archive: str) -> int:
    with zipfile.ZipFile(archive) as opened:
        return int(json.loads(opened.read("p2psync-backup.json"))["trash"])


def test_pairing_says_both_trashes_and_can_leave_the_joining_one_out(tmp_path: Path) -> None:
    home, work, kept = tmp_path / "home", tmp_path / "work", tmp_path / "backups"
    library_with_trash(home, "Home", ["Home paper", "Second home paper"], ["Home bin"])
    library_with_trash(work, "Work", ["Work paper"], ["Work bin one", "Work bin two"])

    offer = Offering(home)
    refused = join_cli(work, offer.code, offer.port)  # no terminal, no --yes: only the question
    assert refused.returncode == 3, refused.stderr
    assert "In the trash: 2 here, 1 in the other library." in refused.stderr
    assert "can be left out of the merge" in refused.stderr
    assert offer.result()[0] == 1

    offer = Offering(home, "--backup-dir", str(kept))
    joined = join_cli(work, offer.code, offer.port, "--yes", "--skip-trash", "--backup-dir", str(kept), "--json")
    assert joined.returncode == 0, joined.stderr
    code, _out, err = offer.result()
    assert code == 0, err
    report = json.loads(joined.stdout)
    assert report["mode"] == "merge" and report["trash_left_out"] == 2
    assert trash_in_backup(report["backup"]) == 2  # the backup was made first: it keeps them
    # Left out: the joining side's trashed references are nowhere; the other side's trash stays.
    for side in (home, work):
        assert titles(side, trashed=False) == ["Home paper", "Second home paper", "Work paper"]
        assert titles(side, trashed=True) == ["Home bin"]
    with Library.open(home) as h, Library.open(work) as w:
        assert digest(h) == digest(w)


def test_pairing_with_yes_merges_the_trash_too_unless_told(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    library_with_trash(home, "Home", ["Home paper"], [])
    library_with_trash(work, "Work", ["Work paper"], ["Work bin"])
    offer = Offering(home, "--no-backup")
    joined = join_cli(work, offer.code, offer.port, "--yes", "--no-backup", "--json")
    assert joined.returncode == 0, joined.stderr
    assert offer.result()[0] == 0
    assert json.loads(joined.stdout)["trash_left_out"] == 0 and json.loads(joined.stdout)["backup"] is None
    assert titles(home, trashed=True) == titles(work, trashed=True) == ["Work bin"]


def test_an_account_merge_says_both_trashes_and_can_leave_this_one_out(tmp_path: Path) -> None:
    relay = Relay(tmp_path / "relay")
    try:
        email, first, second = new_email(), tmp_path / "first", tmp_path / "second"
        library_with_trash(first, "First", ["On the account"], ["Account bin"])
        assert account(tmp_path, first, "signup", relay.url, email, "correct horse battery",
                       "--no-backup").returncode == 0  # fmt: skip
        library_with_trash(second, "Second", ["Joining paper"], ["Joining bin one", "Joining bin two"])
        asked = run(tmp_path, second, "account", "login", "--relay", relay.url, "--email", email,
                    "--password-stdin", stdin="correct horse battery\n")  # fmt: skip
        assert asked.returncode == 3, asked.stderr
        assert "In the trash: 2 here, 1 in the other library." in asked.stderr
        proc = account(tmp_path, second, "login", relay.url, email, "correct horse battery", "--skip-trash",
                       "--backup-dir", str(tmp_path / "backups"), "--json")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["mode"] == "merged" and report["trash_left_out"] == 2
        assert report["ours"]["trash"] == 2 and report["theirs"]["trash"] == 1
        assert trash_in_backup(report["backup"]) == 2
        synced = run(tmp_path, first, "sync", "--relay-only")
        assert synced.returncode == 0, synced.stderr
        for side in (first, second):
            assert titles(side, trashed=False) == ["Joining paper", "On the account"]
            assert titles(side, trashed=True) == ["Account bin"]
        with Library.open(first) as a, Library.open(second) as b:
            assert digest(a) == digest(b)
    finally:
        relay.stop()
