"""Scale benchmark (issue 22, target 5): a first sync and a no-change sync between two real
processes over loopback at 10,000, 100,000 and 1,000,000 references. Prints figures; asserts nothing.

    python bench/bench_scale.py [--sizes 10000,100000] [--runs 5] [--dir DIR] [--index]

For each size:
  - the founder's library (bench_library.py's generator, fixed seed, added through
    Library.add_references, sealed) and an empty member library are built once and kept under
    DIR/founder-s<seed>-n<size> (a 1,000,000-reference founder takes several minutes to build and
    about 6 GB; later runs reuse it). The daemon serves that copy directly: a sync writes only
    peer bookkeeping there (addresses, the last sync's status), never a reference or a change set.
  - `p2psync daemon` serves it on 127.0.0.1 in its own process; the empty member (a fresh copy)
    syncs from a second process of this script (what `p2psync sync` runs: Node, sync_with_peer,
    with the founder's key pinned as after pairing). Timed there: the first sync (wall and CPU);
    then --runs no-change syncs of the same open Node (median; target < 100 ms).
  - peak RSS of both processes (the daemon's VmHWM; the receiver's ru_maxrss, and that of the
    child that parses change sets for it, store/prepare.py), and the library files on both sides.
  - the cost per reference of each figure, and a flag on any whose cost per reference grows more
    than 1.5 times from one size to the next larger one (superlinear growth).
--index also times the search index built after the first sync (what `p2psync sync` does next).
Targets at 1,000,000 references: first sync < 60 s, no-change sync < 100 ms, peak RSS < 250 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's p2psync, not the venv's

from bench_lan import ENV, Daemon, FastRandom, _readline, cpu_seconds
from bench_library import record

# ... in the daemon and the receiving process too (the venv's may be another checkout's).
ROOT = str(Path(__file__).resolve().parents[1])
ENV["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])

SEED = 42
FIRST_LIMIT = 60.0  # s, at 1,000,000
NO_CHANGE_LIMIT = 0.100  # s
RSS_LIMIT = 250.0  # MB
GROWTH_FLAG = 1.5  # cost per reference growing more than this from one size to the next
TARGET_SIZE = 1_000_000
STEP_LIMIT = 1800.0  # s: any one stage (build, first sync) is given up after this


# --- the founder, built once per seed and size ------------------------------------------------------


def build(folder: Path, size: int, seed: int) -> None:
    """Run in a child process (`--build`): the founder's library and an empty member, in `folder`."""
    from p2psync.store.library import Library
    from p2psync.store.sync import seal

    rng = FastRandom(seed)
    start = time.perf_counter()
    a = Library.create(folder / "a", "home")
    a.add_references(record(rng, i) for i in range(size))  # a generator: never all in memory
    added = time.perf_counter() - start
    b = Library.create(folder / "b", "work", found=False, library_id=a.library_id)
    a.add_device(b.identity().public_bytes, "work")  # what pairing does; B stays empty
    b.close()
    start = time.perf_counter()
    seal(a)
    sealed = time.perf_counter() - start
    a.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    meta = {"size": size, "seed": seed, "key": a.identity().public_bytes.hex(), "add": added, "seal": sealed}
    a.close()
    (folder / "meta.json").write_text(json.dumps(meta))


def founder(cache: Path, size: int, seed: int) -> tuple[Path, dict[str, Any]]:
    folder = cache / f"founder-s{seed}-n{size}"
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        print(f"  building the founder's library of {size:,} references in {folder} ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, __file__, "--build", str(folder), "--size", str(size), "--seed", str(seed)],
            check=True,
            timeout=STEP_LIMIT,
        )
    return folder, json.loads(meta_path.read_text())


# --- the receiving process ----------------------------------------------------------------------------


