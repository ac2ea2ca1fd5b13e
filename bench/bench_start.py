"""Start-up time of local commands (issue 19 point 6). Prints figures; asserts nothing.

    python bench/bench_start.py [--refs 10000] [--runs 10] [--hyperfine]

Builds a library of --refs realistic references (bench_library.record) in a temporary folder,
then runs each command as a real process --runs times after one warm-up run, hyperfine-style,
and prints the median and the fastest run of each next to a bare `python -c pass`, which is the
floor no command can go under. With --hyperfine (and hyperfine on PATH) the same commands are
handed to hyperfine instead. The processes import the p2psync of this checkout (the folder
above bench/), and may write their bytecode caches (__pycache__) as an installed p2psync has
them: PYTHONDONTWRITEBYTECODE would make every run compile every module again.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_library, beside us
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's p2psync
from bench_library import record

from p2psync.store.library import Library

HERE = Path(__file__).resolve().parent

# The console script `p2psync` is exactly this: import the CLI and call main().
CLI = "from p2psync.cli import main; main()"
TARGET_MS = 150
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_times(argv: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall seconds, and CPU seconds (user + system), of `runs` runs of argv after one warm-up
    run, output to /dev/null. CPU time says what the process itself costs when other work
    shares the machine and stretches the wall time."""
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": HERE.parent, "env": ENV}
    subprocess.run(argv, check=True, **quiet)
    times, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, check=True, **quiet)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return times, cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--refs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--hyperfine", action="store_true", help="hand the commands to hyperfine")
    args = parser.parse_args()
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lib"
        with Library.create(path) as library:
            ids = library.add_references(record(rng, i) for i in range(args.refs))
        one = ids[len(ids) // 2]
        env_lib = ["--library", str(path)]
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "p2psync --version": [sys.executable, "-c", CLI, "--version"],
            "p2psync ref list --limit 20": [sys.executable, "-c", CLI, "ref", "list", "--limit", "20", *env_lib],
            "p2psync ref show ID": [sys.executable, "-c", CLI, "ref", "show", one, *env_lib],
            "p2psync info": [sys.executable, "-c", CLI, "info", *env_lib],
            "p2psync status": [sys.executable, "-c", CLI, "status", *env_lib],
        }
        print(f"library: {args.refs:,} references; {args.runs} runs each after a warm-up; target {TARGET_MS} ms")
        if args.hyperfine and shutil.which("hyperfine"):
            quoted = [" ".join(f"'{a}'" for a in argv) for argv in commands.values()]
            hyperfine = ["hyperfine", "-N", "--warmup", "1", "--runs", str(args.runs), *quoted]
            subprocess.run(hyperfine, check=True, cwd=HERE.parent, env=ENV)
            return
        floor = 0.0
        for name, argv in commands.items():
            times, cpus = run_times(argv, args.runs)
            median, fastest = statistics.median(times), min(times)
            floor = floor or median
            mark = "" if name.startswith("python") else ("  ok" if median * 1000 < TARGET_MS else "  OVER")
            print(
                f"{name:<30} median {median * 1000:5.0f} ms  min {fastest * 1000:5.0f} ms  "
                f"(+{(median - floor) * 1000:4.0f} over python)  cpu {statistics.median(cpus) * 1000:4.0f} ms{mark}"
            )
        print(f"({os.cpu_count()} cores; {sys.executable})")


if __name__ == "__main__":
    main()
