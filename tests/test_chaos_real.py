"""The real-process chaos harness (tests/chaos/real.py): one run of a minute with a fixed seed,
and its end checks shown to fail on a diverged library, a lost write and wrong bytes."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from p2psync.store.library import Library
from tests.chaos.real import report, run
from tests.chaos.real_checks import Ledger, check
from tests.netns import netns_available
from tests.sync_support import founded, joined, sync_all

SEED = 9  # its minute: 9 SIGKILLs (the relay too), relay restarts, cuts, rate limits, a full disk


def test_a_minute_of_real_process_chaos_ends_converged_and_whole(tmp_path: Path) -> None:
    reason = netns_available()
    if reason is not None:
        pytest.skip(reason)
    outcome = run(SEED, 60.0, tmp_path / "run")
    assert outcome.ok, report(outcome)
    assert outcome.counts["kill"] >= 3 and outcome.counts["disk_full"] >= 1, outcome.counts
    print(report(outcome))


def three_libraries(tmp_path: Path) -> tuple[list[Path], Ledger, str]:
    """Three synced libraries with one reference, its title written by the harness, and an
    attachment; the ledger that says so; the relay's (stand-in) database."""
    paths = [tmp_path / n for n in ("a", "b", "c")]
    a = founded(paths[0], "A")
    b = joined(a, paths[1], "B")
    c = joined(b, paths[2], "C")
    ref_id = a.add_reference({"title": "Kept"})
    source = tmp_path / "paper.pdf"
    source.write_bytes(b"%PDF-1.4 " + bytes(range(256)) * 40)
    a.attach(ref_id, source)
    sync_all([a, b, c])
    for library in (a, b, c):
        library.close()
    ledger = Ledger()
    ledger.ref_ids[0], ledger.added[0] = ref_id, True
    ledger.record(1, 1, 0, "title", "Kept", True)
    (tmp_path / "relay").mkdir()
    sqlite3.connect(tmp_path / "relay" / "relay.sqlite3").execute("CREATE TABLE t (x)").connection.close()
    return paths, ledger, ref_id


def test_the_end_checks_pass_on_agreeing_libraries_and_fail_on_each_kind_of_damage(tmp_path: Path) -> None:
    paths, ledger, ref_id = three_libraries(tmp_path)
    verdict = check(paths, tmp_path / "relay", ledger)
    assert verdict.ok, verdict.problems

    # One device's title changed behind everyone's back: it diverged, and there the harness's
    # last write is neither the value nor a conflict version.
    with Library.open(paths[2]) as c:
        c.edit_reference(ref_id, {"title": "Planted"})
    # Wrong bytes under a record that says they are right (same size and mtime: no scan sees it).
    with Library.open(paths[0]) as a:
        [item] = a.list_attachments(ref_id, scan=False)
    file = Path(item["path"])
    stat = file.stat()
    file.write_bytes(b"X" * stat.st_size)
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # A reference the harness added, and was told was added, that no device has.
    ledger.ref_ids[1], ledger.added[1] = "nosuchreference0", True

    problems = "\n".join(check(paths, tmp_path / "relay", ledger).problems)
    assert "did not converge" in problems, problems
    assert "wrote title='Kept' on device 1" in problems and "shows 'Planted'" in problems, problems
    assert f"{ref_id}/paper.pdf holds" in problems, problems
    assert "ref #1 (nosuchreference0), added and acknowledged, is gone" in problems, problems


def test_a_conflict_version_counts_and_a_later_write_anywhere_excuses_an_earlier_one(tmp_path: Path) -> None:
    paths, ledger, ref_id = three_libraries(tmp_path)
    with Library.open(paths[1]) as b, Library.open(paths[2]) as c:
        b.edit_reference(ref_id, {"title": "From B"})  # concurrent: neither has seen the other's
        c.edit_reference(ref_id, {"title": "From C"})
        with Library.open(paths[0]) as a:
            sync_all([a, b, c])
        assert "title" in b.get_reference(ref_id)["conflicts"]
    ledger.record(2, 2, 0, "title", "From B", True)
    ledger.record(3, 3, 0, "title", "From C", True)  # the last write: the value or a version
    assert check(paths, tmp_path / "relay", ledger).ok
    ledger.record(4, 1, 0, "title", "Never written", True)
    problems = check(paths, tmp_path / "relay", ledger).problems
    assert len(problems) == 3 and all("'Never written'" in p for p in problems), problems
    ledger.record(5, 2, 0, "title", "Failed", False)  # a failed command may have written: excuses
    assert check(paths, tmp_path / "relay", ledger).ok  # the earlier ones, and is not checked
