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
