"""A device renames itself (`p2psync device rename`, engine/ops.py device.name): the name is
checked in one sentence, travels to the other members with the next sync, and every library
shows the same latest name whatever the order in which the renames arrive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2psync.engine import ops
from p2psync.errors import InvalidValue
from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.support import cli, replay, snapshot
from tests.sync_support import founded, joined, sync_all


def names(library: Library) -> dict[str, str]:
    return {d.short_id: d.name for d in library.members.listing()}


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "cannot be empty"),
        ("   ", "cannot be empty"),
        ("x" * 101, "at most 100 characters; this one has 101"),
        ("lab\nlaptop", "control characters"),
        ("lab\x00", "control characters"),
        ("lab\x85laptop", "control characters"),
    ],
)
def test_a_bad_name_is_refused_in_one_sentence_and_logs_nothing(tmp_path: Path, bad: str, says: str) -> None:
    with founded(tmp_path / "a") as library:
        before = library.db.execute("SELECT count(*) FROM changelog").fetchone()[0]
        with pytest.raises(InvalidValue, match=says) as caught:
            library.members.rename(bad)
        assert caught.value.message.count(". ") == 0 and caught.value.message.endswith(".")
        assert library.db.execute("SELECT count(*) FROM changelog").fetchone()[0] == before


def test_rename_trims_spaces_and_the_same_name_again_logs_nothing(tmp_path: Path) -> None:
    with founded(tmp_path / "a") as library:
        renamed = library.members.rename("  Ana's laptop \t")
        assert renamed.name == "Ana's laptop" and renamed.this_device
        assert library.members.this_name() == "Ana's laptop"
        count = library.db.execute("SELECT count(*) FROM changelog").fetchone()[0]
        library.members.rename("Ana's laptop")
        assert library.db.execute("SELECT count(*) FROM changelog").fetchone()[0] == count


def test_an_operation_naming_another_device_or_a_bad_name_is_refused_by_the_engine() -> None:
    assert ops.check({"op": "device.name", "name": "lab"})
    for bad in (
        {"op": "device.name", "name": "lab", "device": "A" * 32},
        {"op": "device.name", "name": " lab"},
        {"op": "device.name", "name": "lab\t1"},
        {"op": "device.name", "name": ""},
        {"op": "device.name", "name": 3},
    ):
        with pytest.raises(InvalidValue):
            ops.check(bad)


def test_renames_reach_every_member_and_the_latest_wins_everywhere(tmp_path: Path) -> None:
    with founded(tmp_path / "a", "A") as a:
        b = joined(a, tmp_path / "b", "vm")
        c = joined(a, tmp_path / "c", "vm")
        try:
            sync_all([a, b, c])
            b_id, c_id = b.members.listing()[0].short_id, c.identity().device_id[:7]
            assert names(a)[b_id] == names(a)[c_id] == "vm"  # two machines, one host name
            b.members.rename("Office desktop")
            sync_libraries(b, c)  # c hears of it first, and passes it on to a
            b.members.rename("Ana's laptop")
            c.members.rename("Lab PC")
            sync_libraries(a, c)
            assert names(a)[b.device_id[:7]] == "Office desktop"
            sync_libraries(a, b)
            sync_all([a, b, c])
            for library in (a, b, c):
                shown = names(library)
                assert shown[b.device_id[:7]] == "Ana's laptop", library.path
                assert shown[c.device_id[:7]] == "Lab PC"
            assert snapshot(a)["device_names"] == snapshot(b)["device_names"] == snapshot(c)["device_names"]
            # The log replayed into a new library gives the same names (apply is the only writer).
            with replay(b, tmp_path / "replayed") as again:
                assert names(again) == names(b)
        finally:
            b.close()
            c.close()


def test_cli_device_rename_text_and_json(tmp_path: Path) -> None:
    path = str(tmp_path / "lib")
    assert cli("--library", path, "init", "--name", "L").returncode == 0
    done = cli("--library", path, "device", "rename", "Ana's laptop")
    assert done.returncode == 0, done.stderr
    assert 'is now named "Ana\'s laptop"' in done.stdout
    shown = json.loads(cli("--library", path, "device", "rename", "Lab PC", "--json").stdout)
    assert shown["name"] == "Lab PC" and shown["this_device"] is True
    assert "Lab PC" in cli("--library", path, "peers").stdout
    assert set(json.loads(cli("--library", path, "device", "--json").stdout)) == {"device_id", "short_id", "library_id"}
    bad = cli("--library", path, "device", "rename", "")
    assert bad.returncode != 0 and "A device name cannot be empty." in bad.stderr
    assert "Lab PC" in cli("--library", path, "peers").stdout


def test_a_rename_travels_over_the_network_to_a_running_daemon(tmp_path: Path) -> None:
    """Two real libraries on 127.0.0.1: `p2psync device rename` on one, `p2psync sync` to the
    other's daemon, and the daemon's library names it so (and the renamed side hears back the
    daemon's own rename)."""
    from tests.test_daemon_loopback import start_daemon, stop

    home, laptop = tmp_path / "home", tmp_path / "laptop"
    with founded(home, "Home") as a:
        joined(a, laptop, "vm").close()
    assert cli("--library", str(home), "device", "rename", "Office desktop").returncode == 0
    daemon, port = start_daemon(home)
    try:
        assert cli("--library", str(laptop), "device", "rename", "Ana's laptop").returncode == 0
        done = cli("--library", str(laptop), "sync", "--address", f"127.0.0.1:{port}", "--lan-only")
        assert done.returncode == 0, done.stderr
    finally:
        stop(daemon)
    shown = {d["name"] for d in json.loads(cli("--library", str(home), "peers", "--json").stdout)}
    assert shown == {"Office desktop", "Ana's laptop"}
    shown = {d["name"] for d in json.loads(cli("--library", str(laptop), "peers", "--json").stdout)}
    assert shown == {"Office desktop", "Ana's laptop"}
