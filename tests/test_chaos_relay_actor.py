"""The simulation's relay actor (tests/chaos/relay_actor.py): a real relay in this process, the
real client. Three libraries of one library (joined on a LAN first) sign up / log in, edit and
converge through it; a removed device, turned attacker, reads nothing written after its removal;
a restart keeps everything; an account reset and a login again work."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psync.engine import clock
from p2psync.errors import DeviceRemoved
from p2psync.store.library import Library
from tests.chaos.relay_actor import RelayWorld
from tests.sync_support import digest, founded, joined

BEFORE = "Written before the removal by Quillfeather"
AFTER = "Written after the removal by Marchbanks-Oyelaran"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[RelayWorld]:
    relay = RelayWorld(tmp_path)
    yield relay
    relay.close()


def three(world: RelayWorld, tmp_path: Path) -> tuple[Library, Library, Library]:
    a = founded(tmp_path / "a")
    b, c = joined(a, tmp_path / "b", "B"), joined(a, tmp_path / "c", "C")
    a.add_reference({"title": "On A", "year": "2021"})
    world.signup(a)
    world.login(b)
    world.login(c)
    return a, b, c


def rounds(world: RelayWorld, libraries: list[Library]) -> None:
    for _ in range(2):
        for library in libraries:
            world.sync(library)


def titles(library: Library) -> set[str]:
    return {r["title"] for r in library.list_references()}


def test_three_devices_converge_through_the_relay(world: RelayWorld, tmp_path: Path) -> None:
    a, b, c = three(world, tmp_path)
    b.add_reference({"title": "On B"})
    ref = c.add_reference({"title": "On C"})
    c.edit_reference(ref, {"title": "On C, edited"})
    rounds(world, [a, b, c])
    assert titles(a) == {"On A", "On B", "On C, edited"}
    assert digest(a) == digest(b) == digest(c)


def written_after(wires: list[bytes]) -> list[bytes]:
    return [w for w in wires if AFTER.encode() in w]


def test_a_removed_device_reads_nothing_written_after_its_removal(world: RelayWorld, tmp_path: Path) -> None:
    a, b, c = three(world, tmp_path)
    a.add_reference({"title": BEFORE})
    rounds(world, [a, b, c])
    # The attacker's pull works while it is a member: it reads what A wrote (the check below can fail).
    assert any(BEFORE.encode() in w for w in world.snoop(c))
    a.revoke_device(c.device_id)
    world.sync(a)  # carries the removal to the relay (and changes the library key)
    a.add_reference({"title": AFTER})
    b.add_reference({"title": AFTER + " (B)"})
    rounds(world, [a, b])
    assert AFTER in titles(b)
    assert written_after(world.snoop(c)) == []
    with pytest.raises(DeviceRemoved):
        world.sync(c)  # (the sync round sees it was removed only once it learns it: here from the relay)
    assert written_after(world.snoop(c)) == []
    assert AFTER not in titles(c)


def test_a_restart_keeps_everything(world: RelayWorld, tmp_path: Path) -> None:
    a, b, c = three(world, tmp_path)
    b.add_reference({"title": "Before the restart"})
    world.sync(b)
    world.restart()
    a.add_reference({"title": "After the restart"})
    rounds(world, [a, b, c])
    assert titles(c) == {"On A", "Before the restart", "After the restart"}
    assert digest(a) == digest(b) == digest(c)


def test_reset_and_relink(world: RelayWorld, tmp_path: Path) -> None:
    a, b, c = three(world, tmp_path)
    b.add_reference({"title": "Before the reset"})
    world.sync(b)
    world.reset_and_relink(c)
    c.add_reference({"title": "After the reset"})
    rounds(world, [a, b, c])
    assert titles(a) == {"On A", "Before the reset", "After the reset"}
    assert digest(a) == digest(b) == digest(c)


def test_devices_hours_apart_sync_as_any_other(
    world: RelayWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulation's skew (clock.now_ms, hours off) reaches the devices' log entries only: the
    device proof at signup/login reads time.time() and the relay its own clock (relay_actor.py)."""
    real = clock.now_ms
    skew = {"ms": 0}
    monkeypatch.setattr(clock, "now_ms", lambda: real() + skew["ms"])
    a = founded(tmp_path / "a")
    b, c = joined(a, tmp_path / "b", "B"), joined(a, tmp_path / "c", "C")
    for library, hours in ((a, 7), (b, -9), (c, 0)):
        skew["ms"] = hours * 3_600_000
        (world.signup if library is a else world.login)(library)
        library.add_reference({"title": f"{hours} hours off"})
        world.sync(library)
    for library, hours in ((a, 7), (b, -9), (c, 0)) * 2:
        skew["ms"] = hours * 3_600_000
        world.sync(library)
    assert titles(a) == {"7 hours off", "-9 hours off", "0 hours off"}
    assert digest(a) == digest(b) == digest(c)


def test_the_actor_is_fast(world: RelayWorld, tmp_path: Path) -> None:
    """The figures of the report: a relay start, a signup, a login and a sync round (generous
    bounds: the machine is shared)."""
    started = time.perf_counter()
    other = RelayWorld(tmp_path / "other")
    start = time.perf_counter() - started
    other.close()
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    timed = []
    for step in (lambda: world.signup(a), lambda: world.login(b), lambda: world.sync(a)):
        started = time.perf_counter()
        step()
        timed.append(time.perf_counter() - started)
    print(f"relay start {start * 1000:.0f} ms, signup/login/sync " + "/".join(f"{t * 1000:.0f}" for t in timed))
    assert start < 5 and max(timed) < 10
