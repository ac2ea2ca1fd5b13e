"""What the Sync Status and Sync Conflicts tests share: two real libraries of one researcher, on
two "machines" with real names (Home laptop, Work laptop), joined the way the sync tests join
them (tests/sync_support.py), and a real `p2psync daemon` serving one of them on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2psync.model.people import parse_person
from tests.support import P2PSYNC, cli
from tests.sync_support import founded, joined
from tests.web_support import read_first_line, stop

HOME, WORK = "Home laptop", "Work laptop"
PAPERS = [
    ("Synaptic plasticity and memory: an evaluation of the hypothesis", "2000", "Martin, S. J.", "Annu Rev Neurosci"),
    ("Long-term potentiation and memory", "2004", "Lynch, M. A.", "Physiol Rev"),
    ("The organization of behavior", "1949", "Hebb, Donald O.", ""),
]


@dataclass(frozen=True)
class Devices:
    home: Path
    work: Path


def two_devices(tmp_path: Path) -> Devices:
    """A library founded on "Home laptop" with a few papers, joined by "Work laptop" (synced once)."""
    home = founded(tmp_path / "home", "Neuroscience")
    home.members.rename(HOME)  # (a new library names its device after the host)
    for title, year, author, journal in PAPERS:
        values = {"title": title, "year": year, "authors": [parse_person(author)]}
        home.refs.add({**values, **({"journal": journal} if journal else {})})
    work = joined(home, tmp_path / "work", WORK)
    home.close()
    work.close()
    return Devices(tmp_path / "home", tmp_path / "work")


class Daemon:
    """`p2psync daemon` on 127.0.0.1 (no mDNS), started and stopped by the test (by its Popen)."""

    def __init__(self, library: Path, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
        self.process = subprocess.Popen(
            [*P2PSYNC, "--library", str(library), "daemon", "--listen", "127.0.0.1:0", "--no-mdns", "--json", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        first = json.loads(read_first_line(self.process))
        self.port = int(first["listening"].rsplit(":", 1)[1])
        self.web: str | None = first.get("web")  # the login link, with --web

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop(self.process)


def ok(*args: str) -> str:
    """A p2psync command that must work; its stdout."""
    done = cli(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def ref_id(library: Path, title_start: str) -> str:
    for row in json.loads(ok("--library", str(library), "ref", "list", "--json")):
        if (row["title"] or "").startswith(title_start):
            return str(row["id"])
    raise AssertionError(f"no reference titled {title_start!r}... in {library}")


def until(page: Any, check: Callable[[], bool], seconds: float = 15.0) -> None:
    """Wait until `check()` holds, asking every 0.1 s (Playwright's wait_for_function evaluates
    its text with eval, which the app's Content-Security-Policy forbids)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {check}")
        page.wait_for_timeout(100)
