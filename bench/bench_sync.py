"""Sync engine benchmark (DESIGN.md section 8). Prints figures; asserts nothing.

    python bench/bench_sync.py [--refs 100000] [--runs 3]

Builds a library of N realistic references (fixed seed), then measures, in one process, what the
first sync of that library to an empty store costs: sealing its log into change sets (build and
sign), and receiving them into an empty store (parse, verify, check and apply). Also prints the
size of the change log and of the change sets relative to the references' own data. The
import's writes are flushed (os.sync) before the clock starts, so that the disk is not still
busy with them while the sync is timed.
Target (issue 4): build + sign + verify + apply of 100,000 references under 5 s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_library import record

from p2psync.store.library import Library
from p2psync.store.sync import changesets_since, receive, seal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--refs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(42)
    records = [record(rng, i) for i in range(args.refs)]
    seal_times, receive_times, index_times = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for run in range(args.runs):
            a = Library.create(root / f"a{run}")
            a.add_references(records)
            os.sync()  # the import's writes reach the disk first: the timings are the sync's own
            start = time.perf_counter()
            seal(a)
            seal_times.append(time.perf_counter() - start)
            b = Library.create(root / f"b{run}", found=False, library_id=a.library_id)
            start = time.perf_counter()
            report = receive(b, changesets_since(a, {}))
            receive_times.append(time.perf_counter() - start)
            assert report.rejected == [] and b.info()["references"] == args.refs
            start = time.perf_counter()
            for _ in b.catch_up_search():  # what the first search (or the daemon, after a sync) does
                pass
            index_times.append(time.perf_counter() - start)
            if run == 0:
                data = a.db.execute("SELECT sum(length(data)) FROM refs").fetchone()[0]
                # On disk: the log plus the change-set headers. The sender wrote its references
                # itself, so its log holds every operation whole; the receiver keeps a received
                # new reference's fields once, in its row (store/logtext.py).
                log, received_log = (_log_bytes(lib) for lib in (a, b))
                files = tuple((lib.path / "library.sqlite3").stat().st_size for lib in (a, b))
                wire = (
                    sum(len(w) for w in changesets_since(a, {})),
                    a.db.execute("SELECT count(*) FROM changesets").fetchone()[0],
                )
            a.close()
            b.close()
    s, r = statistics.median(seal_times), statistics.median(receive_times)
    i = statistics.median(index_times)
    print(f"{args.refs:,} references; medians of {args.runs} runs")
    print(f"seal (build + sign {wire[1]} change sets):      {s:6.2f} s")
    print(f"receive (parse + verify + check + apply):  {r:6.2f} s")
    print(f"total first sync, in process:              {s + r:6.2f} s  (target < 5 s for 100,000)")
    print(f"then the search index, built afterwards:   {i:6.2f} s")
    print(f"reference data {data / 1e6:.0f} MB; change sets on the wire {wire[0] / 1e6:.0f} MB")
    print(
        f"change log on disk (log rows + stored change sets): sender {log / 1e6:.0f} MB (log/data "
        f"{log / data:.2f}), receiver {received_log / 1e6:.0f} MB (log/data {received_log / data:.2f})"
    )
    print(f"whole library file: sender {files[0] / 1e6:.0f} MB, receiver {files[1] / 1e6:.0f} MB")


def _log_bytes(library: Library) -> int:
    library.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return int(
        library.db.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name IN ('changelog', 'changesets') "
            "OR name LIKE 'sqlite_autoindex_change%'"
        ).fetchone()[0]
    )


if __name__ == "__main__":
    main()
