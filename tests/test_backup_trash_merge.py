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
from typing import Any

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


def test_the_web_join_page_shows_both_trashes_and_offers_the_same_choice(tmp_path: Path) -> None:
    """The pairing page of the web app asks the same question through the same function: the counts
    of both trashes, and a tick box that leaves this library's trashed references out."""
    from tests.test_web_devices import offer_code, post, wait_state
    from tests.web_support import log_in, request, web_app

    home, work = tmp_path / "home" / "lib", tmp_path / "work" / "lib"
    library_with_trash(home, "Home", ["Home paper"], ["Home bin"])
    library_with_trash(work, "Work", ["Work paper"], ["Work bin one", "Work bin two"])
    with web_app(home) as offering, web_app(work) as joining:
        a, b = log_in(offering), log_in(joining)
        offer, code, address = offer_code(offering, a)
        progress = post(joining, b, "/pair/join", code=code, address=address, backup="yes").headers["Location"]
        asked = wait_state(joining, b, progress + "/state", {"question", "failed", "paired"})
        assert asked["state"] == "question", asked
        assert "In the trash: 2 here, 1 in the other library." in asked["question"]
        page = request(joining.base + progress, headers=b).text
        assert 'name="skip_trash"' in page and "Leave the 2 reference(s) in this library's trash out" in page
        post(joining, b, progress + "/answer", merge="yes", skip_trash="yes")
        merged = wait_state(joining, b, progress + "/state", {"failed", "paired"})
        assert merged["state"] == "paired", merged
        assert any(line.startswith("Backed up this library to ") for line in merged["said"]), merged["said"]
        assert "Left 2 reference(s) of this library's trash out of the merge." in merged["said"]
        assert wait_state(offering, a, offer + "/state", {"paired", "failed"})["state"] == "paired"
    for side in (home, work):
        assert titles(side, trashed=False) == ["Home paper", "Work paper"]
        assert titles(side, trashed=True) == ["Home bin"]


def test_the_web_account_page_says_both_trashes_and_leaves_this_one_out(tmp_path: Path) -> None:
    """The account page's login merges through the same function: without the tick to go ahead
    its answer is the question with both trashes; with it and the trash box, the merge leaves this
    library's trashed references out, after a backup the page names."""
    from urllib.parse import urlencode

    from p2psync.web.auth import CSRF_FIELD
    from tests.test_relay_accounts import cli_env
    from tests.web_support import csrf_of, log_in, request, web_app

    relay = Relay(tmp_path / "relay")
    try:
        email, first, second = new_email(), tmp_path / "first" / "lib", tmp_path / "second" / "lib"
        library_with_trash(first, "First", ["On the account"], ["Account bin"])
        assert account(tmp_path, first, "signup", relay.url, email, "correct horse battery",
                       "--no-backup").returncode == 0  # fmt: skip
        library_with_trash(second, "Second", ["Joining paper"], ["Joining bin one", "Joining bin two"])
        with web_app(second, env=cli_env(tmp_path)) as app:
            session = log_in(app)

            def login(**fields: str) -> Any:
                body = urlencode({CSRF_FIELD: csrf_of(app, session), "relay": relay.url, "email": email,
                                  "password": "correct horse battery", "backup": "yes", **fields})  # fmt: skip
                headers = {**session, "Content-Type": "application/x-www-form-urlencoded"}
                return request(app.base + "/account/login", "POST", headers, body)

            page = request(app.base + "/account", headers=session).text
            assert 'name="skip_trash"' in page
            asked = login()
            assert asked.status == 400 and "In the trash: 2 here, 1 in the other library." in asked.text
            done = login(agree="yes", skip_trash="yes")
            assert done.status == 303, done.text[-600:]
            shown = request(app.base + "/account", headers=session).text
            assert "Backed up this library to " in shown and "before merging." in shown, shown[-1500:]
            assert "Left 2 reference(s) of this library&#39;s trash out of the merge." in shown
        assert run(tmp_path, first, "sync", "--relay-only").returncode == 0
        for side in (first, second):
            assert titles(side, trashed=False) == ["Joining paper", "On the account"]
            assert titles(side, trashed=True) == ["Account bin"]
    finally:
        relay.stop()


def _ask_on_a_terminal(trash: int, flag: str, answer: bytes) -> tuple[str, str]:
    """Run ask_skip_trash in a process whose stdin and stderr are a real terminal (a pty), typing
    `answer` when the question shows; what it printed there and what it decided."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    code = (
        "import sys; from p2psync.cli.account_cmds import ask_skip_trash; "
        f"print('DECIDED', ask_skip_trash({trash}, {flag}, False), file=sys.stderr)"
    )
    main, side = pty.openpty()
    process = subprocess.Popen([sys.executable, "-c", code], stdin=side, stdout=side, stderr=side, cwd=os.getcwd())
    os.close(side)
    seen = b""
    answered = False
    deadline = time.monotonic() + 30
    try:
        # Read until the process ends and closes the terminal: "DECIDED" may arrive in one read
        # and the answer after it in the next (it did, on a loaded machine).
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the process ended and closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(main, answer)
                answered = True
    finally:
        process.wait(timeout=30)
        os.close(main)
    text = seen.decode(errors="replace")
    return text, text.rsplit("DECIDED", 1)[-1].strip()


def test_on_a_terminal_the_trash_question_is_asked_and_its_answer_kept() -> None:
    shown, decided = _ask_on_a_terminal(3, "None", b"y\n")
    assert "Leave the 3 reference(s) in this library's trash out of the merge?" in shown
    assert decided == "True"
    shown, decided = _ask_on_a_terminal(3, "None", b"\n")  # the default is to merge the trash
    assert decided == "False"
    # A flag answers it: no question on the terminal.
    shown, decided = _ask_on_a_terminal(3, "True", b"n\n")
    assert "Leave the" not in shown and decided == "True"
    # An empty trash asks nothing.
    shown, decided = _ask_on_a_terminal(0, "None", b"y\n")
    assert "Leave the" not in shown and decided == "False"
