"""Daemons as real processes on 127.0.0.1: automatic sync of a change made by another process,
in both directions, and a clean stop on SIGTERM; a removed device refused by every member. (mDNS
is off: addresses are given.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psync.node import Address, announce_addresses, merge_targets
from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.sync_support import founded, joined, sync_all

P2PSYNC = [sys.executable, "-m", "p2psync"]


def start_daemon(library: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [*P2PSYNC, "daemon", "--library", str(library), "--listen", "127.0.0.1:0", "--json", "--no-mdns", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the daemon prints where it listens first
    if not line:
        proc.kill()
        raise AssertionError(f"daemon did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc, int(json.loads(line)["listening"].rsplit(":", 1)[1])


def titles(path: Path) -> set[str]:
    with Library.open(path) as library:
        return {r["title"] for r in library.list_references()}


def wait_for(path: Path, title: str, limit: float = 15.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if title in titles(path):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{title!r} did not reach {path} within {limit} s")


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


@pytest.fixture
def libraries(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    a.close()
    b.close()
    yield tmp_path / "a", tmp_path / "b"


def test_daemons_sync_changes_made_by_other_processes(libraries: tuple[Path, Path]) -> None:
    pa, pb = libraries
    daemon_a, port_a = start_daemon(pa)
    daemon_b = None
    try:
        daemon_b, _port_b = start_daemon(pb, "--address", f"127.0.0.1:{port_a}")
        env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
        subprocess.run([*P2PSYNC, "ref", "add", "--title", "Made on B", "--library", str(pb)], check=True, env=env)
        wait_for(pa, "Made on B")
        # A learned where B listens when B synced with it; its own changes now go to B.
        subprocess.run([*P2PSYNC, "ref", "add", "--title", "Made on A", "--library", str(pa)], check=True, env=env)
        wait_for(pb, "Made on A")
    finally:
        code_a, err_a = stop(daemon_a)
        if daemon_b is not None:
            code_b, err_b = stop(daemon_b)
            assert code_b == 0 and "Stopped cleanly" in err_b, err_b
    assert code_a == 0 and "Stopped cleanly" in err_a, err_a
    assert titles(pa) == titles(pb) == {"Made on A", "Made on B"}


def test_one_shot_sync_command_and_status(libraries: tuple[Path, Path]) -> None:
    pa, pb = libraries
    with Library.open(pa) as a:
        a.add_reference({"title": "Only on A"})
    daemon_a, port_a = start_daemon(pa, "--no-auto")
    try:
        env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
        out = subprocess.run(
            [*P2PSYNC, "sync", "--address", f"127.0.0.1:{port_a}", "--json", "--library", str(pb)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        [peer] = json.loads(out.stdout)["peers"]
        assert peer["received"]["applied"] >= 1 and peer["error"] is None
        status = json.loads(
            subprocess.run(
                [*P2PSYNC, "status", "--json", "--library", str(pb)],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout
        )
        assert status["peers"][0]["last_sync"] and status["pending_local_changes"] == 0
    finally:
        code, err = stop(daemon_a)
    assert code == 0, err
    assert "Only on A" in titles(pb)
    env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    # Nobody listening: exit 1 and the reason in words; status keeps it.
    failed = subprocess.run(
        [*P2PSYNC, "sync", "--address", "127.0.0.1:9", "--library", str(pb)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert failed.returncode == 1 and "Could not reach 127.0.0.1:9" in failed.stderr, failed.stderr
    assert "Could not reach 127.0.0.1:" + str(port_a) in failed.stderr  # the remembered address too


def test_a_removed_device_is_refused_by_every_member_both_ways(tmp_path: Path) -> None:
    """After `peers remove C` on A (and one sync that carries the removal to B), C can sync with
    nobody: A's and B's servers refuse its key, and their clients refuse C's server."""
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    c = joined(a, tmp_path / "c", "C")
    sync_all([a, b, c])  # everyone knows everyone
    a_id, b_id, c_id = a.device_id, b.device_id, c.device_id
    for library in (a, b, c):
        library.close()
    pa, pb, pc = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    subprocess.run([*P2PSYNC, "peers", "remove", c_id[:7], "--yes", "--library", str(pa)], check=True, env=env)
    with Library.open(pa) as la, Library.open(pb) as lb:
        sync_libraries(la, lb)  # the removal reaches B
        assert [d["revoked"] for d in lb.devices() if d["device_id"] == c_id] == [True]
    with Library.open(pc) as lc:
        lc.add_reference({"title": "Made on C after its removal"})

    def sync_to(library: Path, port: int, peer: str) -> subprocess.CompletedProcess[str]:
        argv = ["sync", "--peer", peer, "--address", f"127.0.0.1:{port}", "--library", str(library)]
        return subprocess.run([*P2PSYNC, *argv], capture_output=True, text=True, env=env)

    started = [start_daemon(pa), start_daemon(pb), start_daemon(pc, "--no-auto")]
    (_, port_a), (_, port_b), (_, port_c) = started
    try:
        for port, member in ((port_a, a_id), (port_b, b_id)):
            refused = sync_to(pc, port, member)
            assert refused.returncode == 1, refused.stderr
            assert "not a member of the library here" in refused.stderr, refused.stderr
        for path in (pa, pb):
            refusing = sync_to(path, port_c, c_id)
            assert refusing.returncode == 1, refusing.stderr
            assert f"({c_id[:7]}) is not a member of this library" in refusing.stderr, refusing.stderr
    finally:
        codes = [stop(proc)[0] for proc, _ in started]
    assert codes == [0, 0, 0]
    assert "Made on C after its removal" not in titles(pa) | titles(pb)


