"""Library benchmarks on one machine (DESIGN.md section 8). Prints figures; asserts nothing.

    python bench/bench_library.py [--refs 100000] [--runs 5]

Measures, on a library of N realistic references (title, 3 authors, journal, DOI, a 120-word
abstract, keywords) in a temporary folder:
  - adding N references through the Python API (Library.add_references, 500 per transaction);
  - `p2psync ref list --json` over the whole library (a real process, output to /dev/null),
    with the process's peak RSS;
  - `p2psync ref search` for a rare and a common word (real processes), and the same searches
    through the API;
each as the median of --runs runs.
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

from p2psync.store.library import Library

COMMON = [
    "neural",
    "cortex",
    "synaptic",
    "plasticity",
    "memory",
    "learning",
    "protein",
    "receptor",
    "signal",
    "cell",
    "model",
    "network",
    "dynamics",
    "theory",
    "climate",
    "ocean",
    "carbon",
    "soil",
    "species",
    "evolution",
    "genome",
    "expression",
    "pathway",
    "quantum",
    "electron",
    "lattice",
    "spin",
    "graphene",
    "polymer",
    "catalyst",
    "reaction",
    "energy",
    "solar",
    "battery",
    "policy",
    "market",
    "health",
    "cohort",
    "trial",
    "patients",
    "risk",
    "survey",
    "education",
    "language",
    "grammar",
    "corpus",
    "algorithm",
    "data",
]
# A research vocabulary is long-tailed: 48 common words plus 20,000 rarer made-up terms, drawn
# with Zipf-like weights, so searches hit a realistic number of references.
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "xe", "zu", "pha", "gro", "sten", "dri"]
_rng = random.Random(7)
RARE = sorted({"".join(_rng.choice(_SYLLABLES) for _ in range(_rng.randint(3, 5))) for _ in range(20_000)})
WORDS = COMMON + RARE
WEIGHTS = [1.0 / (rank + 1) for rank in range(len(WORDS))]
FAMILIES = ["Müller", "Smith", "García", "Nguyễn", "Kowalski", "Østergaard", "Chen", "Okafor", "Rossi", "Dubois"]
GIVEN = ["Anna", "Jürgen", "María", "Li", "Olu", "Søren", "Aiko", "Pierre", "Zofia", "Ravi"]


def record(rng: random.Random, i: int) -> dict:
    return {
        "title": " ".join(rng.choices(WORDS, WEIGHTS, k=rng.randint(6, 14))).capitalize() + f" {i}",
        "authors": [{"family": rng.choice(FAMILIES), "given": rng.choice(GIVEN)} for _ in range(3)],
        "year": str(rng.randint(1950, 2026)),
        "journal": "Journal of " + rng.choice(WORDS).capitalize(),
        "volume": str(rng.randint(1, 300)),
        "pages": f"{rng.randint(1, 900)}-{rng.randint(901, 999)}",
        "doi": f"10.{rng.randint(1000, 9999)}/bench.{i}",
        "abstract": " ".join(rng.choices(WORDS, WEIGHTS, k=150)),
        "keywords": sorted(set(rng.choices(WORDS, WEIGHTS, k=4))),
    }


# Runs the CLI in a fresh interpreter and reports that process's own peak RSS: VmHWM of its own
# memory map (getrusage's ru_maxrss would also count this large parent, which Linux carries
# across fork and exec).
CLI_WITH_RSS = (
    "import sys\n"
    "from p2psync.cli import main\n"
    "try:\n    main()\n"
    "finally:\n"
    "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
    "    print(hwm, file=sys.stderr)\n"
)


def timed_process(args: list[str]) -> tuple[float, int]:
    """Wall time of a p2psync process and its peak RSS in KB."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CLI_WITH_RSS, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True
    )
    elapsed = time.perf_counter() - start
    return elapsed, int(done.stderr.decode().strip().splitlines()[-1])


def median_process(args: list[str], runs: int) -> tuple[float, int]:
    results = [timed_process(args) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


def median_call(func, runs: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--refs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(42)
    records = [record(rng, i) for i in range(args.refs)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lib"
        library = Library.create(path)
        start = time.perf_counter()
        library.add_references(records)
        add_seconds = time.perf_counter() - start
        del records
        db_mb = sum(f.stat().st_size for f in path.glob("library.sqlite3*")) / 1e6
        print(f"library: {args.refs:,} references, database {db_mb:.0f} MB")
        print(
            f"add {args.refs:,} references (Python API):  {add_seconds:6.2f} s  ({args.refs / add_seconds:,.0f} refs/s)"
        )

        lib_args = ["--library", str(path)]
        seconds, rss = median_process(["ref", "list", "--json", *lib_args], args.runs)
        print(
            f"p2psync ref list --json (all):          {seconds:6.2f} s  median of {args.runs}, "
            f"peak RSS {rss / 1024:.0f} MB"
        )
        seconds, _ = median_process(["ref", "list", "--limit", "50", *lib_args], args.runs)
        print(f"p2psync ref list --limit 50:             {seconds:6.2f} s  (process start included)")
        for word in (RARE[1234], "graphene lattice", "plasticity"):
            seconds, _ = median_process(["ref", "search", word, "--json", *lib_args], args.runs)
            count = sum(1 for _ in library.search(word))
            api = median_call(lambda w=word: sum(1 for _ in library.search(w, limit=50)), args.runs)
            print(
                f"p2psync ref search {word!r:<20} {seconds:6.2f} s  ({count:,} hits, all printed); "
                f"API top 50: {api * 1000:.1f} ms"
            )
        seconds, _ = median_process(["--version"], args.runs)
        print(f"(a bare `p2psync --version` process:     {seconds:6.2f} s)")
        library.close()


if __name__ == "__main__":
    main()
