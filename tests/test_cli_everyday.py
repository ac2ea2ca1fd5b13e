"""Everyday commands of issue 23, point 10: `ref list --sort FIELD [--reverse]`, `attachment open
REF NAME` (the desktop's default application; $P2PSYNC_OPENER names a recorder here) and
`status --watch` (a live view of a running daemon's sync)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2psync.store.library import Library
from tests.support import P2PSYNC, cli
from tests.sync_support import founded, joined
from tests.test_daemon_loopback import start_daemon, stop
from tests.web_support import read_first_line


@pytest.fixture
def library(tmp_path: Path) -> Path:
    path = tmp_path / "lib"
    with Library.create(path, name="Everyday") as lib:
        for title, year, family in [
            ("beta decay", "1934", "Fermi"),
            ("Alpha rays", "1899", "Rutherford"),
            ("Gamma bursts", "1973", "Klebesadel"),
        ]:
            lib.add_reference({"title": title, "year": year, "authors": [{"family": family, "given": "A."}]})
            time.sleep(0.002)  # distinct `added` times
    return path


def titles(library: Path, *args: str) -> list[str]:
    done = cli("--library", str(library), "ref", "list", "--json", *args)
    assert done.returncode == 0, done.stderr
    return [item["title"] for item in json.loads(done.stdout)]


def test_ref_list_sorts_by_a_field_and_reverses(library: Path) -> None:
    assert titles(library) == ["beta decay", "Alpha rays", "Gamma bursts"]  # oldest first, as before
    assert titles(library, "--sort", "title") == ["Alpha rays", "beta decay", "Gamma bursts"]  # case ignored
    assert titles(library, "--sort", "title", "--reverse") == ["Gamma bursts", "beta decay", "Alpha rays"]
    assert titles(library, "--sort", "year") == ["Alpha rays", "beta decay", "Gamma bursts"]
    assert titles(library, "--sort", "author", "--reverse") == ["Alpha rays", "Gamma bursts", "beta decay"]
    assert titles(library, "--reverse") == ["Gamma bursts", "Alpha rays", "beta decay"]  # newest first
    ref = cli("--library", str(library), "ref", "list", "--json", "--sort", "title").stdout
    first = json.loads(ref)[0]["id"]
    time.sleep(0.002)
    assert cli("--library", str(library), "ref", "edit", first, "--year", "1900").returncode == 0
    assert titles(library, "--sort", "modified", "--reverse")[0] == "Alpha rays"  # the last edited first
    assert titles(library, "--sort", "year", "--limit", "1", "--offset", "1") == ["beta decay"]


def test_an_unknown_sort_field_is_a_usage_error_that_names_the_valid_ones(library: Path) -> None:
    done = cli("--library", str(library), "ref", "list", "--sort", "colour")
    assert done.returncode == 2
    for name in ("title", "year", "author", "added", "modified"):
        assert name in done.stderr, done.stderr


def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A small program that writes the argument it was given to a file, as an opener would open it."""
    out = tmp_path / "opened.txt"
    script = tmp_path / "record-open"
    script.write_text(f"#!{sys.executable}\nimport sys\nopen({str(out)!r}, 'w').write(sys.argv[1])\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, out


def test_attachment_open_hands_the_file_to_the_opener(library: Path, tmp_path: Path) -> None:
    with Library.open(library) as lib:
        ref = next(iter(lib.refs.listing())).id
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + b"x" * 1000)
    assert cli("--library", str(library), "attach", ref, str(pdf)).returncode == 0
    script, out = recorder(tmp_path)
    done = cli("--library", str(library), "attachment", "open", ref, "paper.pdf", env={"P2PSYNC_OPENER": str(script)})
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 20  # the opener runs on its own, as a viewer would
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    opened = Path(out.read_text())
    assert opened.read_bytes() == pdf.read_bytes() and opened.is_relative_to(library)
    assert "Opened" in done.stdout


