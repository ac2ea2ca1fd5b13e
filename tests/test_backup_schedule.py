"""Regular backups (issue 23, point 2): `daemon --backup-every 7d --keep 5`.

The timing rules (engine/backup_schedule.py) with made-up times; then a real daemon process that backs up
into its backup folder on the schedule, prunes only its own regular backups beyond --keep, resumes
the schedule from the backups on disk after a restart, and on a full disk logs one sentence and
leaves the library and the older backups as they were; `status` shows the last backup.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from p2psync.engine.backup_schedule import RETRY_SECONDS, BackupTimer, OnDisk, Schedule, beyond, describe, parse_every
from p2psync.errors import InvalidValue
from p2psync.store.backup import Reason, before_change
from p2psync.store.backup_folder import backups_on_disk, scheduled_backup
from p2psync.store.library import Library
from tests.test_daemon_loopback import start_daemon, stop

DAY = 86400.0
T0 = 1_800_000_000.0  # some moment (2027)
P2PSYNC = [sys.executable, "-m", "p2psync"]


# --- the rules, with an injected clock ---------------------------------------------------------


def test_durations_and_the_off_switch() -> None:
    assert parse_every("7d") == 7 * DAY and parse_every("12h") == 12 * 3600 and parse_every("2w") == 14 * DAY
    assert parse_every("90") == 90 and parse_every("0") is None and parse_every("0d") is None
    for bad in ("", "7 days", "-1d", "1y", "d"):
        with pytest.raises(InvalidValue):
            parse_every(bad)
    assert describe(7 * DAY) == "1 week" and describe(3 * DAY) == "3 days" and describe(3600) == "1 hour"


def test_the_next_backup_is_due_after_the_newest_on_disk_not_after_the_daemon_started() -> None:
    schedule = Schedule(7 * DAY, 5)
    assert BackupTimer(schedule, []).due(T0)  # none on disk: at once
    on_disk = [OnDisk("a.zip", T0 - 3 * DAY, True), OnDisk("m.zip", T0 - 1 * DAY, False)]
    # A daemon started at T0, or restarted two days later, waits for the same moment: the newest
    # backup (even one made before a merge) plus seven days.
    for started in (T0, T0 + 2 * DAY):
        timer = BackupTimer(schedule, on_disk)
        assert timer.due_at == T0 + 6 * DAY
        assert not timer.due(started) and not timer.due(T0 + 6 * DAY - 1) and timer.due(T0 + 6 * DAY)
    timer = BackupTimer(schedule, on_disk)
    timer.started()
    assert not timer.due(T0 + 10 * DAY)  # one at a time
    timer.landed(T0 + 10 * DAY)
    assert timer.due_at == T0 + 17 * DAY
    timer.started()
    timer.failed(T0 + 17 * DAY)  # a full disk: tried again after an hour, not a week
    assert timer.due_at == T0 + 17 * DAY + RETRY_SECONDS
    short = BackupTimer(Schedule(60, 1), [])
    short.started()
    short.failed(T0)
    assert short.due_at == T0 + 60  # (or sooner, when the schedule is shorter)


def test_pruning_keeps_the_newest_regular_backups_and_nothing_else() -> None:
    on_disk = [OnDisk(f"s{i}.zip", T0 + i, True) for i in range(7)] + [OnDisk("merge.zip", T0 - 10, False)]
    assert [b.path for b in beyond(on_disk, 5)] == ["s0.zip", "s1.zip"]
    assert beyond(on_disk, 7) == [] and [b.path for b in beyond(on_disk, 1)] == [f"s{i}.zip" for i in range(6)]
    with pytest.raises(InvalidValue):
        Schedule(DAY, 0)


# --- a real daemon -----------------------------------------------------------------------------


def library_at(path: Path, *titles: str) -> None:
    with Library.create(path, "Home") as library:
        for title in titles:
            library.add_reference({"title": title})


def regular(folder: Path) -> list[Path]:
    out = []
    for path in sorted(folder.glob("*-p2psync-*.zip")):
        if not zipfile.is_zipfile(path):
            continue  # the user's own file, named like a backup
        with zipfile.ZipFile(path) as archive:
            if json.loads(archive.read("p2psync-backup.json")).get("reason") == "scheduled":
                out.append(path)
    return out


def status_json(library: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    done = subprocess.run([*P2PSYNC, "status", "--library", str(library), "--json"], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_until(check, limit: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_the_daemon_backs_up_on_schedule_and_prunes_only_its_own(tmp_path: Path) -> None:
    library, folder = tmp_path / "lib", tmp_path / "backups"
    library_at(library, "Kept safe")
    folder.mkdir()
    # What pruning must never touch: another library's backup, a file of the user's, a backup made
    # before a merge.
    library_at(tmp_path / "other", "Someone else's")
    with Library.open(tmp_path / "other") as other:
        foreign = Path(scheduled_backup(other, folder, 1).manifest["path"])
    mine = folder / "2020-01-01-000000-p2psync-notes.zip"
    mine.write_bytes(b"not a backup, but named like one")
    with Library.open(library) as opened:
        merge = Path(before_change(opened, Reason.MERGE, folder)["path"])
    time.sleep(1.1)  # (names are to the second)
    assert status_json(library)["last_backup"]["path"] == str(merge)
    daemon, _port = start_daemon(library, "--backup-every", "2s", "--keep", "2", "--backup-dir", str(folder),
                                 "--interval", "1h")  # fmt: skip
    try:
        wait_until(lambda: len(regular(folder)) >= 2, 30)
        time.sleep(4.5)  # two more at least: the oldest go
    finally:
        code, err = stop(daemon)
    assert code == 0, err
    made = [line for line in err.splitlines() if "(the regular backup" in line]
    assert len(made) >= 3, err
    assert "Regular backups every 2 seconds into" in err and "keeping 2" in err
    assert any("removed 1 older regular backup(s)" in line for line in made), err
    kept = [path for path in regular(folder) if path != foreign]
    assert len(kept) == 2  # (the other library's one is not this library's: not counted, not pruned)
    assert foreign.exists() and mine.read_bytes() == b"not a backup, but named like one" and merge.exists()
    assert not list(folder.glob(".p2psync-*"))  # no half-written file left
    last = status_json(library)["last_backup"]
    assert last["path"] == str(kept[-1]) and last["reason"] == "scheduled" and last["at"].startswith("20")

    # A restart resumes the schedule from the backups on disk: nothing due for an hour.
    daemon, _port = start_daemon(library, "--backup-every", "1h", "--backup-dir", str(folder))
    try:
        time.sleep(2.0)
    finally:
        code, err = stop(daemon)
    assert code == 0 and "the next is due 20" in err and "(the regular backup" not in err, err
    assert [path for path in regular(folder) if path != foreign] == kept

    # --backup-every 0: no regular backups at all.
    shutil.rmtree(folder)
    daemon, _port = start_daemon(library, "--backup-every", "0", "--backup-dir", str(folder))
    try:
        time.sleep(1.5)
    finally:
        code, err = stop(daemon)
    assert code == 0 and "Regular backups" not in err and not folder.exists(), err


def test_by_default_a_daemon_without_a_recent_backup_makes_one_beside_the_library(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library_at(library, "First daemon")
    daemon, _port = start_daemon(library)
    try:
        wait_until(lambda: len(regular(tmp_path)) == 1, 30)
    finally:
        code, err = stop(daemon)
    assert code == 0 and "Regular backups every 1 week" in err and "keeping 5" in err, err


def test_a_bad_schedule_is_a_usage_error(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library_at(library)
    env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    for args, said in ((["--backup-every", "weekly"], "'weekly' is not a duration"), (["--keep", "0"], "--keep")):
        done = subprocess.run([*P2PSYNC, "daemon", "--library", str(library), *args], capture_output=True, text=True,
                              env=env, timeout=60)  # fmt: skip
        assert done.returncode == 2 and said in done.stderr, done.stderr


def test_a_regular_backup_on_a_full_disk_says_so_and_keeps_the_older_ones(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        library = tmp_path / "lib"
        library_at(library, "Big scan")
        with Library.open(library) as opened:
            older = Path(scheduled_backup(opened, folder, 5).manifest["path"])
            ref = opened.add_reference({"title": "Incompressible"})
            pdf = tmp_path / "scan.pdf"
            pdf.write_bytes(os.urandom(6_000_000))  # more than the disk holds
            opened.attach(ref, pdf)
        before = hashlib.sha256(older.read_bytes()).hexdigest()
        daemon, _port = start_daemon(library, "--backup-every", "1s", "--backup-dir", str(folder))
        try:
            time.sleep(3.5)
        finally:
            code, err = stop(daemon)
        assert code == 0, err
        failed = [line for line in err.splitlines() if "The regular backup was not made" in line]
        assert failed, err
        assert "Cannot write the backup to" in failed[0] and "free space" in failed[0], failed[0]
        assert failed[0].count(". ") == 0 and "Traceback" not in err  # one sentence
        assert [p.name for p in folder.iterdir()] == [older.name]  # nothing half-written, the older one kept
        assert hashlib.sha256(older.read_bytes()).hexdigest() == before
        with Library.open(library) as opened:
            assert sorted(r["title"] for r in opened.list_references()) == ["Big scan", "Incompressible"]
            assert backups_on_disk(folder, opened.library_id)[0].path == str(older)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_backup_stopped_half_way_leaves_nothing_and_removes_nothing(tmp_path: Path) -> None:
    """What a daemon's stop does to a backup under way (regular_backups.Running.finish): the next
    block read raises, and neither the half-written archive nor any pruning remains."""
    library, folder = tmp_path / "lib", tmp_path / "backups"
    library_at(library, "Stopped")
    with Library.open(library) as opened:
        ref = opened.add_reference({"title": "Scan"})
        pdf = tmp_path / "scan.pdf"
        pdf.write_bytes(os.urandom(3_000_000))
        opened.attach(ref, pdf)
        older = Path(scheduled_backup(opened, folder, 1).manifest["path"])
        time.sleep(1.1)  # (names are to the second)
        seen: list[int] = []

        def stop_after_the_database(block: int) -> None:
            seen.append(block)
            if len(seen) > 1:
                raise KeyboardInterrupt  # any exception will do; the daemon's is regular_backups.Stopped

        with pytest.raises(KeyboardInterrupt):
            scheduled_backup(opened, folder, 1, stop_after_the_database)
        assert [p.name for p in folder.iterdir()] == [older.name]
        assert backups_on_disk(folder, opened.library_id)[0].path == str(older)


def test_a_backup_in_the_same_second_as_another_never_replaces_it(tmp_path: Path) -> None:
    """Names are to the second: a merge's backup and a regular one, or two libraries of one name,
    made in the same second into one folder, must both stay."""
    from datetime import datetime, timedelta

    from p2psync.store.backup import backup_path, default_backup_name

    library_at(tmp_path / "lib", "Kept safe")
    folder = tmp_path / "backups"
    folder.mkdir()
    with Library.open(tmp_path / "lib") as library:
        now = datetime.now()
        taken = [folder / default_backup_name(library.name, now + timedelta(seconds=s)) for s in range(3)]
        for path in taken:
            path.write_bytes(b"an earlier backup")
        target = backup_path(library, folder=folder)
        assert target not in taken and not target.exists() and target.parent == folder
        assert target.name.endswith("-p2psync-Home-2.zip")
        first = Path(before_change(library, Reason.MERGE, folder)["path"])
        second = Path(before_change(library, Reason.MERGE, folder)["path"])
    assert first != second and first.exists() and second.exists()
    assert all(path.read_bytes() == b"an earlier backup" for path in taken)
