"""Import and backup benchmarks (issue: formats and backups). Prints figures; asserts nothing.

    python bench/bench_import.py [--records 10000] [--runs 3]

Writes N realistic references (fixed seed) as a RIS file and times `p2psync import` of it into an
empty library (a real process; target: 10,000 records in under 10 s), then `p2psync backup` and
`p2psync restore` of the result. Each figure is the median of --runs runs on fresh libraries.
"""

from __future__ import annotations

import argparse
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


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "p2psync", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(42)
    records = [record(rng, i) for i in range(args.records)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ris = root / "library.ris"
        ris.write_text(formats.write(records, "ris"), encoding="utf-8")
        print(f"RIS file: {args.records:,} records, {ris.stat().st_size / 1e6:.1f} MB")
        imports, backups, restores = [], [], []
        for run in range(args.runs):
            lib = root / f"lib{run}"
            subprocess.run(
                [sys.executable, "-m", "p2psync", "init", "--library", str(lib)], check=True, stdout=subprocess.DEVNULL
            )
            imports.append(timed(["import", str(ris), "--library", str(lib)]))
            archive = root / f"backup{run}.zip"
            backups.append(timed(["backup", "--out", str(archive), "--library", str(lib)]))
            restores.append(timed(["restore", str(archive), "--library", str(root / f"restored{run}")]))
        median = statistics.median(imports)
        print(
            f"p2psync import ({args.records:,} RIS records):  {median:6.2f} s median of {args.runs} "
            f"({args.records / median:,.0f} records/s; target < 10 s for 10,000)"
        )
        print(f"p2psync backup:                         {statistics.median(backups):6.2f} s")
        print(f"p2psync restore:                        {statistics.median(restores):6.2f} s")


if __name__ == "__main__":
    main()
