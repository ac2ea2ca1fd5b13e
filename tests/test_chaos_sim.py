"""The deterministic simulation (tests/chaos/, docs/testing.md): a fixed range of seeds, and tests
of the harness itself: a seed replays exactly, a crash leaves a library that reopens, and each
check can fail (planted bugs are found, and the shrinker cuts them down)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2psync.engine import registers
from p2psync.store import sync
from p2psync.store.library import attachments
from tests.chaos import schedule as s
from tests.chaos.model import ChaosFailure, Write
from tests.chaos.run import run_seed
from tests.chaos.shrink import ddmin, failure_of
from tests.chaos.world import World, run_steps
from tests.sync_support import digest

SEEDS = 100  # with STEPS: 25-50 s on the shared 2-core machine, by its load (docs/testing.md)
STEPS = 40
CHUNK = 20


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK))
def test_fixed_seeds_pass(first: int) -> None:
    failed = [run_seed(seed, steps=STEPS) for seed in range(first, first + CHUNK)]
    failed = [o for o in failed if o.kind is not None]
    assert not failed, [
        f"seed {o.seed}: {o.kind}: {o.reason} (python -m tests.chaos.run --seed {o.seed} --steps {STEPS})"
        for o in failed
    ]


def _trace(tmp: Path, seed: int) -> tuple[list[str], list[str]]:
    schedule = s.generate(seed, steps=STEPS)
    w = World(tmp, schedule.devices, seed)
    try:
        w.run(schedule.steps)
        w.quiesce()
        return w.trace, [digest(d.lib) for d in w.devices if d.lib is not None]
    finally:
        w.close()


def test_the_same_seed_replays_step_for_step(tmp_path: Path) -> None:
    first = _trace(tmp_path / "one", 5)
    second = _trace(tmp_path / "two", 5)
    assert first == second
    assert any("->" in line for line in first[0])  # it did deliver something


def test_a_crash_leaves_a_library_that_reopens(tmp_path: Path) -> None:
    steps: list[s.Step] = [
        s.AddRef(dev=0),
        s.Crash(dev=0, after=2),
        s.Edit(dev=0, ref=0, field="title", value="lost"),
        s.Restart(dev=0),
        s.Edit(dev=0, ref=0, field="title", value="kept"),
        s.Send(src=0, dst=1),
        s.Deliver(index=0),
    ]
    w = World(tmp_path, 3, 1)
    try:
        w.run(steps)
        assert "  device 0 crashed" in w.trace
        lib = w.devices[1].lib
        assert lib is not None and lib.get_reference(w.refs[0])["title"] == "kept"
        w.quiesce()
        assert w.check()
    finally:
        w.close()


# A removed device (2) that asks the device which removed it, after that device wrote more.
LEAK: list[s.Step] = [
    s.AddRef(dev=0),
    s.RemoveDevice(dev=0, target=2),
    s.Edit(dev=0, ref=0, field="title", value="secret"),
    s.Send(src=0, dst=2),
    s.Deliver(index=0),
]


def test_a_removed_device_fed_by_a_member_is_found(tmp_path: Path) -> None:
    run_steps(LEAK, tmp_path / "rule", devices=3, seed=2)  # the real rule: members refuse it
    with pytest.raises(ChaosFailure) as failure:
        run_steps(LEAK, tmp_path / "planted", devices=3, seed=2, member_rule=False)
    assert failure.value.kind == "leaked"


def test_the_shrinker_cuts_a_planted_failure_down(tmp_path: Path) -> None:
    noise = s.generate(3, devices=(3, 3), steps=30).steps
    noise = [x for x in noise if not isinstance(x, (s.RemoveDevice, s.PairNewDevice, s.Crash))]
    steps = noise[:15] + LEAK[:2] + noise[15:] + LEAK[2:]
    first = failure_of(steps, 3, 2, member_rule=False)
    assert first is not None and first.kind == "leaked"

    def fails(cut: list[s.Step]) -> bool:
        found = failure_of(cut, 3, 2, member_rule=False)
        return found is not None and found.kind == "leaked"

    small = ddmin(steps, fails, seconds=60)
    assert fails(small) and len(small) <= len(LEAK) < len(steps)


def test_a_write_that_vanished_is_found(tmp_path: Path) -> None:
    w = World(tmp_path, 3, 4)
    try:
        w.run([s.AddRef(dev=0), s.Edit(dev=1, ref=0, field="year", value="1999")])
        w.quiesce()
        assert w.check()
        # A write no one saw, which the library does not hold: the register check must say so.
        w.model.add(Write(("X" * 32, 1), w.refs[0], "title", "gone", frozenset()))
        with pytest.raises(ChaosFailure) as failure:
            w.check()
        assert failure.value.kind == "lost"
    finally:
        w.close()


class _SeenEverything:
    """registers, except that `dots` answers the dots of the entries last given to `changed`: an
    edit in place then replaces every version in the register, not only the one the file held
    (half of the bug fixed in fd12500: B applied A's annotated PDF, recorded its own edit as having
    seen A's, and A's was gone)."""

    def __init__(self) -> None:
        self.last: list[registers.Entry] = []

    def changed(self, entries: list[registers.Entry], value: object) -> bool:
        self.last = entries
        return registers.changed(entries, value)

    def dots(self, _entries: list[registers.Entry]) -> list[object]:
        return registers.dots(self.last)

    def __getattr__(self, name: str) -> object:
        return getattr(registers, name)


# Two devices annotate the same PDF, each in its own copy, between two syncs.
ANNOTATIONS: list[s.Step] = [
    s.AddRef(dev=0),
    s.Attach(dev=0, ref=0, content=b"%PDF"),
    s.Send(src=0, dst=1),
    s.Deliver(index=0),
    s.FetchFiles(dev=1, src=0),
    s.Annotate(dev=1, ref=0, content=b"note by 1"),
    s.Annotate(dev=0, ref=0, content=b"note by 0"),
    s.Send(src=0, dst=1),
    s.Deliver(index=0),
    s.Send(src=1, dst=0),
    s.Deliver(index=0),
]


def test_an_annotation_lost_to_another_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_steps(ANNOTATIONS, tmp_path / "fixed", devices=3, seed=6)  # both kept: a Sync Conflict
    monkeypatch.setattr(attachments, "registers", _SeenEverything())
    monkeypatch.setattr(sync, "ATTACHMENT_PUT", b"\x00")  # and receive no longer records edits first
    with pytest.raises(ChaosFailure) as failure:
        run_steps(ANNOTATIONS, tmp_path / "planted", devices=3, seed=6)
    assert failure.value.kind == "lost"


def test_model_a_removal_by_a_removed_device_is_no_cut_off(tmp_path: Path) -> None:
    """Seed 101415 of the first 2000-seed run (a model bug, not the product's): 0 and 2 remove each
    other; 2's removal of 0 is refused (2 was removed first), so 0's edit stands beside 1's."""
    steps: list[s.Step] = [
        s.AddRef(dev=0),
        s.Send(src=0, dst=1),
        s.Deliver(index=3),
        s.Edit(dev=0, ref=0, field="abstract", value="v3"),
        s.RemoveDevice(dev=2, target=0),
        s.Edit(dev=1, ref=0, field="abstract", value="v7"),
        s.RemoveDevice(dev=0, target=2),
    ]
    run_steps(steps, tmp_path, devices=3, seed=101415)


def test_model_an_attachment_concurrent_with_a_delete_stays_hidden(tmp_path: Path) -> None:
    """Seed 101755 of the first 2000-seed run (a model bug): an attachment written concurrently
    with emptying the trash is kept, hidden with the reference (protocol/merge.md §5), not lost."""
    steps: list[s.Step] = [
        s.AddRef(dev=1),
        s.Send(src=1, dst=4),
        s.Attach(dev=1, ref=0, content=b"v6"),
        s.Deliver(index=4),
        s.Trash(dev=4, ref=0),
        s.EmptyTrash(dev=4),
    ]
    run_steps(steps, tmp_path, devices=5, seed=101755)
