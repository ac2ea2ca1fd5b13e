"""Import and backup benchmarks (issues: formats and backups; issue 22, target 4). Prints figures;
asserts nothing.

    python bench/bench_import.py [--records 10000] [--runs 3] [--big-mb 200] [--short 1000000]
                                 [--skip-big] [--dir /dev/shm/...]

1. N realistic references (fixed seed) as a RIS file: `p2psync import` into an empty library (a real
   process; target: 10,000 records in under 10 s), then `p2psync backup` and `p2psync restore` of
   the result, each the median of --runs runs on fresh libraries.
2. A RIS file of about --big-mb MB (about 800-byte records: title, three authors, journal, pages,
   DOI, a short abstract, keywords; one record in 500 repeats an earlier DOI, so duplicates are
   found and skipped): import with wall time, CPU seconds and peak RSS of the importing process
   (os.wait4). Target: at most 300 MB peak.
3. --short records of about 270 bytes each (TY, title, two authors, year, journal, volume, pages,
   ISSN, DOI): the same figures. Target: under 150 s and at most 300 MB peak for 1,000,000.

The big files are written record by record (this process stays small: a child's peak RSS counts
its parent's at the fork). The last line is one JSON object.
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

from bench_library import FAMILIES, GIVEN, WORDS, record

from p2psync import formats

PEAK_TARGET_MB = 300
SHORT_TARGET_SECONDS = 150.0


def run_child(args: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user+sys) and peak RSS (MB) of one p2psync process (os.wait4)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "p2psync", *args], stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"p2psync {' '.join(args)} failed ({child.returncode})")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def timed(args: list[str]) -> float:
    return run_child(args)[0]


def _doi(rng: random.Random, i: int) -> str:
    # One record in 500 repeats an earlier record's DOI: a duplicate the import skips.
    n = rng.randrange(i) if i and i % 500 == 0 else i
    return f"10.{1000 + (n % 9000)}/b.{n}"


def write_medium_ris(path: Path, megabytes: int) -> int:
    """About `megabytes` MB of ~800-byte RIS records; return how many."""
    rng = random.Random(22)
    limit = megabytes * 1_000_000
    written = 0
    i = 0
    with path.open("w", encoding="utf-8") as out:
        while written < limit:
            authors = "".join(f"AU  - {rng.choice(FAMILIES)}, {rng.choice(GIVEN)}\n" for _ in range(3))
            keywords = "".join(f"KW  - {w}\n" for w in rng.sample(WORDS[:400], 4))
            text = (
                f"TY  - JOUR\nTI  - {' '.join(rng.choices(WORDS, k=10)).capitalize()} {i}\n{authors}"
                f"PY  - {rng.randint(1950, 2026)}\nT2  - Journal of {rng.choice(WORDS).capitalize()}\n"
                f"VL  - {rng.randint(1, 300)}\nSP  - {rng.randint(1, 900)}\nEP  - {rng.randint(901, 999)}\n"
                f"DO  - {_doi(rng, i)}\nAB  - {' '.join(rng.choices(WORDS, k=45))}\n{keywords}ER  - \n\n"
            )
            out.write(text)
            written += len(text.encode("utf-8"))
            i += 1
    return i


def write_short_ris(path: Path, count: int) -> None:
    """`count` short RIS records (about 270 bytes each)."""
    rng = random.Random(23)
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            out.write(
                f"TY  - JOUR\nTI  - {' '.join(rng.choices(WORDS[:2000], k=6)).capitalize()} {i}\n"
                f"AU  - {rng.choice(FAMILIES)}, {rng.choice(GIVEN)}\n"
                f"AU  - {rng.choice(FAMILIES)}, {rng.choice(GIVEN)}\n"
                f"PY  - {rng.randint(1950, 2026)}\nT2  - Journal of {rng.choice(WORDS[:300]).capitalize()}\n"
                f"VL  - {rng.randint(1, 300)}\nSP  - {rng.randint(1, 900)}\nEP  - {rng.randint(901, 999)}\n"
                f"SN  - {rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}\nDO  - {_doi(rng, i)}\nER  - \n\n"
            )


def import_figures(root: Path, ris: Path, label: str, runs: int) -> dict[str, float]:
    results = []
    for run in range(runs):
        lib = root / f"lib-{label}-{run}"
        subprocess.run(
            [sys.executable, "-m", "p2psync", "init", "--library", str(lib)], check=True, stdout=subprocess.DEVNULL
        )
        results.append(run_child(["import", str(ris), "--library", str(lib)]))
        subprocess.run(["rm", "-rf", str(lib)], check=True)
    return {
        "seconds": round(statistics.median(r[0] for r in results), 2),
        "cpu_seconds": round(statistics.median(r[1] for r in results), 2),
        "peak_rss_mb": round(max(r[2] for r in results), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--short", type=int, default=1_000_000)
    parser.add_argument("--big-runs", type=int, default=1)
    parser.add_argument("--skip-big", action="store_true", help="only the 10,000-record import and backup")
    parser.add_argument("--dir", help="where to write the files (default: a temporary folder)")
    args = parser.parse_args()
    out: dict[str, object] = {"bench": "import"}
    with tempfile.TemporaryDirectory(prefix="bench-import-", dir=args.dir) as tmp:
        root = Path(tmp)
        rng = random.Random(42)
        ris = root / "library.ris"
        ris.write_text(formats.write([record(rng, i) for i in range(args.records)], "ris"), encoding="utf-8")
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
        out["import_10k_seconds"] = round(median, 2)
        if not args.skip_big:
            big = root / "big.ris"
            count = write_medium_ris(big, args.big_mb)
            size = big.stat().st_size / 1e6
            figures = import_figures(root, big, "big", args.big_runs)
            big.unlink()
            met = "met" if figures["peak_rss_mb"] <= PEAK_TARGET_MB else "NOT met"
            print(
                f"p2psync import {size:.0f} MB RIS ({count:,} records): {figures['seconds']:7.1f} s wall, "
                f"{figures['cpu_seconds']:7.1f} s CPU, peak RSS {figures['peak_rss_mb']:.0f} MB "
                f"(target <= {PEAK_TARGET_MB} MB: {met}; ratio {figures['peak_rss_mb'] / PEAK_TARGET_MB:.2f})"
            )
            out["big"] = {"megabytes": round(size), "records": count, **figures}
            short = root / "short.ris"
            write_short_ris(short, args.short)
            size = short.stat().st_size / 1e6
            figures = import_figures(root, short, "short", args.big_runs)
            short.unlink()
            met = (
                "met"
                if figures["seconds"] < SHORT_TARGET_SECONDS and figures["peak_rss_mb"] <= PEAK_TARGET_MB
                else "NOT met"
            )
            print(
                f"p2psync import {size:.0f} MB RIS ({args.short:,} short records): {figures['seconds']:7.1f} s wall, "
                f"{figures['cpu_seconds']:7.1f} s CPU, peak RSS {figures['peak_rss_mb']:.0f} MB "
                f"(target < {SHORT_TARGET_SECONDS:.0f} s and <= {PEAK_TARGET_MB} MB: {met}; "
                f"ratio {figures['seconds'] / SHORT_TARGET_SECONDS:.2f} "
                f"and {figures['peak_rss_mb'] / PEAK_TARGET_MB:.2f})"
            )
            out["short"] = {"megabytes": round(size), "records": args.short, **figures}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
