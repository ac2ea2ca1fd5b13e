"""`p2psync sync` run by hand on both machines meets, with no daemon on either side (issue 23,
point 9): each one-shot sync also accepts the other while it runs and for --wait, and dials again
those not met yet. Two real libraries on 127.0.0.1, each `sync --wait` a real process, started a
second apart: both end with the other's changes (and attachments), well before the wait is over.
The wait is bounded; --wait 0 is the old one-shot that only dials out."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from p2psync.store.library import Library
from tests.support import P2PSYNC, cli
from tests.sync_support import founded, joined


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path]:
    a = founded(tmp_path / "home", "Home laptop")
    b = joined(a, tmp_path / "work", "Work laptop")
    a.add_reference({"title": "Written at home"})
    b.add_reference({"title": "Written at work"})
    pdf = tmp_path / "work.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + os.urandom(200_000))
    b.attach(b.add_reference({"title": "With a PDF"}), pdf)
    a.close()
    b.close()
    return tmp_path / "home", tmp_path / "work"


def titles(path: Path) -> set[str]:
    with Library.open(path) as library:
        return {r["title"] for r in library.list_references()}


def start_sync(library: Path, listen: int, other: int, wait: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    return subprocess.Popen(
        [
            *P2PSYNC,
            "--library",
            str(library),
            "sync",
            "--json",
            "--wait",
            wait,
            "--listen",
            f"127.0.0.1:{listen}",
            "--address",
            f"127.0.0.1:{other}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_hand_syncs_a_second_apart_meet_and_both_end_with_the_others_changes(two: tuple[Path, Path]) -> None:
    home, work = two
    port_home, port_work = free_port(), free_port()
    started = time.monotonic()
    first = start_sync(home, port_home, port_work, "30s")  # nobody listens at work yet
    time.sleep(1.0)
    second = start_sync(work, port_work, port_home, "30s")
    out_first, err_first = first.communicate(timeout=60)
    _, err_second = second.communicate(timeout=60)
    took = time.monotonic() - started
    assert first.returncode == 0, err_first
    assert second.returncode == 0, err_second
    assert took < 15, f"the two took {took:.1f} s: they waited instead of meeting"
    assert {"Written at home", "Written at work", "With a PDF"} <= titles(home)
    assert {"Written at home", "Written at work", "With a PDF"} <= titles(work)
    with Library.open(home) as library:
        ref = next(r["id"] for r in library.list_references() if r["title"] == "With a PDF")
        [attachment] = library.list_attachments(ref)
        assert attachment["present"], "the attachment did not follow"
    # The first one was reached by the second: it says so. (What that arrival applied depends on
    # who dialled first: under load the first's own dial-again can fetch the work changes before
    # the second's push arrives, which then applies nothing new.)
    report = json.loads(out_first)
    assert [a["device"] for a in report["arrivals"]], report
    assert "Accepting this library's other devices" in err_first


def test_the_wait_is_bounded_when_nobody_comes(two: tuple[Path, Path]) -> None:
    home, _ = two
    started = time.monotonic()
    done = start_sync(home, free_port(), free_port(), "2s")
    out, err = done.communicate(timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 1 and "No peer could be synced" in err, err
    [peer] = json.loads(out)["peers"]
    assert peer["error"].startswith("Could not reach"), peer
    assert 2 <= took < 12, f"took {took:.1f} s for a wait of 2 s"


def test_wait_0_dials_out_once_and_does_not_listen(two: tuple[Path, Path]) -> None:
    home, _ = two
    port = free_port()
    started = time.monotonic()
    done = cli(
        "--library",
        str(home),
        "sync",
        "--wait",
        "0",
        "--listen",
        f"127.0.0.1:{port}",
        "--address",
        f"127.0.0.1:{free_port()}",
    )
    assert done.returncode == 1 and "Accepting" not in done.stderr, done.stderr
    assert time.monotonic() - started < 10


def test_a_bad_wait_is_a_usage_error_and_the_help_says_what_it_does(two: tuple[Path, Path]) -> None:
    home, _ = two
    done = cli("--library", str(home), "sync", "--wait", "soon")
    assert done.returncode == 2 and "--wait" in done.stderr, done.stderr
    text = cli("sync", "--help", env={"P2PSYNC_SYNC_WAIT": ""}).stdout
    assert "--wait" in text and "default: 30s" in text and "meet" in text
