"""LAN sync benchmark over loopback, with real daemon processes (DESIGN.md section 8). Prints
figures; asserts nothing.

    python bench/bench_lan.py [--refs 100000] [--runs 20] [--small 1000]

(a) First sync of N references to an empty peer: the founder's library (built here with the
    reference generator of bench_library.py / bench_sync.py, fixed seed, already sealed) is served
    by `p2psync daemon` in its own process; the empty peer syncs in this process with
    `Node(path).sync(...)`. Reported: the sync itself (target <= 10 s for 100,000), then what
    `p2psync sync` does next to make the library searchable (bring in the index built beside the
    receive, store/search_build.py, and index what is left), and the two together: the time
    from the sync's start until a search answers as after a full index (target <= 5 s). Also the
    receiving process's peak RSS and the index-building child's (target <= 200 MB each).
(b) A no-change sync of that library: the same Node, kept open, syncs again with nothing new;
    median and p90 of --runs. Target: <= 100 ms. For information, also the wall time of a fresh
    `p2psync sync --address ...` process (interpreter start and indexing check included).
(c) Edit-to-visible: two daemons pointed at each other (a library of --small references, joined
    in process beforehand); this process edits a reference's title in library A (Library.open +
    edit_reference) and polls B's database (read-only SQLite, every 10 ms) until the new title is
    there; median and max of --runs. Target: <= 1 s. mDNS is off everywhere (addresses given).
(d) `p2psync pair CODE` with the same N references, as a new device really starts: `p2psync pair`
    offers the founder's library (a process), `p2psync pair CODE --address ...` joins with a new,
    empty library (another process, timed from its start). Until paired = until the offering
    process ends (it ends when the joiner reports its first sync done); until searchable = until
    the joining process ends (it makes the library searchable before it exits). Target: <= 5 s.

Ends with one JSON line of every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, ClassVar

sys.path.insert(0, str(Path(__file__).parent))

import bench_library
from bench_sync import record  # the generator bench_sync.py uses (defined in bench_library.py)

from p2psync.errors import P2PSyncError
from p2psync.net.client import sync_with_peer
from p2psync.node import Address, Node
from p2psync.store import peers as peer_store
from p2psync.store import search_build
from p2psync.store.library import DB_FILE, Library
from p2psync.store.sync import changesets_since, seal, sync_libraries

P2PSYNC = [sys.executable, "-m", "p2psync"]
ENV = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
START_LIMIT = 60.0  # seconds a daemon may take to print where it listens
VISIBLE_LIMIT = 10.0  # seconds an edit may take to show up on the other daemon (else: missed)
POLL = 0.010


class FastRandom(random.Random):
    """The same draws as random.Random, with the cumulative weights of the generator's vocabulary
    computed once: `choices(WORDS, WEIGHTS)` otherwise sums 20,000 weights per call (two minutes
    for 100,000 references). Random.choices turns weights into exactly these cumulative weights."""

    _cum: ClassVar[list[float]] = list(itertools.accumulate(bench_library.WEIGHTS))

    def choices(self, population: Any, weights: Any = None, *, cum_weights: Any = None, k: int = 1) -> list[Any]:
        if weights is bench_library.WEIGHTS and cum_weights is None:
            return super().choices(population, cum_weights=self._cum, k=k)
        return super().choices(population, weights, cum_weights=cum_weights, k=k)


NO_BACKUP = ("--backup-every", "0")  # no regular backup copying the library while it is measured


class Daemon:
    """`p2psync daemon` as a subprocess on 127.0.0.1 (stderr to a file, stopped with SIGTERM)."""

    def __init__(self, library: Path, log: Path, *extra: str) -> None:
        self.log_path = log
        self._log: IO[bytes] = open(log, "wb")  # noqa: SIM115 (closed in stop)
        command = [*P2PSYNC, "daemon", "--library", str(library), "--listen", "127.0.0.1:0", "--json", "--no-mdns"]
        self.proc = subprocess.Popen(
            [*command, *NO_BACKUP, *extra],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=ENV,
        )
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, START_LIMIT)
        if not line:
            self.stop()
            raise SystemExit(f"daemon did not start: {log.read_text(errors='replace')}")
        self.port = int(json.loads(line)["listening"].rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def _readline(stream: IO[bytes], limit: float) -> bytes:
    """One line from a pipe, giving up after `limit` seconds (the daemon prints one line first)."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(limit):
            return b""
    return stream.readline()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(condition: Callable[[], bool], limit: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]


