"""Minimized cases the chaos harnesses found (issue 24), each kept as a regression test.
Shared by the harnesses: append only."""

from __future__ import annotations

from pathlib import Path

from tests.chaos import schedule as s
from tests.chaos.world import run_steps


def test_chaos_concurrent_introductions_list_in_one_order(tmp_path: Path) -> None:
    """Simulation, seed 7 (60 steps): two devices introduced concurrently by two members were
    listed in the order each machine applied them, so `peers` (and the library's digest) differed
    between machines. Members are now listed by the introduction's timestamp, author and seq."""
    run_steps([s.PairNewDevice(dev=1), s.PairNewDevice(dev=2)], tmp_path, devices=3, seed=0)


def test_chaos_a_daemon_goes_on_when_its_disk_is_full(tmp_path: Path) -> None:
    """Real processes, seed 24 (1 minute): device 3's disk filled up while its daemon synced, and
    the daemon exited ("Error: No space left on the disk ..."), so it synced nothing any more,
    even once there was room again. A daemon now logs the full disk and tries again later."""
    import os
    import subprocess
    import time

    import pytest

    from p2psync.store.library import Library
    from tests.chaos import real_procs
    from tests.sync_support import founded, joined
    from tests.test_daemon_loopback import start_daemon, stop, wait_for

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"tmpfs cannot be mounted here: {done.stderr.decode().strip()}")
    try:
        a = founded(tmp_path / "a")
        b = joined(a, disk / "b", "B")
        a.close()
        b.close()
        daemon_a, port_a = start_daemon(tmp_path / "a")
        daemon_b, _ = start_daemon(
            disk / "b", "--address", f"127.0.0.1:{port_a}", "--interval", "1s", "--backup-every", "0"
        )
        try:
            real_procs.fill(disk)
            with Library.open(tmp_path / "a") as library:
                library.add_reference({"title": "Written while B's disk is full"})
            time.sleep(4)  # B's daemon tries to take it in on its interval, and cannot
            assert daemon_b.poll() is None, stop(daemon_b)[1]
            real_procs.free(disk)
            wait_for(disk / "b", "Written while B's disk is full", limit=30)
        finally:
            code_b, log_b = stop(daemon_b)
            stop(daemon_a)
        assert code_b == 0, log_b
        assert "No space left" in log_b, log_b
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
