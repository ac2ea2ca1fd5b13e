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


def test_chaos_a_relay_sync_on_a_full_disk_says_disk_full(tmp_path: Path) -> None:
    """Real processes, seed 698304166 (10 minutes): device 3's daemon exited twice with "Error:
    No space left on device; check the path and its permissions." Writing a chunk fetched from
    the relay on a full disk raised the operating system's bare OSError, which no one expects
    of a relay round; it is now DiskFull: the round reports it, the daemon goes on, and the next
    sync with room brings the file."""
    import os
    import subprocess

    import pytest

    from p2psync.errors import DiskFull
    from p2psync.store.library import Library
    from tests import relay_link as link
    from tests.chaos import real_procs
    from tests.test_relay_sync import PASSWORD, start_relay, stop_relay

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"tmpfs cannot be mounted here: {done.stderr.decode().strip()}")
    relay = start_relay(tmp_path / "relay-data")
    try:
        home = Library.create(tmp_path / "home", "home")
        ref_id = home.add_reference({"title": "With a large file"})
        link.login(home, relay.url, "full@example.org", PASSWORD, signup=True, ask=lambda question: True)
        work = Library.create(disk / "work", "work")
        link.login(work, relay.url, "full@example.org", PASSWORD, ask=lambda question: True)
        source = tmp_path / "large.pdf"
        source.write_bytes(os.urandom(3_000_000))
        home.attach(ref_id, source, "large.pdf")
        link.sync_with_relay(home)
        real_procs.fill(disk)
        filler = disk / "filler"
        os.truncate(filler, filler.stat().st_size - 1_000_000)  # room for the change sets, not the file
        with pytest.raises(DiskFull):
            link.sync_with_relay(work)
        real_procs.free(disk)
        link.sync_with_relay(work)
        [item] = work.list_attachments(ref_id)
        assert item["present"], item
        home.close()
        work.close()
    finally:
        stop_relay(relay)
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_chaos_an_annotation_is_never_lost_to_a_concurrent_version(tmp_path: Path) -> None:
    """Simulation seed 529, run on fd12500^ (before the annotation fix), minimized from 60 steps:
    device 1 annotates its copy of paper.pdf in place, device 3 attaches a new version meanwhile;
    device 1 applied 3's version before its daemon's look recorded the annotation, which was then
    recorded as having seen 3's version, and 3's was gone. Passes from fd12500 on."""
    run_steps(
        [
            s.AddRef(dev=3),
            s.Send(src=3, dst=1),
            s.Deliver(index=6),
            s.Attach(dev=1, ref=0, content=b"v2v2v2"),
            s.Annotate(dev=1, ref=0, content=b"note v4"),
            s.Attach(dev=3, ref=0, content=b"v10"),
            s.Send(src=3, dst=1),
            s.Deliver(index=1),
        ],
        tmp_path,
        devices=4,
        seed=529,
    )


def test_chaos_the_relay_hands_a_removed_device_nothing_new(tmp_path: Path) -> None:
    """Simulation seed 62, run on 8638958^ (before the relay cut removed devices off), minimized
    from 60 steps: device 3 removes device 1, which had logged in to the account, then edits; the
    relay went on handing device 1 (its token, the library key it held) the edit made after its
    removal. Passes from 8638958 on."""
    run_steps(
        [
            s.AddRef(dev=3),
            s.RelaySync(dev=1),
            s.RemoveDevice(dev=3, target=1),
            s.Edit(dev=3, ref=0, field="title", value="v16"),
            s.RelaySync(dev=0),
        ],
        tmp_path,
        devices=4,
        seed=62,
    )


def test_chaos_a_register_that_moves_on_during_a_look_is_no_crash(tmp_path: Path) -> None:
    """Real processes, seed 341571918 (30 minutes): a daemon died with a KeyError in
    transfers.needs. It had read which attachment versions it lacked, then another process
    (`p2psync attach`, or a sync) replaced the version before it read that version's manifest.
    The look now skips a version the register no longer holds, and the next look sees the new
    one. Here the two reads are pulled apart by hand, in the order the processes took."""
    from p2psync.store import transfers
    from p2psync.store.sync import sync_libraries
    from tests.sync_support import founded, joined

    home = founded(tmp_path / "home", "A")
    work = joined(home, tmp_path / "work", "B")
    ref = home.add_reference({"title": "Paper"})
    source = tmp_path / "paper.pdf"
    source.write_bytes(b"first version")
    home.attach(ref, source)
    sync_libraries(home, work)
    looked = transfers._wanted_now(work)[(ref, "paper.pdf")]  # the look reads what it lacks...
    (old_sha,) = looked.shas
    source.write_bytes(b"second version, attached meanwhile")
    home.attach(ref, source)
    sync_libraries(home, work)  # ...and the register moves on before it reads the manifest
    assert looked.manifest(work, old_sha) is None
    (need,) = transfers.needs(work)
    assert need.sha256 != old_sha
    home.close()
    work.close()
