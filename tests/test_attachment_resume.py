"""Attachment transfers resume after an interruption without re-sending finished chunks (issue 6,
item 3), with the real `p2psync` command in separate processes:

(a) the sender's daemon is killed (SIGKILL) in the middle of a large file, started again, and B
    syncs again: the file arrives whole and only what the partial file lacked is fetched;
(b) the cable of the sender's machine is cut in the middle (network namespaces, tests/netns.py):
    B's sync gives up in words within the client's read timeout, its status lists the attachment
    with a reason, and after healing the next sync fetches only the rest;
(c) the receiving `p2psync sync` is killed at various moments: the library always opens, nothing
    appears at the attachment's final path unless whole, and the next sync completes.

The kill or cut lands mid-transfer because the test watches B's partial file
(attachments/.p2psync/partial/REF-SHA256) grow and acts once 10-80 % of the file is written into
it (counted by its allocated blocks: its length runs ahead, as segments are written in parallel).
What the partial held is measured by the test itself (chunk by chunk, against the source's
manifest), independently of the fetcher's own `bytes_resumed`. Every wait is bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from p2psync.model.chunking import manifest_of, offsets
from p2psync.store import transfers
from p2psync.store.library import Library
from tests import netns
from tests.netns import JsonLines, Lab
from tests.sync_support import founded, joined

lab = netns.lab  # the fixture: `lab(n)` makes a Lab that is closed after the test

REPO = Path(__file__).resolve().parent.parent
P2PSYNC = [sys.executable, "-m", "p2psync"]
WAIT = 20.0  # seconds: the bound on a wait for a process or the network
CLIENT_SILENCE = 20.0  # the fetcher's read timeout (net/chunks.py: sock_read=20.0)
LOW, HIGH = 0.10, 0.80  # act while the partial file holds this share of the attachment


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}  # every command names its library


# --- the libraries and the file -------------------------------------------------------------------


class Setup:
    """A founded A with one reference and a large random attachment; B joined A and has none of it."""

    def __init__(self, tmp_path: Path, size: int, seed: int = 7) -> None:
        self.pa, self.pb = tmp_path / "a", tmp_path / "b"
        a = founded(self.pa, "A")
        b = joined(a, self.pb, "B")
        self.device_a = a.device_id
        self.ref = a.add_reference({"title": "A large scan"})
        self.source = tmp_path / "scan.pdf"
        rng = random.Random(seed)
        with self.source.open("wb") as out:  # random bytes: no chunk repeats, none is on B's disk
            out.write(b"%PDF-1.7\n")
            left = size - 9
            while left:
                step = min(left, 8 * 1024 * 1024)
                out.write(rng.randbytes(step))
                left -= step
        a.attach(self.ref, self.source)
        a.close()
        b.close()
        self.size = size
        self.manifest = manifest_of(self.source)
        self.sha = self.manifest["sha256"]
        self.partial = self.pb / "attachments" / ".p2psync" / "partial" / f"{self.ref}-{self.sha}"
        self.final = self.pb / "attachments" / self.ref / self.source.name

    def held(self) -> int:
        """Bytes of whole, correct chunks in B's partial file (read and hashed here, chunk by chunk)."""
        data = self.partial.read_bytes()
        total = 0
        for (digest, length), start in zip(self.manifest["chunks"], offsets(self.manifest["chunks"]), strict=True):
            piece = data[start : start + length]
            if len(piece) == length and hashlib.sha256(piece).hexdigest() == digest:
                total += length
        return total

    def b_attachment(self) -> dict[str, Any]:
        with Library.open(self.pb) as b:
            [item] = b.list_attachments(self.ref)
        return item