def test_targets_are_merged_once_per_device_and_address_and_loopback_is_not_announced_abroad() -> None:
    lan = [Address("198.18.0.2", 47625, "B" * 32)]
    given = [Address("10.0.0.9", 47625), Address("198.18.0.2", 47625)]
    remembered = [Address("10.1.1.1", 47625, "B" * 32), Address("10.1.1.3", 47625, "C" * 32)]
    assert merge_targets(lan, given, remembered) == [lan[0], given[0], remembered[1]]
    assert announce_addresses("198.18.0.1", None) == ["198.18.0.1"]
    assert announce_addresses("0.0.0.0", ["198.18.0.1"]) == ["198.18.0.1"]
    assert announce_addresses("127.0.0.1", None) == []  # on the real interfaces nobody could reach it
    assert announce_addresses("127.0.0.1", ["127.0.0.1"]) == ["127.0.0.1"]
    assert announce_addresses("localhost", None) == announce_addresses("::1", None) == []


def test_a_daemon_passes_on_what_a_one_shot_sync_brought_in(tmp_path: Path) -> None:
    """A one-shot `p2psync sync` on B (another process than B's daemon) brings C's change into B's
    library; B's daemon notices foreign change sets arriving and passes them on to A at once,
    without waiting for its interval."""
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    c = joined(a, tmp_path / "c", "C")
    c_device = c.device_id
    for library in (a, b, c):
        library.close()
    env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    daemon_a, port_a = start_daemon(tmp_path / "a", "--interval", "1h")
    daemon_b, _ = start_daemon(tmp_path / "b", "--interval", "1h", "--address", f"127.0.0.1:{port_a}")
    bd = str(tmp_path / "b")
    daemon_c, port_c = start_daemon(tmp_path / "c", "--no-auto", "--interval", "1h")
    try:
        with Library.open(tmp_path / "c") as library:
            library.add_reference({"title": "Made on C"})
        # A one-shot sync in another process writes C's change into B's library (with C only).
        subprocess.run(
            [*P2PSYNC, "sync", "--no-mdns", "--peer", c_device, "--address", f"127.0.0.1:{port_c}", "--library", bd],
            check=True,
            capture_output=True,
            env=env,
        )
        elapsed = wait_for(tmp_path / "a", "Made on C", limit=10)
    finally:
        codes = [stop(d)[0] for d in (daemon_a, daemon_b, daemon_c)]
    assert codes == [0, 0, 0]
    assert elapsed < 10
