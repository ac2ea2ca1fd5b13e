"""Run the deterministic simulation over many seeds; print each failure with its replay command and
its minimized test. Exit 1 on any failure.

    python -m tests.chaos.run --seeds 2000 --random
    python -m tests.chaos.run --seed 1234            # replay one seed (prints its trace on failure)
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.chaos import schedule as s
from tests.chaos.model import ChaosFailure
from tests.chaos.shrink import SHM, as_test, shrink
from tests.chaos.world import run_steps


@dataclass
class Outcome:
    seed: int
    devices: int
    steps: int
    kind: str | None = None  # None: passed
    reason: str = ""
    checked_all: bool = True  # False: members could differ by design (protocol limitation 2)


def run_seed(seed: int, devices: tuple[int, int] = (3, 6), steps: int = 60) -> Outcome:
    schedule = s.generate(seed, devices, steps)
    outcome = Outcome(seed, schedule.devices, len(schedule.steps))
    tmp = Path(tempfile.mkdtemp(prefix="p2psync-chaos-", dir=SHM if SHM.is_dir() else None))
    try:
        world = run_steps(schedule.steps, tmp, schedule.devices, seed)
        outcome.checked_all = world.checked_all
    except ChaosFailure as failure:
        outcome.kind, outcome.reason = failure.kind, failure.reason
    except Exception as exc:  # a fault of the harness itself: reported like a failure, the run goes on
        outcome.kind, outcome.reason = "harness", f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return outcome


def _range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="the first seed (seeds start..start+N-1)")
    parser.add_argument("--random", action="store_true", help="start from a random seed")
    parser.add_argument("--seed", type=int, help="run this one seed")
    parser.add_argument("--devices", type=_range, default=(3, 6), help="devices at the start, e.g. 3-6")
    parser.add_argument("--steps", type=int, default=60, help="steps per seed")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long")
    parser.add_argument("--shrink", action=argparse.BooleanOptionalAction, default=True, help="minimize failures")
    parser.add_argument("--shrink-seconds", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="one JSON object per failure, and a summary")
    args = parser.parse_args(argv)
    if args.devices[0] < 2 or args.devices[1] < args.devices[0]:
        parser.error("--devices takes a range like 3-6 (at least 2 devices).")
    if args.seed is not None:
        seeds = range(args.seed, args.seed + 1)
    else:
        start = random.SystemRandom().randrange(2**31) if args.random else args.start
        seeds = range(start, start + args.seeds)
    began = time.monotonic()
    failures: list[Outcome] = []
    ran = unchecked = 0
    for seed in seeds:
        if args.minutes is not None and time.monotonic() - began > args.minutes * 60:
            break
        outcome = run_seed(seed, args.devices, args.steps)
        ran += 1
        unchecked += not outcome.checked_all
        if outcome.kind is not None:
            failures.append(outcome)
            _report(outcome, args)
        if not args.json and (ran % 50 == 0 or ran == len(seeds)):
            rate = ran / max(time.monotonic() - began, 1e-9)
            print(f"{ran} seeds ({seeds.start}..{seed}), {rate:.1f} seeds/s, {len(failures)} failed", flush=True)
    summary = {
        "seeds": ran,
        "first": seeds.start,
        "seconds": round(time.monotonic() - began, 1),
        "failures": len(failures),
        "revocation_diverged": unchecked,
    }
    if args.json:
        print(json.dumps({"summary": summary}))
    else:
        print(
            f"{ran} seeds in {summary['seconds']} s, {len(failures)} failed; {unchecked} ended with members "
            "differing by a concurrent removal (protocol/changesets.md, limitation 2: sameness not checked)"
        )
    return 1 if failures else 0


def _report(outcome: Outcome, args: argparse.Namespace) -> None:
    steps = s.generate(outcome.seed, args.devices, args.steps).steps
    devices_flag = f" --devices {args.devices[0]}-{args.devices[1]}" if args.devices != (3, 6) else ""
    steps_flag = f" --steps {args.steps}" if args.steps != 60 else ""
    replay = f"python -m tests.chaos.run --seed {outcome.seed}{devices_flag}{steps_flag}"
    test = None
    if args.shrink and outcome.kind is not None:
        small = shrink(steps, outcome.devices, outcome.seed, outcome.kind, args.shrink_seconds)
        test = as_test(outcome.seed, outcome.devices, small, outcome.reason)
    if args.json:
        print(json.dumps({**asdict(outcome), "replay": replay, "test": test}), flush=True)
        return
    print(f"FAILED seed {outcome.seed}: {outcome.kind}: {outcome.reason}", flush=True)
    print(f"  replay: {replay}", flush=True)
    if test is not None:
        print("  minimized:\n" + test, flush=True)


if __name__ == "__main__":
    sys.exit(main())