def build_pair(root: str, refs: int) -> None:
    """Run in a child process (`--build-pair`): the founder's library of `refs` references, sealed,
    and an empty member library for the peer; prints what the parent needs as one JSON line.
    (A separate process, so the measuring process is as fresh as the peer's would be.)"""
    rng = FastRandom(42)
    a_path, b_path = Path(root) / "big-a", Path(root) / "big-b"
    start = time.perf_counter()
    a = Library.create(a_path, "home")
    a.add_references(record(rng, i) for i in range(refs))
    build = time.perf_counter() - start
    b = Library.create(b_path, "work", found=False, library_id=a.library_id)
    a.add_device(b.identity().public_bytes, "work")  # what pairing does; B stays empty
    b.close()
    start = time.perf_counter()
    seal(a)  # a daemon that has run since the import has sealed already (sealing is per sync)
    sealed = time.perf_counter() - start
    count, payload = 0, 0
    for wire in changesets_since(a, {}):
        count += 1
        payload += 4 + len(wire)  # a frame: length + the signed change set
    key = a.identity().public_bytes.hex()
    a.close()
    print(json.dumps({"build": build, "seal": sealed, "change_sets": count, "payload": payload, "key": key}))


def first_sync_and_no_change(root: Path, refs: int, runs: int) -> dict[str, Any]:
    """(a) and (b)."""
    a_path, b_path = root / "big-a", root / "big-b"
    built = json.loads(
        subprocess.run(
            [sys.executable, __file__, "--build-pair", str(root), "--refs", str(refs)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    count, payload, a_key = built["change_sets"], built["payload"], bytes.fromhex(built["key"])
    print(
        f"  built {refs:,} references in {built['build']:.1f} s, sealed in {built['seal']:.1f} s "
        f"({count:,} change sets, {payload / 1e6:.0f} MB of frames)",
        file=sys.stderr,
    )

    out: dict[str, Any] = {"change_sets": count, "payload": payload}
    daemon = Daemon(a_path, root / "big-a.log", "--no-auto")
    try:
        address = Address("127.0.0.1", daemon.port)

        async def run() -> None:
            node = Node(b_path)
            try:
                # The first sync after pairing: B holds no membership yet, so it pins A's key
                # (as `p2psync pair` does); later syncs check A against the membership received.
                start, cpu, server_cpu = time.perf_counter(), time.process_time(), cpu_seconds(daemon.proc.pid)
                try:
                    result = await sync_with_peer(node.worker, address.host, address.port, pinned_key=a_key)
                except P2PSyncError as exc:
                    raise SystemExit(f"first sync failed: {exc.message}") from None
                out["first"] = time.perf_counter() - start
                out["first_cpu"] = time.process_time() - cpu
                out["first_server_cpu"] = cpu_seconds(daemon.proc.pid) - server_cpu
                out["applied"] = result.received.applied
                out["build_rss"] = await node.worker.call(_build_child_peak_rss)
                start, cpu = time.perf_counter(), time.process_time()
                await node.worker.call(lambda library: sum(library.catch_up_search()))
                out["index"] = time.perf_counter() - start
                out["index_cpu"] = time.process_time() - cpu
                out["searchable"] = out["first"] + out["index"]
                out["receive_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                out["visible"] = await node.worker.call(lambda library: library.info()["references"])
                times = []
                for _ in range(runs):
                    start = time.perf_counter()
                    [again] = await node.sync([address])
                    times.append(time.perf_counter() - start)
                    if isinstance(again, Exception) or again.received.applied or again.sent.get("applied"):
                        raise SystemExit(f"the no-change sync moved something or failed: {again}")
                out["no_change"] = times
            finally:
                await node.close()

        asyncio.run(run())
        cli = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(
                [*P2PSYNC, "sync", "--address", str(address), "--library", str(b_path)],
                check=True,
                env=ENV,
                stdout=subprocess.DEVNULL,
            )
            cli.append(time.perf_counter() - start)
        out["cli"] = statistics.median(cli)
        start = time.perf_counter()
        subprocess.run([*P2PSYNC, "--version"], check=True, env=ENV, stdout=subprocess.DEVNULL)
        out["bare"] = time.perf_counter() - start
    finally:
        daemon.stop()
    return out


def _build_child_peak_rss(library: Library) -> float | None:
    """Peak RSS (MB) of the child building the search index beside the receive, if one runs."""
    build = search_build._builds.get(library.db)
    if build is None:
        return None
    try:
        status = Path(f"/proc/{build.process.pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")), None)


def pair_join(root: Path) -> dict[str, Any]:
    """(d): `p2psync pair` on the founder's library, `p2psync pair CODE` from a new empty one."""
    founder, joiner = root / "big-a", root / "big-c"
    offer = subprocess.Popen(
        [*P2PSYNC, "pair", "--library", str(founder), "--listen", "127.0.0.1:0", "--no-mdns", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    assert offer.stdout is not None
    line = _readline(offer.stdout, START_LIMIT)
    if not line:
        offer.kill()
        offer.wait()
        raise SystemExit("`p2psync pair` did not print its code")
    shown = json.loads(line)
    start = time.perf_counter()
    join = subprocess.Popen(
        [*P2PSYNC, "pair", shown["code"], "--address", shown["listening"], "--library", str(joiner), "--no-mdns"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    out: dict[str, Any] = {}
    for name, proc in (("paired", offer), ("searchable", join)):
        _, status, usage = os.wait4(proc.pid, 0)
        out[name] = time.perf_counter() - start
        out[f"{name}_status"] = os.waitstatus_to_exitcode(status)
        out[f"{name}_cpu"] = usage.ru_utime + usage.ru_stime
        out[f"{name}_rss"] = usage.ru_maxrss / 1024
    offer.stdout.close()
    if out["paired_status"] or out["searchable_status"]:
        raise SystemExit(f"pairing failed: {out}")
    with Library.open(joiner) as library:
        out["visible"] = library.info()["references"]
        out["backlog"] = library.search_backlog()
    return out


def edit_to_visible(root: Path, refs: int, runs: int) -> list[float]:
    """(c): two daemons; an edit in A, timed until B's database shows it."""
    rng = FastRandom(7)
    a_path, b_path = root / "small-a", root / "small-b"
    a = Library.create(a_path, "home")
    ids = a.add_references(record(rng, i) for i in range(refs))
    b = Library.create(b_path, "work", found=False, library_id=a.library_id)
    a.add_device(b.identity().public_bytes, "work")
    sync_libraries(a, b)  # joined and synced once, as after pairing
    device_b = b.device_id
    b.close()
    a.close()

    daemon_a = Daemon(a_path, root / "small-a.log")
    daemon_b = None
    try:
        daemon_b = Daemon(b_path, root / "small-b.log", "--address", f"127.0.0.1:{daemon_a.port}")

        def a_knows_b() -> bool:
            with Library.open(a_path) as library:
                return device_b in peer_store.remembered_addresses(library)

        if not wait_until(a_knows_b, 30):
            raise SystemExit("daemon A never learned where B listens")
        b_db = sqlite3.connect(f"file:{b_path / DB_FILE}?mode=ro", uri=True, isolation_level=None)
        edit_rng = random.Random(3)
        latencies: list[float] = []
        with Library.open(a_path) as library:
            for i in range(runs):
                time.sleep(edit_rng.uniform(0.3, 0.6))  # let the last sync settle; vary the phase
                ref = edit_rng.choice(ids)
                title = f"Edited on home, run {i} {edit_rng.getrandbits(32):08x}"
                library.edit_reference(ref, {"title": title})
                t0 = time.perf_counter()
                deadline = t0 + VISIBLE_LIMIT
                seen = None
                while time.perf_counter() < deadline:
                    row = b_db.execute("SELECT title FROM refs WHERE id = ?", [ref]).fetchone()
                    if row and row[0] == title:
                        seen = time.perf_counter() - t0
                        break
                    time.sleep(POLL)
                latencies.append(seen if seen is not None else float("inf"))
        b_db.close()
    finally:
        if daemon_b is not None:
            daemon_b.stop()
        daemon_a.stop()
    return latencies


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--refs", type=int, default=100_000, help="library size for (a) and (b)")
    parser.add_argument("--runs", type=int, default=20, help="repetitions for (b) and (c)")
    parser.add_argument("--small", type=int, default=1_000, help="library size for (c)")
    parser.add_argument("--build-pair", metavar="DIR", help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args()
    if args.build_pair:
        build_pair(args.build_pair, args.refs)
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="p2psync-bench-lan-") as tmp:
        root = Path(tmp)
        big = first_sync_and_no_change(root, args.refs, args.runs)
        paired = pair_join(root)
        latencies = edit_to_visible(root, args.small, args.runs)
    nc = big["no_change"]
    first = big["first"]
    finite = [x for x in latencies if x != float("inf")]
    edit_median = statistics.median(latencies)
    build_rss = "none" if big["build_rss"] is None else f"{big['build_rss']:7.0f} MB"
    rows = [
        ("(a) first sync, empty peer", f"{first:7.2f} s", "<= 10 s", verdict(first, 10)),
        ("    then making it searchable", f"{big['index']:7.2f} s", "", ""),
        (
            "    searchable from the sync's start",
            f"{big['searchable']:7.2f} s",
            "<= 5 s",
            verdict(big["searchable"], 5),
        ),
        (
            "    peak RSS, receiving process",
            f"{big['receive_rss']:7.0f} MB",
            "<= 200 MB",
            verdict(big["receive_rss"], 200),
        ),
        ("    peak RSS, index-building child", build_rss, "<= 200 MB", verdict(big["build_rss"] or 0, 200)),
        (
            "(b) no-change sync, median",
            f"{statistics.median(nc) * 1000:7.1f} ms",
            "<= 100 ms",
            verdict(statistics.median(nc), 0.1),
        ),
        ("    p90", f"{p90(nc) * 1000:7.1f} ms", "", ""),
        ("    `p2psync sync` process", f"{big['cli']:7.2f} s", "(info)", ""),
        ("(c) edit visible on peer, median", f"{edit_median * 1000:7.0f} ms", "<= 1 s", verdict(edit_median, 1)),
        ("    max", f"{max(latencies) * 1000:7.0f} ms", "", ""),
        ("(d) `pair CODE`: until paired", f"{paired['paired']:7.2f} s", "", ""),
        ("    until searchable", f"{paired['searchable']:7.2f} s", "<= 5 s", verdict(paired["searchable"], 5)),
        (
            "    peak RSS, joining process",
            f"{paired['searchable_rss']:7.0f} MB",
            "<= 200 MB",
            verdict(paired["searchable_rss"], 200),
        ),
    ]
    print(
        f"LAN sync over loopback: {args.refs:,} references for (a) and (b), {args.small:,} for (c); "
        f"{args.runs} runs for (b) and (c); mDNS off"
    )
    print(f"{'figure':<36}{'measured':>12}  {'target':<10} result")
    for name, measured, target, result in rows:
        print(f"{name:<36}{measured:>12}  {target:<10} {result}")
    print(
        f"(a) moved {big['applied']:,} change sets ({big['payload'] / 1e6:.0f} MB of framed change sets, "
        f"before TLS); {big['visible']:,} references visible after it"
    )
    print(
        f"(a) CPU during it: {big['first_cpu']:.2f} s in the receiving process, "
        f"{big['first_server_cpu']:.2f} s in the serving daemon"
    )
    print(f"(a) then CPU to make it searchable: {big['index_cpu']:.2f} s in the receiving process")
    print(f"(b) a bare `p2psync --version` process takes {big['bare']:.2f} s of that `p2psync sync` time")
    print(
        f"(d) pair vs sync, until searchable: {paired['searchable']:.2f} s against {big['searchable']:.2f} s "
        f"(ratio {paired['searchable'] / big['searchable']:.2f}; pair includes starting its process and "
        f"making the library); CPU {paired['searchable_cpu']:.2f} s joining, {paired['paired_cpu']:.2f} s "
        f"offering; {paired['visible']:,} references visible, {paired['backlog']} left to index"
    )
    if len(finite) < len(latencies):
        print(f"(c) {len(latencies) - len(finite)} edit(s) not visible within {VISIBLE_LIMIT:.0f} s")
    print(f"(whole bench: {time.perf_counter() - started:.0f} s)")
    figures = {
        "refs": args.refs,
        "first_sync_s": round(first, 3),
        "index_after_s": round(big["index"], 3),
        "index_after_cpu_s": round(big["index_cpu"], 3),
        "searchable_sync_s": round(big["searchable"], 3),
        "searchable_pair_s": round(paired["searchable"], 3),
        "paired_s": round(paired["paired"], 3),
        "pair_join_cpu_s": round(paired["searchable_cpu"], 3),
        "first_sync_cpu_s": round(big["first_cpu"], 3),
        "receive_rss_mb": round(big["receive_rss"], 1),
        "build_child_rss_mb": None if big["build_rss"] is None else round(big["build_rss"], 1),
        "pair_join_rss_mb": round(paired["searchable_rss"], 1),
        "no_change_median_ms": round(statistics.median(nc) * 1000, 2),
        "no_change_p90_ms": round(p90(nc) * 1000, 2),
        "edit_visible_median_ms": round(edit_median * 1000, 1),
        "targets": {"searchable_s": 5, "no_change_ms": 100, "rss_mb": 200, "first_sync_s": 10, "edit_visible_s": 1},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
