"""Export benchmark (issue 22, target 4). Prints figures; asserts nothing.

    python bench/bench_export.py [--refs 10000] [--runs 3]

Builds a library of N realistic references (bench_library.record, fixed seed) with a group and
some attachments, then times `p2psync export` of it in every format (a real process; target:
under 2 s each for 10,000 references), with the process's CPU seconds (user+sys, os.wait4) and
peak RSS. Each figure is the median of --runs runs. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_library import record

from p2psync import formats
from p2psync.store.library import Library

TARGET_SECONDS = 2.0


def run_child(args: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user+sys) and peak RSS (KB) of one p2psync process, from os.wait4."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "p2psync", *args], stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"p2psync {' '.join(args)} failed ({child.returncode})")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def build(path: Path, refs: int) -> None:
    rng = random.Random(42)
    library = Library.create(path)
    ids = library.add_references([record(rng, i) for i in range(refs)])
    group = library.create_group("Bench")
    library.add_to_group(group, ids[: refs // 2])
    files = path.parent / "files"
    files.mkdir(exist_ok=True)
    for n, ref_id in enumerate(ids[: min(refs, 200)]):
        pdf = files / f"paper{n}.pdf"
        pdf.write_bytes(b"%PDF-1.4 bench " + str(n).encode())
        library.attach(ref_id, pdf)
    library.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--refs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        lib = Path(tmp) / "lib"
        build(lib, args.refs)
        print(f"library: {args.refs:,} references (200 with an attachment, half in a group)")
        for fmt in formats.FORMATS:
            out = Path(tmp) / f"out{formats.DEFAULT_EXTENSIONS[fmt]}"
            runs = [run_child(["export", str(out), "--format", fmt, "--library", str(lib)]) for _ in range(args.runs)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            rss = max(r[2] for r in runs) / 1024
            size = out.stat().st_size / 1e6
            met = "met" if wall < TARGET_SECONDS else "NOT met"
            print(
                f"export {args.refs:,} refs as {fmt:<12} {wall:6.2f} s wall, {cpu:6.2f} s CPU, peak RSS {rss:5.0f} MB, "
                f"{size:5.1f} MB file  (target < {TARGET_SECONDS:.0f} s: {met}; "
                f"ratio to target {wall / TARGET_SECONDS:.2f})"
            )
            results[fmt] = {"seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "peak_rss_mb": round(rss, 1)}
    print(json.dumps({"bench": "export", "refs": args.refs, "target_seconds": TARGET_SECONDS, "formats": results}))


if __name__ == "__main__":
    main()
