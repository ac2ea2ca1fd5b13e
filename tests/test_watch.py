"""The daemon learns of attachments edited in place from the operating system's notifications
(p2psync/watching.py), with real daemons, real files and the real watcher: an edit reaches the
other daemon with no periodic scan at all; a file still being written is never recorded half
written; files p2psync itself puts in place are not echoed back as edits; a burst of thousands
of writes is a few looks, not thousands; and where notifications cannot start, the daemon says
so in one line and finds edits by its periodic scan."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from p2psync.store.library import Library
from p2psync.store.sync import unsealed_count, version_vector
from p2psync.watching import MAX_NAMED, AttachmentWatcher
from tests.sync_support import founded, joined
from tests.test_daemon_loopback import P2PSYNC, stop

NAME = "paper.pdf"
HOUR = {"P2PSYNC_SCAN_SECONDS": "3600"}  # no periodic scan within a test: only the watcher can see an edit


def start(library: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
    environ = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"} | (env or {})
    proc = subprocess.Popen(
        [*P2PSYNC, "daemon", "--library", str(library), "--listen", "127.0.0.1:0", "--json", "--no-mdns", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"daemon did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc, int(json.loads(line)["listening"].rsplit(":", 1)[1])


def sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def wait_until(condition: Callable[[], bool], limit: float, what: str) -> float:
    start_at = time.monotonic()
    while time.monotonic() - start_at < limit:
        if condition():
            return time.monotonic() - start_at
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {limit} s")


def pair_with_paper(tmp_path: Path, size: int = 2_000_000) -> tuple[Path, Path, str]:
    """A founds, B joins; A holds one reference with NAME attached and B has it too."""
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    ref = a.add_reference({"title": "Annotated in place"})
    source = tmp_path / NAME
    source.write_bytes(b"%PDF-1.7\n" + random.Random(1).randbytes(size))
    a.attach(ref, source)
    a.close()
    b.close()
    return tmp_path / "a", tmp_path / "b", ref


def authored_by_itself(path: Path) -> int:
    """Change-log entries a library made itself (sealed or not)."""
    with Library.open(path) as library:
        return version_vector(library).get(library.device_id, 0) + unsealed_count(library)


def test_an_edit_in_place_reaches_the_other_daemon_with_no_scan(tmp_path: Path) -> None:
    pa, pb, ref = pair_with_paper(tmp_path)
    at_a, at_b = pa / "attachments" / ref / NAME, pb / "attachments" / ref / NAME
    daemon_a, port_a = start(pa, env=HOUR)
    daemon_b = None
    try:
        daemon_b, _ = start(pb, "--address", f"127.0.0.1:{port_a}", env=HOUR)
        wait_until(lambda: sha(at_b) == sha(at_a), 30, "the first version at B")
        time.sleep(1.0)  # both daemons past their start-up rounds
        # A viewer saving incrementally: 2,000 small appends in a burst, each one a notification.
        rng = random.Random(2)
        with at_a.open("ab") as handle:
            for _ in range(2_000):
                handle.write(rng.randbytes(50))
                handle.flush()
        took = wait_until(lambda: sha(at_b) == sha(at_a), 15, "the edit at B")
    finally:
        if daemon_b is not None:
            code_b, err_b = stop(daemon_b)
        code_a, err_a = stop(daemon_a)
    assert code_a == 0 and code_b == 0, (err_a, err_b)
    assert "Watching" in err_a and "Watching" in err_b, err_a
    looks = [line for line in err_a.splitlines() if "edited here" in line]
    assert 1 <= len(looks) <= 10, err_a  # a burst is a few looks, not 2,000
    assert took < 10, took


def test_a_file_being_rewritten_is_never_recorded_half_written(tmp_path: Path) -> None:
    # A writer rewrites the file in place over and over, each pass all one byte value; every
    # version the scan records must be one whole pass, never the head of one and the tail of another.
    size = 16 * 1024 * 1024
    block = 1024 * 1024
    with founded(tmp_path / "a") as library:
        ref = library.add_reference({"title": "Being saved"})
        source = tmp_path / NAME
        source.write_bytes(bytes(size))
        library.attach(ref, source)
        path = library.attachment_path(ref, NAME)
        done = threading.Event()
        last = [0]

        def rewrite() -> None:
            fd = os.open(path, os.O_WRONLY)
            try:
                for generation in range(1, 200):
                    for at in range(0, size, block):
                        os.pwrite(fd, bytes([generation]) * block, at)
                    last[0] = generation
                    if done.is_set():
                        return
            finally:
                os.close(fd)

        writer = threading.Thread(target=rewrite)
        writer.start()
        recorded: set[str] = set()
        unsettled = 0
        try:
            deadline = time.monotonic() + 20
            while writer.is_alive() and time.monotonic() < deadline:
                changes = library.scan_attachments()
                unsettled += sum(1 for c in changes if c["change"] == "unsettled")
                recorded.add(library.attachments.entries(ref, NAME)[0][3]["sha256"])
                if unsettled >= 5:
                    break
        finally:
            done.set()
            writer.join(timeout=30)
        changes = library.scan_attachments()  # the writer is done: now the file is read whole
        final = library.attachments.entries(ref, NAME)[0][3]["sha256"]
    whole = {hashlib.sha256(bytes([g]) * size).hexdigest() for g in range(last[0] + 1)}
    assert recorded <= whole, "a version was recorded from a file caught half rewritten"
    assert unsettled >= 1  # the scan did see the file change under it
    assert final == hashlib.sha256(bytes([last[0]]) * size).hexdigest()


def test_files_p2psync_puts_in_place_are_not_echoed_as_edits(tmp_path: Path) -> None:
    pa, pb, ref = pair_with_paper(tmp_path, 500_000)
    at_a, at_b = pa / "attachments" / ref, pb / "attachments" / ref
    daemon_a, port_a = start(pa, env=HOUR)
    daemon_b = None
    try:
        daemon_b, _ = start(pb, "--address", f"127.0.0.1:{port_a}", env=HOUR)
        wait_until(lambda: sha(at_b / NAME) == sha(at_a / NAME), 30, "the first version at B")
        time.sleep(1.0)
        ours_a, ours_b = authored_by_itself(pa), authored_by_itself(pb)
        # A file attached by another process on A (copied into .p2psync/incoming, then renamed
        # into place in the transaction that records it), which B's daemon then fetches and
        # renames into place: neither daemon may take the new file for an edit of its own.
        second = tmp_path / "second.pdf"
        second.write_bytes(random.Random(3).randbytes(1_500_000))
        out = subprocess.run(
            [*P2PSYNC, "attach", ref, str(second), "--library", str(pa)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        wait_until(lambda: sha(at_b / "second.pdf") == sha(second), 20, "the attached file at B")
        # And an edit in place on A: B lands the new version by rename; that is not B's edit.
        with (at_a / NAME).open("ab") as handle:
            handle.write(random.Random(4).randbytes(70_000))
        wait_until(lambda: sha(at_b / NAME) == sha(at_a / NAME), 20, "the edit at B")
        time.sleep(1.5)  # several debounce periods: an echo would have been recorded by now
        after_a, after_b = authored_by_itself(pa), authored_by_itself(pb)
    finally:
        if daemon_b is not None:
            code_b, err_b = stop(daemon_b)
        code_a, err_a = stop(daemon_a)
    assert code_a == 0 and code_b == 0, (err_a, err_b)
    assert after_b == ours_b, err_b  # B wrote nothing of its own
    assert after_a == ours_a + 2, err_a  # the attach and the one edit, each recorded once
    assert "edited here" not in err_b, err_b
    assert sum(1 for line in err_a.splitlines() if "edited here" in line) == 1, err_a


def test_a_burst_of_ten_thousand_writes_is_a_few_looks(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    top = library / "attachments"
    (top / ".p2psync" / "partial").mkdir(parents=True)
    refs = [top / f"ref{i:03d}" for i in range(50)]
    for folder in refs:
        folder.mkdir()

    async def burst() -> tuple[list[object], int, float]:
        woken = asyncio.Event()
        watcher = AttachmentWatcher(library, woken.set)
        assert await watcher.start()
        taken: list[object] = []
        try:

            def write() -> None:
                for i in range(10_000):
                    with (refs[i % 50] / NAME).open("ab") as handle:
                        handle.write(b"x")
                for i in range(100):  # p2psync's own work files and folders are never named
                    (top / ".p2psync" / "partial" / f"part{i}").write_bytes(b"y")
                (top / "refnew").mkdir()

            began = time.monotonic()
            writing = asyncio.get_running_loop().run_in_executor(None, write)
            quiet_since = time.monotonic()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (writing.done() and time.monotonic() - quiet_since > 0.5):
                try:
                    await asyncio.wait_for(woken.wait(), 0.1)
                except TimeoutError:
                    continue
                woken.clear()
                if (files := watcher.take()) is not None:
                    taken.append(files)
                    quiet_since = time.monotonic()
                await asyncio.sleep(0.05)  # the daemon's look takes a while: more arrives meanwhile
            await writing
            return taken, watcher.batches, time.monotonic() - began
        finally:
            await watcher.stop()

    taken, batches, took = asyncio.run(burst())
    named: set[object] = set()
    for files in taken:
        assert isinstance(files, set)
        named |= files
    assert named == {(folder.name, NAME) for folder in refs}
    # One look per quiet spell (50 ms without a write) or per second, not one per write: a few
    # here, where the 10,000 writes take well under a second (more only if the machine paused
    # the writer that often).
    bound = max(40, int(took / 0.05))
    assert len(taken) <= bound and batches <= bound, (len(taken), batches, took)

    # Past MAX_NAMED files at once the watcher asks for one look at everything instead.
    async def many() -> object:
        woken = asyncio.Event()
        watcher = AttachmentWatcher(library, woken.set)
        assert await watcher.start()
        try:
            for i in range(MAX_NAMED + 100):
                (refs[i % 50] / f"f{i}.pdf").write_bytes(b"z")
            await asyncio.wait_for(woken.wait(), 10)
            await asyncio.sleep(0.3)
            return watcher.take()
        finally:
            await watcher.stop()

    assert asyncio.run(many()) == "all"


def test_without_notifications_the_daemon_says_so_and_scans(tmp_path: Path) -> None:
    pa, pb, ref = pair_with_paper(tmp_path, 300_000)
    # The attachment folder is gone when A's daemon starts (and comes back with the next
    # attach): the watcher cannot start there, and the daemon falls back to its scan.
    moved = tmp_path / "moved"
    (pa / "attachments").rename(moved)
    fast = {"P2PSYNC_SCAN_SECONDS": "0.5"}
    daemon_a, port_a = start(pa, env=fast)
    daemon_b = None
    try:
        time.sleep(0.5)
        moved.rename(pa / "attachments")
        at_a, at_b = pa / "attachments" / ref / NAME, pb / "attachments" / ref / NAME
        daemon_b, _ = start(pb, "--address", f"127.0.0.1:{port_a}", env=HOUR)
        wait_until(lambda: sha(at_b) == sha(at_a), 30, "the first version at B")
        with at_a.open("ab") as handle:
            handle.write(b"% annotated\n")
        wait_until(lambda: sha(at_b) == sha(at_a), 20, "the edit at B, found by A's scan")
    finally:
        if daemon_b is not None:
            stop(daemon_b)
        code_a, err_a = stop(daemon_a)
    assert code_a == 0, err_a
    [line] = [line for line in err_a.splitlines() if "File notifications" in line]
    assert "not available" in line and "every few seconds" in line, line
    assert "Watching" not in err_a