def sha_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def partial_size(path: Path) -> int:
    """Bytes written so far into a partial file: its allocated blocks, not its length (the fetcher
    writes several segments at once, each at its own offset, so the length runs ahead of the data)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return 0
    return min(stat.st_size, stat.st_blocks * 512)


def wait_written(
    s: Setup,
    low: float,
    high: float,
    running: Callable[[], bool],
    log: Callable[[], str],
    limit: float = WAIT,
    strict: bool = True,
) -> int:
    """Poll the partial file (every 2 ms) until low..high of the attachment is written; that amount.
    AssertionError (with the logs) if it jumps past `high` (unless not `strict`: then that amount,
    for callers to whom a later moment is as good), the sync ends first, or the limit passes."""
    start = time.monotonic()
    seen = 0
    while time.monotonic() - start < limit:
        seen = partial_size(s.partial)
        if seen > high * s.size:
            if not strict:
                return seen
            raise AssertionError(f"the partial file went past {low:.0%} to {seen / s.size:.0%} unseen\n{log()}")
        if seen >= low * s.size:
            return seen
        if not running():
            raise AssertionError(f"the sync ended before {low:.0%} of the file was written ({seen} bytes)\n{log()}")
        time.sleep(0.002)
    raise AssertionError(f"{low:.0%} of the file was not written within {limit:g} s ({seen} bytes)\n{log()}")


def wait_mid_transfer(s: Setup, running: Callable[[], bool], log: Callable[[], str]) -> int:
    return wait_written(s, LOW, HIGH, running, log)


# --- processes on this machine (127.0.0.1) --------------------------------------------------------


class LocalDaemon:
    """`p2psync daemon --json` on 127.0.0.1 (any free port, no mDNS, no automatic syncs)."""

    def __init__(self, library: Path) -> None:
        proc = subprocess.Popen(
            [
                *P2PSYNC,
                "daemon",
                "--library",
                str(library),
                "--listen",
                "127.0.0.1:0",
                "--json",
                "--no-mdns",
                "--no-auto",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=REPO,
            env=env(),
        )
        self.out = JsonLines(proc)
        try:
            first = self.out.expect(lambda m: "listening" in m, WAIT, "the daemon listening")
        except BaseException:
            self.kill()
            raise
        self.address = first["listening"]

    @property
    def pid(self) -> int:
        return self.out.proc.pid

    def log(self) -> str:
        return self.out.stderr_text(60)

    def kill(self) -> None:
        """SIGKILL by the PID this test started (nothing is cleaned up: that is the point)."""
        if self.out.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.out.proc.wait(timeout=WAIT)

    def stop(self) -> int:
        if self.out.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.out.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise


class SyncRun:
    """A one-shot `p2psync sync --json` with the one peer at `address` (no LAN lookup); its stdout
    and stderr go to files (the report is one indented JSON document, printed at the end)."""

    count = 0

    def __init__(
        self,
        s: Setup,
        address: str,
        popen: Callable[..., subprocess.Popen[Any]] = subprocess.Popen,
        as_json: bool = True,
    ) -> None:
        SyncRun.count += 1
        self.out_path = s.pb.parent / f"sync{SyncRun.count}.out"
        self.err_path = s.pb.parent / f"sync{SyncRun.count}.err"
        argv = ["sync", "--no-mdns", "--peer", s.device_a, "--address", address, "--library", str(s.pb)]
        argv += ["--json"] if as_json else []
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = popen([*P2PSYNC, *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=REPO, env=env())

    def running(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        return self.err_path.read_text()

    def kill(self) -> None:
        """SIGKILL by the PID this test started."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=WAIT)

    def wait(self, limit: float) -> bool:
        """True if it ended within `limit` seconds."""
        try:
            self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            return False
        return True

    def end(self, limit: float = WAIT) -> int:
        """The exit code, waiting at most `limit` seconds (then it is killed and the test fails)."""
        if not self.wait(limit):
            self.kill()
            raise AssertionError(f"the sync was still running after {limit:g} s; stderr:\n{self.stderr()}")
        return self.proc.returncode

    def stdout(self) -> str:
        return self.out_path.read_text()

    def finish(self, limit: float = WAIT) -> tuple[int, dict[str, Any], str]:
        """The exit code, the --json report and the stderr, waiting at most `limit` seconds."""
        self.end(limit)
        text = self.out_path.read_text()
        try:
            report = json.loads(text)
        except ValueError as exc:
            raise AssertionError(f"no --json report (exit {self.proc.returncode}): {text!r}\n{self.stderr()}") from exc
        return self.proc.returncode, report, self.stderr()