def test_attachment_open_of_a_missing_file_says_so(library: Path, tmp_path: Path) -> None:
    script, out = recorder(tmp_path)
    with Library.open(library) as lib:
        ref = next(iter(lib.refs.listing())).id
    done = cli("--library", str(library), "attachment", "open", ref, "nope.pdf", env={"P2PSYNC_OPENER": str(script)})
    assert done.returncode != 0 and done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
    missing = cli(
        "--library", str(library), "attachment", "open", ref, "x.pdf", env={"P2PSYNC_OPENER": "/no/such/opener"}
    )
    assert missing.returncode != 0 and missing.stderr.count("\n") == 1
    assert not out.exists()


def test_attachment_open_of_a_file_not_fetched_yet_says_so(library: Path, tmp_path: Path) -> None:
    with Library.open(library) as lib:
        ref = next(iter(lib.refs.listing())).id
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + b"y" * 1000)
    assert cli("--library", str(library), "attach", ref, str(pdf)).returncode == 0
    copy = tmp_path / "copy"
    with Library.open(library) as lib, Library.create(copy, "copy", found=False) as other:
        other.ingest(lib.log_entries())  # the change sets arrived, the file has not
    script, out = recorder(tmp_path)
    done = cli("--library", str(copy), "attachment", "open", ref, "paper.pdf", env={"P2PSYNC_OPENER": str(script)})
    assert done.returncode != 0 and "not on this machine yet" in done.stderr and done.stderr.count("\n") == 1
    assert not out.exists()
    assert os.environ.get("P2PSYNC_OPENER") is None  # (the test runner's own is never used)


def test_status_watch_shows_a_daemons_round_live(tmp_path: Path) -> None:
    home = founded(tmp_path / "home", "Home")
    work = joined(home, tmp_path / "work", "Work")
    pdf = tmp_path / "big.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + os.urandom(8_000_000))
    home.attach(home.add_reference({"title": "Big"}), pdf)
    home.close()
    work.close()
    served, port = start_daemon(tmp_path / "home")
    env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    args = ["status", "--watch", "--json", "--count", "60", "--every", "0.1"]
    watch = subprocess.Popen(
        [*P2PSYNC, "--library", str(tmp_path / "work"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    syncing = None
    try:
        first = json.loads(read_first_line(watch))
        assert first["progress"] is None  # no daemon for this library yet
        syncing, _ = start_daemon(tmp_path / "work", "--address", f"127.0.0.1:{port}")
        out, err = watch.communicate(timeout=60)
        assert watch.returncode == 0, err
        lines = [first] + [json.loads(line) for line in out.splitlines()]
        assert len(lines) == 60  # --count bounds it
        seen = [line["progress"] for line in lines if line["progress"] is not None]
        assert seen, "the watch never saw the daemon"
        done = [p for p in seen if p["rounds"] >= 1 and not p["running"]]
        assert done, seen[-1]
        last = done[-1]
        assert last["peers_done"] == 1 and last["changesets_in"] >= 1
        assert last["files_total"] == 1 and last["bytes_total"] == pdf.stat().st_size == last["bytes_done"]
        fetched = [p["bytes_done"] for p in seen if p["rounds"] == 0]
        assert fetched == sorted(fetched)  # a round's bytes only grow
        # The text view: the daemon's line heads the usual status.
        text = cli("--library", str(tmp_path / "work"), "status", "--watch", "--count", "1")
        assert text.returncode == 0 and text.stdout.startswith("Daemon "), text.stdout
        assert "8.0 MB of 8.0 MB (1 files)" in text.stdout and "Local changes not yet sent" in text.stdout
    finally:
        for process in (syncing, served):
            if process is not None:
                stop(process)
        if watch.poll() is None:
            watch.kill()
    gone = cli("--library", str(tmp_path / "work"), "status", "--watch", "--count", "1")
    assert gone.stdout.startswith("No daemon is running for this library"), gone.stdout