def receiver(library: str, port: int, key: str, runs: int, index: bool) -> None:
    """Run in a child process (`--receive`): the first sync, then the no-change syncs; one JSON
    line after each part (the parent reads the daemon's CPU between them)."""
    from p2psync.net.client import sync_with_peer
    from p2psync.node import Address, Node

    address = Address("127.0.0.1", port)

    def say(values: dict[str, Any]) -> None:
        print(json.dumps(values), flush=True)

    async def run() -> None:
        node = Node(Path(library))
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            result = await sync_with_peer(node.worker, address.host, address.port, pinned_key=bytes.fromhex(key))
            first = time.perf_counter() - wall
            say(
                {
                    "first": first,
                    "first_cpu": time.process_time() - cpu,
                    "applied": result.received.applied,
                    "error": result.error,
                    "rss_after_first": _own_peak_mb(),
                }
            )
            if index:
                wall = time.perf_counter()
                await node.worker.call(lambda lib: sum(lib.catch_up_search()))
                say({"index": time.perf_counter() - wall})
            times, cpus = [], []
            for _ in range(runs):
                wall, cpu = time.perf_counter(), time.process_time()
                [again] = await node.sync([address])
                times.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
                if isinstance(again, Exception) or again.received.applied or again.sent_applied:
                    say({"no_change_error": str(again)})
                    return
            say({"no_change": times, "no_change_cpu": cpus})
        finally:
            await node.close()

    asyncio.run(run())
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the parsing child, once it has ended
    say(
        {
            "rss": _own_peak_mb(),
            "rss_child": children.ru_maxrss / 1024,  # (KB on Linux)
            "child_cpu": children.ru_utime + children.ru_stime,
        }
    )


def _own_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _file_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("library.sqlite3*")) / 1e6


def _expect(stream: IO[bytes], limit: float, what: str) -> dict[str, Any]:
    line = _readline(stream, limit)
    if not line:
        raise SystemExit(f"the receiving process said nothing about {what} within {limit:.0f} s")
    return dict(json.loads(line))


