"""Delta debugging over a failing schedule's steps (ddmin), then the minimized case as a test.

A cut (a sub-list of the steps) is kept when running it still fails with the same kind of failure
(model.ChaosFailure.kind). Steps that refer to something that no longer exists are no-ops, so any
sub-list runs. Bounded in time: past the deadline, the smallest failing list so far is returned.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.chaos import schedule as s
from tests.chaos.model import ChaosFailure
from tests.chaos.world import run_steps

SHM = Path("/dev/shm")


def failure_of(steps: list[s.Step], devices: int, seed: int, member_rule: bool = True) -> ChaosFailure | None:
    tmp = Path(tempfile.mkdtemp(prefix="p2psync-chaos-", dir=SHM if SHM.is_dir() else None))
    try:
        run_steps(steps, tmp, devices, seed, member_rule)
    except ChaosFailure as failure:
        return failure
    except Exception as exc:  # a fault of the harness: shrunk like a failure of its own kind
        return ChaosFailure("harness", f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return None


def ddmin(steps: list[s.Step], fails: Callable[[list[s.Step]], bool], seconds: float = 120.0) -> list[s.Step]:
    """The classic ddmin: try dropping each of n chunks (n = 2, 4, ... up to single steps)."""
    deadline = time.monotonic() + seconds
    n = 2
    while len(steps) >= 2 and time.monotonic() < deadline:
        size = max(len(steps) // n, 1)
        chunks = [steps[i : i + size] for i in range(0, len(steps), size)]
        for i in range(len(chunks)):
            if time.monotonic() >= deadline:
                break
            cut = [x for j, chunk in enumerate(chunks) if j != i for x in chunk]
            if fails(cut):
                steps = cut
                n = max(n - 1, 2)
                break
        else:
            if size == 1:
                break
            n = min(n * 2, len(steps))
    return steps


def shrink(
    steps: list[s.Step], devices: int, seed: int, kind: str, seconds: float = 120.0, member_rule: bool = True
) -> list[s.Step]:
    def fails(cut: list[s.Step]) -> bool:
        failure = failure_of(cut, devices, seed, member_rule)
        return failure is not None and failure.kind == kind

    return ddmin(steps, fails, seconds)


def as_test(seed: int, devices: int, steps: list[s.Step], reason: str) -> str:
    """A pytest function that replays the minimized steps (paste into test_chaos_regressions.py)."""
    lines = [
        f"def test_chaos_seed_{seed}(tmp_path: Path) -> None:",
        f'    """Found by the simulation, seed {seed}: {reason}"""',
        "    run_steps(",
        "        [",
        *(f"            s.{step!r}," for step in steps),
        "        ],",
        "        tmp_path,",
        f"        devices={devices},",
        f"        seed={seed},",
        "    )",
    ]
    return "\n".join(lines)