def status_json(library: Path) -> dict[str, Any]:
    done = subprocess.run(
        [*P2PSYNC, "status", "--json", "--library", str(library)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env(),
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def check_resumed(s: Setup, report: dict[str, Any], held: int) -> None:
    """The second sync brought the file whole and asked only for what the partial file lacked."""
    fetched = report["attachments"]
    assert fetched["files"] == 1 and fetched["missing"] == [], fetched
    assert fetched["bytes_resumed"] == held, (fetched, held)
    assert fetched["bytes_fetched"] <= s.size - held, (fetched, held)
    assert fetched["bytes_fetched"] + fetched["bytes_resumed"] + fetched["bytes_local"] == s.size, fetched
    assert sha_of(s.final) == s.sha
    assert not s.partial.exists()
    item = s.b_attachment()
    assert item["present"] and item["sha256"] == s.sha, item
    with Library.open(s.pb) as b:
        assert transfers.missing(b) == []


# --- (a) the sender killed mid-file ---------------------------------------------------------------


@pytest.mark.slow
def test_sender_killed_mid_file_then_restarted_resumes_without_refetching(tmp_path: Path) -> None:
    s = Setup(tmp_path, 96 * 1000 * 1000)
    daemon = LocalDaemon(s.pa)
    try:
        first = SyncRun(s, daemon.address)
        try:
            at = wait_mid_transfer(s, first.running, lambda: first.stderr() + daemon.log())
            daemon.kill()
            code, report, err = first.finish()
        finally:
            first.kill()
    finally:
        daemon.kill()
    # The change sets came (the reference is on B); the file did not, and B says why, in words.
    [missing] = report["attachments"]["missing"]
    assert missing["sha256"] == s.sha and missing["reason"] == "unreachable", report
    assert missing["detail"].startswith("the devices that have it could not be reached ("), missing
    assert report["attachments"]["files"] == 0, report
    assert code == 1, err  # a script can tell that the file was cut off
    assert "sync again to resume" in err, err
    # Between the two syncs: the partial file is there, holding part of the file; nothing at its place.
    assert s.partial.exists() and not s.final.exists()
    held = s.held()
    assert 0 < held < s.size, (held, at)
    assert s.b_attachment()["present"] is False
    [listed] = status_json(s.pb)["missing_attachments"]
    assert listed["sha256"] == s.sha and listed["reason"] == "unreachable" and listed["detail"], listed
    assert listed["partial_bytes"] == s.partial.stat().st_size
    # A starts again (after a SIGKILL: its library must open) and B syncs again.
    daemon = LocalDaemon(s.pa)
    try:
        code, report, err = SyncRun(s, daemon.address).finish(limit=30)
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert code == 0, err
    check_resumed(s, report, held)
    print(
        f"killed A with the partial file at {at / s.size:.0%}; B held {held} of {s.size} bytes; "
        f"the second sync fetched {report['attachments']['bytes_fetched']}"
    )


# --- (b) the cable cut mid-file -----------------------------------------------------------------


class LabDaemon:
    """`p2psync daemon --json` on one machine of the lab, at its LAN address (any free port)."""

    def __init__(self, net: Lab, machine: int, library: Path) -> None:
        argv = [*P2PSYNC, "daemon", "--library", str(library), "--listen", f"{net.address(machine)}:0"]
        self.out = JsonLines(net.popen(machine, [*argv, "--json", "--no-mdns", "--no-auto"], cwd=REPO, env=env()))
        first = self.out.expect(lambda m: "listening" in m, WAIT, "the daemon listening")
        self.address = first["listening"]

    def log(self) -> str:
        return self.out.stderr_text(60)


@pytest.mark.slow
def test_cable_cut_mid_file_fails_in_words_then_resumes_after_healing(
    lab: Callable[[int], Lab], tmp_path: Path
) -> None:
    net = lab(2)
    s = Setup(tmp_path, 64 * 1000 * 1000)
    shaped = net.limit_rate(1, "200mbit")  # ~2.5 s for the file on the lab's LAN: the cut lands well inside it
    a = LabDaemon(net, 1, s.pa)

    def on_machine_2(argv: list[str], **options: Any) -> subprocess.Popen[Any]:
        return net.popen(2, argv, **options)

    first = SyncRun(s, a.address, on_machine_2, as_json=False)  # what a person sees
    at = wait_mid_transfer(s, first.running, lambda: first.stderr() + a.log())
    net.cut(1)
    cut_at = time.monotonic()
    code = first.end(limit=CLIENT_SILENCE + 10)
    gave_up_after = time.monotonic() - cut_at
    err = first.stderr()
    assert gave_up_after < CLIENT_SILENCE + 5, (gave_up_after, err)  # the client's silence limit, not a hang
    assert code == 1, err
    assert f"Still missing: {s.source.name} of {s.ref}: the devices that have it could not be reached" in err, (
        code,
        first.stdout(),
        err,
    )
    # B's library opens, nothing is at the attachment's place, and status says what is missing and why.
    assert s.b_attachment()["present"] is False and not s.final.exists()
    held = s.held()
    assert 0 < held < s.size, (held, at)
    [listed] = status_json(s.pb)["missing_attachments"]
    assert listed["ref"] == s.ref and listed["sha256"] == s.sha, listed
    assert listed["reason"] == "unreachable" and listed["detail"].startswith(transfers.REASONS["unreachable"]), listed
    assert "stopped answering" in listed["detail"], listed
    assert listed["partial_bytes"] > 0, listed
    net.heal(1)
    if shaped:
        net.limit_rate(1, None)
    code2, report2, err2 = SyncRun(s, a.address, on_machine_2).finish(limit=30)
    assert code2 == 0, err2
    check_resumed(s, report2, held)
    print(
        f"cut with the partial file at {at / s.size:.0%} (shaped: {shaped}); the first sync ended "
        f"{gave_up_after:.1f} s after the cut (exit {code}); B held {held} bytes, "
        f"the second sync fetched {report2['attachments']['bytes_fetched']}"
    )


# --- (c) the receiver killed ----------------------------------------------------------------------


@pytest.mark.slow
def test_receiver_killed_mid_file_resumes_from_its_partial_file(tmp_path: Path) -> None:
    s = Setup(tmp_path, 64 * 1000 * 1000)
    daemon = LocalDaemon(s.pa)
    try:
        first = SyncRun(s, daemon.address)
        try:
            at = wait_mid_transfer(s, first.running, lambda: first.stderr() + daemon.log())
        finally:
            first.kill()
        assert s.partial.exists() and not s.final.exists()
        assert s.b_attachment()["present"] is False
        held = s.held()
        assert 0 < held < s.size, (held, at)
        [listed] = status_json(s.pb)["missing_attachments"]
        assert listed["sha256"] == s.sha and listed["partial_bytes"] > 0, listed
        code, report, err = SyncRun(s, daemon.address).finish(limit=30)
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert code == 0, err
    check_resumed(s, report, held)


def wait_finishing(s: Setup, running: Callable[[], bool], limit: float = WAIT) -> None:
    """Until every byte is written into the partial file (the fetcher then syncs it to disk and
    renames it into place), or the sync ended; polled every 2 ms."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if partial_size(s.partial) >= s.size or s.final.exists() or not running():
            return
        time.sleep(0.002)
    raise AssertionError(f"the partial file was not whole within {limit:g} s")


@pytest.mark.slow
def test_receiver_killed_at_any_moment_leaves_a_library_that_opens_and_syncs(tmp_path: Path) -> None:
    s = Setup(tmp_path, 64 * 1000 * 1000)
    daemon = LocalDaemon(s.pa)
    # Each sync starts from what the killed ones left: at once, while starting up and syncing the
    # change sets, at 25, 50 and 75 % of the file written, and once every byte is written.
    moments: list[tuple[str, float | tuple[float, float] | None]] = [
        ("at once", 0.0),
        ("after 0.3 s", 0.3),
        ("after 0.7 s", 0.7),
        ("at 25 %", (0.25, 0.45)),
        ("at 50 %", (0.50, 0.70)),
        ("at 75 %", (0.75, 0.95)),
        ("once whole", None),
    ]
    kills: list[str] = []
    late = False
    try:
        for label, moment in moments:
            run = SyncRun(s, daemon.address)
            try:
                if isinstance(moment, float):
                    ended = run.wait(moment) if moment else False
                elif isinstance(moment, tuple):
                    # On a loaded machine the poll can miss the window: a later moment is as good a test.
                    late = wait_written(s, *moment, run.running, run.stderr, strict=False) > moment[1] * s.size
                    ended = False
                else:
                    wait_finishing(s, run.running)
                    ended = not run.running()
            finally:
                run.kill()
            kills.append(f"{label}{' (had ended)' if ended else ''}: {partial_size(s.partial)} bytes written")
            with Library.open(s.pb) as b:  # the library opens after every kill
                titles = [r["title"] for r in b.list_references()]
                assert titles in ([], ["A large scan"]), kills
                items = b.list_attachments(s.ref) if titles else []
            # Something is at the attachment's place only whole, and it is listed as present exactly then.
            if s.final.exists():
                assert sha_of(s.final) == s.sha, kills
            assert [i["present"] for i in items] in ([], [s.final.exists()]), (items, kills)
            if isinstance(moment, tuple) and not late:
                assert items and not items[0]["present"] and s.held() >= moment[0] * s.size * 0.9, (items, kills)
            status_json(s.pb)  # status works on what was left
        # Whatever the kills left, the next sync completes and the file is whole.
        held = s.held() if s.partial.exists() else 0
        code, report, err = SyncRun(s, daemon.address).finish(limit=30)
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert code == 0 and report["peers"][0]["error"] is None, err
    fetched = report["attachments"]
    if fetched["wanted_files"]:  # not put in place before the last kill: what the partial held is not fetched again
        assert fetched["files"] == 1 and fetched["bytes_resumed"] == held, (fetched, held, kills)
    assert sha_of(s.final) == s.sha and not s.partial.exists()
    assert s.b_attachment()["present"] is True
    with Library.open(s.pb) as b:
        assert transfers.missing(b) == []
    print("killed", "; ".join(kills), "| then:", {k: fetched[k] for k in ("files", "bytes_fetched", "bytes_resumed")})