def _profile(pid: int, out: Path | None, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy recording process `pid` (collapsed stacks) until it ends, if --profile asked for it."""
    if out is None:
        return None
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if spy is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    target = out / f"{name}.txt"
    command = [spy, "record", "-p", str(pid), "--format", "raw", "-o", str(target), "--rate", "50", "--subprocesses"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(
    cache: Path, work: Path, size: int, seed: int, runs: int, index: bool, profile: Path | None = None
) -> dict[str, Any]:
    folder, meta = founder(cache, size, seed)
    b_path = work / f"b-{size}"
    shutil.rmtree(b_path, ignore_errors=True)
    shutil.copytree(folder / "b", b_path)
    out: dict[str, Any] = {"size": size, "founder_build": meta["add"] + meta["seal"]}
    daemon = Daemon(folder / "a", work / f"daemon-{size}.log", "--no-auto")
    peak_daemon = [0.0]
    stop = threading.Event()

    def watch() -> None:  # VmHWM is the peak already; sampled so a daemon that dies early still counts
        while not stop.wait(0.5):
            peak_daemon[0] = max(peak_daemon[0], _status_mb(daemon.proc.pid, "VmHWM"))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    spies = [_profile(daemon.proc.pid, profile, f"sender-{size}")]
    try:
        out["daemon_rss_start"] = _status_mb(daemon.proc.pid, "VmHWM")
        server_cpu = cpu_seconds(daemon.proc.pid)
        child = subprocess.Popen(
            [sys.executable, __file__, "--receive", str(b_path), "--port", str(daemon.port), "--key", meta["key"]]
            + ["--runs", str(runs)]
            + (["--index"] if index else []),
            stdout=subprocess.PIPE,
            env=ENV,
        )
        assert child.stdout is not None
        spies.append(_profile(child.pid, profile, f"receiver-{size}"))
        try:
            first = _expect(child.stdout, STEP_LIMIT, "the first sync")
            out["first_server_cpu"] = cpu_seconds(daemon.proc.pid) - server_cpu
            out.update(first)
            if first.get("error") or first["applied"] == 0:
                raise SystemExit(f"the first sync failed: {first}")
            if index:
                out.update(_expect(child.stdout, STEP_LIMIT, "the search index"))
            server_cpu = cpu_seconds(daemon.proc.pid)
            nc = _expect(child.stdout, 60 + runs * 30, "the no-change syncs")
            if "no_change_error" in nc:
                raise SystemExit(f"a no-change sync moved something or failed: {nc['no_change_error']}")
            out["no_change_server_cpu"] = (cpu_seconds(daemon.proc.pid) - server_cpu) / runs
            out.update(nc)
            out.update(_expect(child.stdout, 120, "its peak memory"))
            child.wait(timeout=120)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        peak_daemon[0] = max(peak_daemon[0], _status_mb(daemon.proc.pid, "VmHWM"))
    finally:
        stop.set()
        watcher.join()
        daemon.stop()
        for spy in spies:
            if spy is not None:
                spy.wait(timeout=60)  # it writes its file once the process it watches has ended
    out["rss_daemon"] = peak_daemon[0]
    out["file_sender"] = _file_mb(folder / "a")
    out["file_receiver"] = _file_mb(b_path)
    shutil.rmtree(b_path, ignore_errors=True)
    return out


# --- the report ----------------------------------------------------------------------------------------

# (key, label, unit scale for per-reference cost, grows-with-size)
PER_REF = [
    ("first", "first sync, wall", 1e6),
    ("first_cpu", "first sync, receiver CPU", 1e6),
    ("child_cpu", "first sync, parser CPU", 1e6),
    ("first_server_cpu", "first sync, sender CPU", 1e6),
    ("file_sender", "sender library file", 1e6),
    ("file_receiver", "receiver library file", 1e6),
]

FLAT = [("no_change", "no-change sync"), ("rss_daemon", "sender peak RSS"), ("rss", "receiver peak RSS")]


def report(results: list[dict[str, Any]]) -> dict[str, Any]:
    print("Scale: first sync and no-change sync between two processes over loopback (mDNS off)")
    head = (
        f"{'refs':>10} {'first s':>8} {'us/ref':>7} {'rcv cpu':>8} {'+child':>7} {'snd cpu':>8} {'no-chg ms':>10}"
        f" {'RSS snd':>8} {'RSS rcv':>8} {'RSS prep':>9} {'file snd':>9} {'file rcv':>9}"
    )
    print(head)
    for r in results:
        print(
            f"{r['size']:>10,} {r['first']:>8.2f} {r['first'] / r['size'] * 1e6:>7.1f} {r['first_cpu']:>8.2f}"
            f" {r['child_cpu']:>7.2f}"
            f" {r['first_server_cpu']:>8.2f} {statistics.median(r['no_change']) * 1000:>10.1f}"
            f" {r['rss_daemon']:>7.0f}M {r['rss']:>7.0f}M {r['rss_child']:>8.0f}M"
            f" {r['file_sender']:>8.0f}M {r['file_receiver']:>8.0f}M"
        )
        if "index" in r:
            print(f"{'':>10} then the search index: {r['index']:.2f} s")
    print("cost per reference (us/ref; files: bytes/ref):")
    for key, label, scale in PER_REF:
        costs = "  ".join(f"{r['size']:>9,}: {r[key] / r['size'] * scale:8.1f}" for r in results)
        print(f"  {label:<28} {costs}")
    flags = []
    for small, big in itertools.pairwise(results):
        for key, label, _scale in PER_REF:
            growth = (big[key] / big["size"]) / max(small[key] / small["size"], 1e-12)
            if growth > GROWTH_FLAG:
                flags.append(f"{label}: cost per reference x{growth:.2f} from {small['size']:,} to {big['size']:,}")
        # Should stay flat: flagged when 1.5 times as much (and more than 5 ms or 20 MB up).
        for key, label in FLAT:
            a, b = (statistics.median(x[key]) if key == "no_change" else x[key] for x in (small, big))
            if b > GROWTH_FLAG * a and b - a > (0.005 if key == "no_change" else 20):
                flags.append(
                    f"{label} grows with the library: {a:.3g} -> {b:.3g} from {small['size']:,} to {big['size']:,}"
                )
    print("superlinear growth:" if flags else "superlinear growth: none flagged (> 1.5x per reference)")
    for flag in flags:
        print(f"  FLAG {flag}")
    at = next((r for r in results if r["size"] == TARGET_SIZE), None)
    summary: dict[str, Any] = {"bench": "scale", "flags": flags, "sizes": []}
    print(f"targets at {TARGET_SIZE:,} references:" + ("" if at else " (not measured; add it with --sizes)"))
    if at:
        nc = statistics.median(at["no_change"])
        peak = max(at["rss_daemon"], at["rss"], at["rss_child"])
        for label, value, limit, unit in (
            ("first sync", at["first"], FIRST_LIMIT, "s"),
            ("no-change sync, median", nc * 1000, NO_CHANGE_LIMIT * 1000, "ms"),
            ("peak RSS, largest process", peak, RSS_LIMIT, "MB"),
        ):
            verdict = "met" if value < limit else "MISSED"
            print(f"  {label:<28} {value:9.1f} {unit:<3} < {limit:g} {unit:<3} ratio {value / limit:.2f}  {verdict}")
            summary[label.split(",")[0].replace(" ", "_")] = round(value, 3)
    for r in results:
        summary["sizes"].append(
            {
                "refs": r["size"],
                "first_s": round(r["first"], 3),
                "first_us_per_ref": round(r["first"] / r["size"] * 1e6, 2),
                "first_cpu_receiver_s": round(r["first_cpu"], 2),
                "first_cpu_parser_s": round(r["child_cpu"], 2),
                "first_cpu_sender_s": round(r["first_server_cpu"], 2),
                "no_change_ms": round(statistics.median(r["no_change"]) * 1000, 2),
                "rss_sender_mb": round(r["rss_daemon"], 1),
                "rss_receiver_mb": round(r["rss"], 1),
                "rss_parser_mb": round(r["rss_child"], 1),
                "file_sender_mb": round(r["file_sender"], 1),
                "file_receiver_mb": round(r["file_receiver"], 1),
                **({"index_s": round(r["index"], 2)} if "index" in r else {}),
            }
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated library sizes (add 1000000)")
    parser.add_argument("--runs", type=int, default=5, help="no-change syncs per size (median)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--dir",
        default=str(Path(tempfile.gettempdir()) / "p2psync-bench-scale"),
        help="where founders are kept between runs (1,000,000 references: about 6 GB)",
    )
    parser.add_argument("--index", action="store_true", help="also time the search index after the first sync")
    parser.add_argument("--profile", metavar="DIR", help="record both processes with py-spy into DIR")
    parser.add_argument("--build", metavar="DIR", help=argparse.SUPPRESS)  # the child's jobs
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--receive", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build(Path(args.build), args.size, args.seed)
        return
    if args.receive:
        receiver(args.receive, args.port, args.key, args.runs, args.index)
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    cache = Path(args.dir)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="run-", dir=cache) as tmp:
        for size in sizes:
            profile = Path(args.profile) if args.profile else None
            if profile:
                profile.mkdir(parents=True, exist_ok=True)
            results.append(measure(cache, Path(tmp), size, args.seed, args.runs, args.index, profile))
            r = results[-1]
            nc = statistics.median(r["no_change"]) * 1000
            print(f"  {size:,}: first sync {r['first']:.2f} s, no-change {nc:.1f} ms", file=sys.stderr)
    summary = report(results)
    print(f"(whole bench: {time.perf_counter() - started:.0f} s; founders kept in {cache})")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
