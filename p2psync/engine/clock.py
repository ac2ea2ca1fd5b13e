"""A hybrid logical clock in milliseconds.

Each log entry carries a timestamp that is never smaller than any timestamp its author had seen,
so "newest" is meaningful across machines whose wall clocks disagree, and ties are broken by
device id and sequence number, which makes the provisional value of a conflict the same
everywhere.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def tick(last: int, wall: int | None = None) -> int:
    """The next local timestamp after `last` (the largest timestamp seen so far)."""
    wall = now_ms() if wall is None else wall
    return max(wall, last + 1)
