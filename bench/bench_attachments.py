"""Attachment sync benchmark over loopback, with real processes (issue 6). Prints figures;
asserts nothing.

    python bench/bench_attachments.py [--total-mb 1024] [--files 200] [--runs 3] [--seed 1] [--no-syncthing]

Dataset: --files incompressible PDF-like files (b"%PDF-1.7\\n" then an AES-256-CTR keystream),
1 to 10 MiB each, --total-mb MiB in all. Sizes, the files appended to later and the keystream key
are drawn exactly as ../shared/tools/syncthing-baseline draws them for the same SEED, so both
tools move files of the same sizes.

Each run, in a fresh temporary folder: library A (founder) and B (joined, empty) are made with
the Python API, one reference per file is added to A and the file attached (setup: timed apart,
not part of any figure).
(1) Initial sync to an empty peer: A is served by `p2psync daemon --listen 127.0.0.1:0 --no-mdns
    --no-auto --json` in its own process; B runs `p2psync sync --address 127.0.0.1:PORT --no-mdns
    --wait 0 --json` in its own process (no waiting for other members: there are none).
    Throughput = bytes fetched / wall time of that process (interpreter start included; a bare
    `p2psync --version` is timed too, so start-up shows). Peak RSS: the
    daemon's VmHWM read from /proc just before it is stopped (SIGTERM); the receiver's ru_maxrss
    from os.wait4; CPU seconds (user + system) of both. B's files are checked against A's by
    SHA-256. Targets: at least 1.25 times Syncthing's throughput from the same start in the same
    bench run (issue 22), >= 200 MB/s (issue 6), <= 200 MB peak RSS each side.
(2) Delta: 100 KiB is appended in place to 20 of A's attachment files (an incremental PDF save),
    A records the new versions (Library.scan_attachments, timed), a fresh daemon serves A and B
    syncs again. Reported: bytes fetched (target: about the 2 MB appended, not the files: at most
    the appended bytes plus one re-cut chunk, 128 KiB, per file) and the wall time of that sync.

Unless --no-syncthing, ../shared/tools/syncthing-baseline (Syncthing 1.19 from Debian, two
instances in a loopback-only network namespace; needs root and `ip netns`, installs the
syncthing package itself if missing) runs --runs times on the same sizes, each run right after a
p2psync run (so that both meet the same load), and the ratios p2psync / Syncthing are printed;
NETNS and WORKDIR, when set, are passed on to it (two benches on one machine need different
ones). The p2psync processes run the p2psync of this tree (PYTHONPATH), not whichever one the
venv was installed from. MB = 10^6 bytes throughout. The last line is one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # this tree's p2psync, as the processes run

from bench_lan import _readline, cpu_seconds  # the same pipe and /proc helpers

from p2psync.model.chunking import MAX_SIZE
from p2psync.store.folder import attachment_file
from p2psync.store.library import Library
from p2psync.store.peers import remembered_addresses
from p2psync.store.sync import sync_libraries

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT.parent / "shared" / "tools" / "syncthing-baseline"
_ENTRY = Path(sys.executable).parent / "p2psync"
P2PSYNC = [str(_ENTRY)] if _ENTRY.exists() else [sys.executable, "-m", "p2psync"]
ENV = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
ENV["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), ENV.get("PYTHONPATH", "")) if p)

MiB = 1 << 20
MIN_MB, MAX_MB = 1, 10
DELTA_FILES = 20
DELTA_KIB = 100
HEADER = b"%PDF-1.7\n"
START_LIMIT = 60.0  # seconds a daemon may take to say where it listens
SYNC_LIMIT = 900.0  # seconds one `p2psync sync` may take
STOP_LIMIT = 30.0  # seconds a daemon may take to stop after SIGTERM
BASELINE_LIMIT = 1800.0  # seconds one syncthing-baseline run may take

TARGET_MBPS = 200.0
TARGET_RATIO = 1.25  # throughput against Syncthing's, from the same start, in the same run (issue 22)
TARGET_RSS_MB = 200.0


# --- the dataset (the same plan as syncthing-baseline's gen_plan) --------------------------------


def plan(seed: int, total_mb: int, n: int, nd: int) -> tuple[list[tuple[str, int]], list[str]]:
    """File names and sizes, and the names of the files appended to in the delta step."""
    total, lo, hi = total_mb * MiB, MIN_MB * MiB, MAX_MB * MiB
    if n < 1 or not (n * lo <= total <= n * hi):
        raise SystemExit(f"cannot split --total-mb {total_mb} into --files {n} files of {MIN_MB}-{MAX_MB} MiB")
    import random

    r = random.Random(seed)
    span = hi - lo
    e = [r.random() * span for _ in range(n)]
    need = total - n * lo
    s = sum(e)
    if need <= s:
        e = [x * need / s for x in e]
    else:
        h = [span - x for x in e]
        hs = sum(h)
        head = n * span - need
        e = [span - x * head / hs for x in h]
    sizes = [lo + int(x) for x in e]
    i = 0
    while sum(sizes) < total:
        if sizes[i % n] < hi:
            sizes[i % n] += 1
        i += 1
    names = [f"doc_{i:04d}.pdf" for i in range(n)]
    order = sorted(range(n), key=lambda _: r.random())
    return list(zip(names, sizes, strict=True)), [names[i] for i in sorted(order[: min(nd, n)])]


def keystream(seed: int, label: str, size: int) -> bytes:
    """Deterministic incompressible bytes (AES-256-CTR keystream, the key as the baseline makes it)."""
    key = hashlib.sha256(f"stbench:{seed}:{label}".encode()).digest()
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    return encryptor.update(bytes(size)) + encryptor.finalize()


def generate(folder: Path, files: list[tuple[str, int]], seed: int) -> dict[str, str]:
    """Write the files; return name -> SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, size in files:
        data = HEADER[:size] + keystream(seed, f"file:{name}", max(0, size - len(HEADER)))
        (folder / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


# --- processes -----------------------------------------------------------------------------------


def proc_status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Daemon:
    """`p2psync daemon` serving a library on 127.0.0.1 (stderr to a file); stop() reads its VmHWM
    first, then sends SIGTERM to the PID started here."""

    def __init__(self, library: Path, log: Path) -> None:
        self.log_path = log
        self._log: IO[bytes] = open(log, "wb")  # noqa: SIM115 (closed in stop)
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                *P2PSYNC,
                "--library",
                str(library),
                "daemon",
                "--listen",
                "127.0.0.1:0",
                "--no-mdns",
                "--no-auto",
                "--backup-every",
                "0",  # no regular backup copying the library while it is measured
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=ENV,
        )
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, START_LIMIT)
        self.start_s = time.perf_counter() - start
        if not line:
            self.stop()
            raise RuntimeError(f"daemon did not start:\n{tail(log)}")
        host, _, port = json.loads(line)["listening"].rpartition(":")
        if host != "127.0.0.1":
            self.stop()
            raise RuntimeError(f"daemon listens on {host}, not 127.0.0.1")
        self.port = int(port)
        self.hwm_kb = 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.hwm_kb = proc_status_kb(self.proc.pid, "VmHWM")
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_LIMIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


@dataclass
class Synced:
    wall_s: float
    rss_kb: int  # ru_maxrss of the receiving process (KiB on Linux)
    cpu_s: float
    server_cpu_s: float
    code: int
    report: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def fetched(self) -> int:
        return int(self.report.get("attachments", {}).get("bytes_fetched", 0))


def receive(library: Path, daemon: Daemon, log: Path) -> Synced:
    """Run `p2psync sync` against the daemon in its own process; wall time, peak RSS, its JSON."""
    out_path = log.with_suffix(".json")
    # --wait 0: the figure is the time until the peer has the files, as Syncthing's is; a waiting
    # sync would then serve on for a second (meeting.py's LINGER_SECONDS) with nothing to do.
    cmd = [
        *P2PSYNC,
        "--library",
        str(library),
        "sync",
        "--address",
        f"127.0.0.1:{daemon.port}",
        "--no-mdns",
        "--wait",
        "0",
    ]
    server_cpu = cpu_seconds(daemon.proc.pid)
    with out_path.open("wb") as out, log.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([*cmd, "--json"], stdout=out, stderr=err, env=ENV)
        deadline = start + SYNC_LIMIT
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                timed_out = True
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    result = Synced(
        wall_s=wall,
        rss_kb=usage.ru_maxrss,
        cpu_s=usage.ru_utime + usage.ru_stime,
        server_cpu_s=cpu_seconds(daemon.proc.pid) - server_cpu,
        code=proc.returncode,
    )
    with contextlib.suppress(OSError, ValueError):
        result.report = json.loads(out_path.read_text())
    if timed_out:
        result.error = f"sync did not finish within {SYNC_LIMIT:.0f} s"
    elif proc.returncode != 0 or not result.report:
        result.error = f"sync exited {proc.returncode}:\n{tail(log)}"
    elif result.report["attachments"].get("missing"):
        result.error = f"attachments still missing: {result.report['attachments']['missing'][:3]}"
    return result


# --- one p2psync run -----------------------------------------------------------------------------


def verify(b_path: Path, refs: dict[str, str], expected: dict[str, str]) -> int:
    """How many of B's attachment files differ from (or lack) the expected SHA-256."""
    bad = 0
    with Library.open(b_path) as b:
        for name, ref in refs.items():
            try:
                path = b.attachment_path(ref, name)
            except Exception:
                bad += 1
                continue
            bad += sha256_file(path) != expected[name]
    return bad


def p2psync_run(
    root: Path, source: Path, files: list[tuple[str, int]], digests: dict[str, str], delta: list[str], seed: int
) -> dict[str, Any]:
    a_path, b_path = root / "a", root / "b"
    total = sum(size for _, size in files)
    # Setup: A founds the library, B joins (as after pairing) while A holds nothing yet.
    a = Library.create(a_path, "A")
    b = Library.create(b_path, "B", found=False, library_id=a.library_id)
    a.add_device(b.identity().public_bytes, "B")
    sync_libraries(a, b)
    b.close()
    start = time.perf_counter()
    refs: dict[str, str] = {}
    for i, (name, _) in enumerate(files):
        ref = a.add_reference({"title": f"Benchmark document {i}"})
        a.attach(ref, source / name)
        refs[name] = ref
    attach_s = time.perf_counter() - start
    a.close()
    out: dict[str, Any] = {"attach_s": attach_s}

    # (1) initial sync to the empty peer
    daemon = Daemon(a_path, root / "daemon-initial.log")
    try:
        first = receive(b_path, daemon, root / "sync-initial.log")
    finally:
        daemon.stop()
    if first.error:
        raise RuntimeError(f"initial sync: {first.error}\ndaemon log:\n{tail(daemon.log_path)}")
    start = time.perf_counter()
    bad = verify(b_path, refs, digests)
    verify_s = time.perf_counter() - start
    peers = first.report.get("peers", [])
    out["initial"] = {
        "wall_s": first.wall_s,
        "bytes_fetched": first.fetched,
        "files": first.report["attachments"]["files"],
        "change_sets": sum(p.get("received", {}).get("applied", 0) for p in peers),
        "mbps": first.fetched / 1e6 / first.wall_s,
        "mbps_dataset": total / 1e6 / first.wall_s,
        "rss_sender_kb": daemon.hwm_kb,
        "rss_receiver_kb": first.rss_kb,
        "cpu_receiver_s": first.cpu_s,
        "cpu_sender_s": first.server_cpu_s,
        "daemon_start_s": daemon.start_s,
        "mismatched_files": bad,
        "verify_s": verify_s,
    }

    # (2) delta between two running daemons (delta_run)
    out["delta"] = delta_run(root, a_path, b_path, refs, delta, seed)
    return out


# --- (2) the delta: an edit in place travels between two running daemons -------------------------

DELTA_LIMIT = 60.0  # seconds the edited files may take to reach B
MEET_LIMIT = 30.0  # seconds B's daemon may take to make itself known to A's
SETTLE_S = 1.0  # quiet time once the daemons know each other, before the files are edited
POLL_S = 0.002  # how often B's files are looked at (a stat each; hashed once, after the clock stops)


def auto_daemon(library: Path, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int, IO[bytes]]:
    """`p2psync daemon` as a user runs it (automatic syncs, the attachment watcher), --no-mdns,
    on 127.0.0.1; (process, port, its log file)."""
    out: IO[bytes] = open(log, "wb")  # noqa: SIM115 (closed by stop_daemon)
    cmd = [*P2PSYNC, "--library", str(library), "daemon", "--listen", "127.0.0.1:0", "--no-mdns", "--json"]
    cmd += ["--backup-every", "0", *extra]  # no regular backup copying the library while it is measured
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=out, env=ENV)
    assert proc.stdout is not None
    line = _readline(proc.stdout, START_LIMIT)
    if not line:
        stop_daemon(proc, out)
        raise RuntimeError(f"daemon did not start:\n{tail(log)}")
    return proc, int(json.loads(line)["listening"].rpartition(":")[2]), out


def stop_daemon(proc: subprocess.Popen[bytes], log: IO[bytes]) -> int:
    """SIGTERM to the daemon started here; its peak RSS (VmHWM, KiB) read just before."""
    hwm = proc_status_kb(proc.pid, "VmHWM")
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_LIMIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()
    log.close()
    return hwm


def fetched_in_log(log: Path, offset: int) -> tuple[float, float]:
    """MB fetched and MB copied from B's own disk, from the daemon's 'attachments:' lines after
    `offset` ('attachments: 20 files in (2.6 MB fetched, 120.6 MB from this disk), ...', the sizes
    as model/sizes.human_size writes them)."""
    fetched = local = 0.0
    for line in log.read_bytes()[offset:].decode(errors="replace").splitlines():
        if "attachments:" in line and " fetched, " in line:
            inside = line.split("(", 1)[1].split(")", 1)[0]
            moved, _, here = inside.partition(" fetched, ")
            fetched += _mb(moved)
            local += _mb(here.removesuffix(" from this disk"))
    return fetched, local


def _mb(text: str) -> float:
    """'2.6 MB', '900.0 KB', '300 bytes' -> MB."""
    number, _, unit = text.strip().partition(" ")
    scale = {"bytes": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3, "TB": 1e6}[unit]
    return float(number) * scale


def delta_run(
    root: Path, a_path: Path, b_path: Path, refs: dict[str, str], delta: list[str], seed: int
) -> dict[str, Any]:
    """Both sides are daemons: A's (with its watcher on the attachment folder) and B's, joined to
    A by --address. The bench appends DELTA_KIB KiB in place to each of A's `delta` files and
    takes the time until every one of B's copies holds the new bytes; nobody is told to scan or
    sync. The clock stops when the last file is seen at its new size on a new inode (files land
    by rename, whole); the SHA-256 of each is checked afterwards."""
    appends = {name: keystream(seed, f"append:{name}", DELTA_KIB * 1024) for name in delta}
    a_files = {name: attachment_file(a_path, refs[name], name) for name in delta}
    b_files = {name: attachment_file(b_path, refs[name], name) for name in delta}
    expected: dict[str, tuple[str, int]] = {}
    for name in delta:  # the new SHA-256 of each file, worked out before the clock starts
        digest = hashlib.sha256()
        with a_files[name].open("rb") as handle:
            while block := handle.read(4 * MiB):
                digest.update(block)
        digest.update(appends[name])
        expected[name] = (digest.hexdigest(), a_files[name].stat().st_size + len(appends[name]))
    before = {name: os.stat(b_files[name]).st_ino for name in delta}
    a_log, b_log = root / "daemon-delta-a.log", root / "daemon-delta-b.log"
    a_proc, a_port, a_out = auto_daemon(a_path, a_log)
    b_proc = b_out = None
    try:
        b_proc, _, b_out = auto_daemon(b_path, b_log, "--address", f"127.0.0.1:{a_port}")
        b_device = Library.open(b_path)
        b_id = b_device.device_id
        b_device.close()

        def a_knows_b() -> bool:
            with Library.open(a_path) as a:
                return b_id in remembered_addresses(a)

        deadline = time.perf_counter() + MEET_LIMIT
        while not a_knows_b():
            if time.perf_counter() > deadline:
                raise RuntimeError(f"B's daemon did not reach A's within {MEET_LIMIT:.0f} s:\n{tail(b_log)}")
            time.sleep(0.05)
        time.sleep(SETTLE_S)
        b_offset = b_log.stat().st_size
        cpu_a, cpu_b = cpu_seconds(a_proc.pid), cpu_seconds(b_proc.pid)
        start_epoch = time.time()  # to read the daemons' logs against
        start = time.perf_counter()
        for name in delta:
            with a_files[name].open("ab") as handle:
                handle.write(appends[name])
        append_s = time.perf_counter() - start
        landed: dict[str, float] = {}
        deadline = start + DELTA_LIMIT
        while len(landed) < len(delta) and time.perf_counter() < deadline:
            for name in delta:
                if name in landed:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    stat = os.stat(b_files[name])
                    if stat.st_size == expected[name][1] and stat.st_ino != before[name]:
                        landed[name] = time.perf_counter() - start
            time.sleep(POLL_S)
        cpu_a, cpu_b = cpu_seconds(a_proc.pid) - cpu_a, cpu_seconds(b_proc.pid) - cpu_b
        time.sleep(0.3)  # B's log line about the fetch
    finally:
        hwm_b = stop_daemon(b_proc, b_out) if b_proc is not None and b_out is not None else 0
        hwm_a = stop_daemon(a_proc, a_out)
    if len(landed) < len(delta):
        raise RuntimeError(
            f"delta: {len(delta) - len(landed)} of {len(delta)} edited files did not reach B within "
            f"{DELTA_LIMIT:.0f} s\nA's log:\n{tail(a_log)}\nB's log:\n{tail(b_log)}"
        )
    bad = sum(sha256_file(b_files[name]) != expected[name][0] for name in delta)
    fetched_mb, local_mb = fetched_in_log(b_log, b_offset)
    return {
        "files_appended": len(delta),
        "bytes_appended": len(delta) * DELTA_KIB * 1024,
        "start_epoch": start_epoch,
        "append_s": append_s,
        "wall_s": max(landed.values()),
        "first_s": min(landed.values()),
        "bytes_fetched": int(fetched_mb * 1e6),
        "bytes_local": int(local_mb * 1e6),
        "files": len(landed),
        "rss_sender_kb": hwm_a,
        "rss_receiver_kb": hwm_b,
        "cpu_receiver_s": cpu_b,
        "cpu_sender_s": cpu_a,
        "mismatched_files": bad,
    }


def bare_start() -> float:
    """Wall time of `p2psync --version` (interpreter and import start-up), best of 3."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([*P2PSYNC, "--version"], check=True, env=ENV, stdout=subprocess.DEVNULL, timeout=60)
        times.append(time.perf_counter() - start)
    return min(times)


# --- Syncthing -----------------------------------------------------------------------------------


def syncthing_missing() -> str:
    """Why the baseline cannot run here ('' if it can)."""
    if not BASELINE.is_file():
        return f"{BASELINE} not found"
    if os.geteuid() != 0:
        return "not root (the baseline needs root for `ip netns`)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) for the network namespace"
    if shutil.which("syncthing") is None:
        print(
            "  syncthing is not installed: the baseline script installs Debian's package itself "
            "(its ensure_pkg: apt-get install -y syncthing)",
            file=sys.stderr,
        )
    return ""


def syncthing_run(args: argparse.Namespace, results_root: Path, run: int) -> tuple[dict[str, Any] | None, str]:
    """One run of the baseline: (its result, or None and why it failed)."""
    folder = results_root / f"syncthing-{run}"
    folder.mkdir()
    env = {
        **ENV,
        "TOTAL_MB": str(args.total_mb),
        "FILES": str(args.files),
        "MIN_MB": str(MIN_MB),
        "MAX_MB": str(MAX_MB),
        "SEED": str(args.seed),
        "DELTA_FILES": str(min(DELTA_FILES, args.files)),
        "DELTA_KB": str(DELTA_KIB),
        "RESULTS_DIR": str(folder),
    }
    log = results_root / f"syncthing-{run}.log"
    print(f"  syncthing run {run + 1}/{args.runs} ...", file=sys.stderr)
    with log.open("wb") as handle:
        proc = subprocess.Popen(["bash", str(BASELINE)], env=env, stdout=handle, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=BASELINE_LIMIT)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # its trap stops the syncthings it started, removes the netns
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            return None, f"baseline run {run + 1} took more than {BASELINE_LIMIT:.0f} s"
    found = sorted(folder.glob("*.json"))
    if code != 0 or not found:
        return None, f"baseline run {run + 1} exited {code}:\n{tail(log)}"
    return json.loads(found[-1].read_text()), ""


# --- report --------------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def mb(kb: float) -> float:
    return kb * 1024 / 1e6


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--total-mb", type=int, default=1024, help="dataset size in MiB (default 1024)")
    parser.add_argument("--files", type=int, default=200, help="number of files, 1 to 10 MiB each (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool; the median is reported (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="dataset seed (default 1, as the baseline's)")
    parser.add_argument("--no-syncthing", action="store_true", help="skip the Syncthing baseline")
    args = parser.parse_args()
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    started = time.perf_counter()
    files, delta = plan(args.seed, args.total_mb, args.files, DELTA_FILES)
    total = sum(size for _, size in files)
    appended = len(delta) * DELTA_KIB * 1024
    delta_ceiling = appended + len(delta) * MAX_SIZE  # one re-cut boundary chunk per file at most

    runs: list[dict[str, Any]] = []
    failure = ""
    st_results: list[dict[str, Any]] = []
    st_skip = "--no-syncthing" if args.no_syncthing else ""
    with tempfile.TemporaryDirectory(prefix="p2psync-bench-att-") as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        digests = generate(tmp_path / "source", files, args.seed)
        gen_s = time.perf_counter() - t0
        print(
            f"  dataset: {len(files)} files, {total / 1e6:.0f} MB, generated in {gen_s:.1f} s; "
            f"receiver: {' '.join(P2PSYNC)}",
            file=sys.stderr,
        )
        startup = bare_start()
        if not args.no_syncthing:
            st_skip = syncthing_missing()
        # The two tools take turns, run by run, so that both meet the same load on a shared machine.
        for run in range(args.runs):
            root = tmp_path / f"run-{run}"
            root.mkdir()
            print(f"  p2psync run {run + 1}/{args.runs} ...", file=sys.stderr)
            try:
                runs.append(p2psync_run(root, tmp_path / "source", files, dict(digests), delta, args.seed))
            except RuntimeError as exc:
                failure = f"run {run + 1}: {exc}"
                break
            finally:
                shutil.rmtree(root, ignore_errors=True)
            if not st_skip:
                result, st_skip = syncthing_run(args, tmp_path, run)
                if result is not None:
                    st_results.append(result)
        shutil.rmtree(tmp_path / "source", ignore_errors=True)

    print(
        f"\nAttachment sync over loopback (127.0.0.1): {len(files)} files, {total / 1e6:.1f} MB "
        f"({args.total_mb} MiB, {MIN_MB}-{MAX_MB} MiB each, seed {args.seed}) to an empty peer; "
        f"{len(runs)} of {args.runs} p2psync runs; MB = 10^6 bytes"
    )
    if failure:
        print(f"p2psync FAILED at {failure}")
    out: dict[str, Any] = {
        "bench": "attachments",
        "params": {"total_mb": args.total_mb, "files": args.files, "seed": args.seed, "runs": args.runs},
        "dataset_bytes": total,
        "startup_s": startup,
        "p2psync": {"runs": runs, "failure": failure},
    }
    ratios: dict[str, float] = {}
    if runs:
        ini = [r["initial"] for r in runs]
        dlt = [r["delta"] for r in runs]
        m = {
            "mbps": med([x["mbps"] for x in ini]),
            "wall_s": med([x["wall_s"] for x in ini]),
            "rss_sender_mb": mb(med([x["rss_sender_kb"] for x in ini])),
            "rss_receiver_mb": mb(med([x["rss_receiver_kb"] for x in ini])),
            "cpu_receiver_s": med([x["cpu_receiver_s"] for x in ini]),
            "cpu_sender_s": med([x["cpu_sender_s"] for x in ini]),
            "delta_bytes": med([x["bytes_fetched"] for x in dlt]),
            "delta_wall_s": med([x["wall_s"] for x in dlt]),
            "delta_cpu_sender_s": med([x["cpu_sender_s"] for x in dlt]),
            "delta_cpu_receiver_s": med([x["cpu_receiver_s"] for x in dlt]),
            "delta_rss_sender_mb": mb(med([x["rss_sender_kb"] for x in dlt])),
            "delta_rss_receiver_mb": mb(med([x["rss_receiver_kb"] for x in dlt])),
        }
        out["p2psync"]["median"] = m
        rss_worst = max(max(x["rss_sender_kb"], x["rss_receiver_kb"]) for x in ini + dlt)
        print(f"{'figure (median of runs)':<44}{'measured':>14}  {'target':<16} result")
        rows = [
            (
                "(1) throughput, bytes / receiver wall time",
                f"{m['mbps']:8.1f} MB/s",
                ">= 200 MB/s",
                mark(m["mbps"] >= TARGET_MBPS),
            ),
            ("    receiver `p2psync sync` wall time", f"{m['wall_s']:8.2f} s", "", ""),
            (
                "    CPU seconds, receiver / sender",
                f"{m['cpu_receiver_s']:5.2f} /{m['cpu_sender_s']:5.2f} s",
                "(info)",
                "",
            ),
            (
                "    peak RSS, sender (daemon VmHWM)",
                f"{m['rss_sender_mb']:8.1f} MB",
                "<= 200 MB",
                mark(m["rss_sender_mb"] <= TARGET_RSS_MB),
            ),
            (
                "    peak RSS, receiver (ru_maxrss)",
                f"{m['rss_receiver_mb']:8.1f} MB",
                "<= 200 MB",
                mark(m["rss_receiver_mb"] <= TARGET_RSS_MB),
            ),
            (
                "(2) delta: bytes re-sent",
                f"{m['delta_bytes'] / 1e6:8.3f} MB",
                f"~{appended / 1e6:.2f} (<= {delta_ceiling / 1e6:.2f})",
                mark(appended <= m["delta_bytes"] <= delta_ceiling),
            ),
            (
                "    delta: append on A -> B has all (daemons)",
                f"{m['delta_wall_s']:8.2f} s",
                "<= Syncthing's",
                "",
            ),
            (
                "    delta CPU, A's daemon / B's daemon",
                f"{m['delta_cpu_sender_s']:5.2f} /{m['delta_cpu_receiver_s']:5.2f} s",
                "(info)",
                "",
            ),
            (
                "    peak RSS, sender / receiver",
                f"{m['delta_rss_sender_mb']:5.0f} /{m['delta_rss_receiver_mb']:4.0f} MB",
                "<= 200 MB",
                mark(max(m["delta_rss_sender_mb"], m["delta_rss_receiver_mb"]) <= TARGET_RSS_MB),
            ),
        ]
        for name, measured, target, result in rows:
            print(f"{name:<44}{measured:>14}  {target:<16} {result}")
        print(f"worst peak RSS of any process in any run: {mb(rss_worst):.1f} MB")
        print("each run:")
        for i, (x, d) in enumerate(zip(ini, dlt, strict=True)):
            print(
                f"  run {i + 1}: initial {x['bytes_fetched'] / 1e6:.1f} MB, {x['files']} files in {x['wall_s']:.2f} s "
                f"= {x['mbps']:.1f} MB/s; RSS sender {mb(x['rss_sender_kb']):.0f} MB, receiver "
                f"{mb(x['rss_receiver_kb']):.0f} MB; CPU receiver {x['cpu_receiver_s']:.1f} s, sender "
                f"{x['cpu_sender_s']:.1f} s; {x['change_sets']} change sets; "
                f"{'all files match' if not x['mismatched_files'] else str(x['mismatched_files']) + ' FILES DIFFER'}"
            )
            print(
                f"         delta {d['bytes_fetched'] / 1e6:.3f} MB fetched ({d['bytes_local'] / 1e6:.1f} MB copied "
                f"locally), {d['files']} files at B {d['wall_s']:.2f} s after the append (first after "
                f"{d['first_s']:.2f} s); RSS sender {mb(d['rss_sender_kb']):.0f} MB, receiver "
                f"{mb(d['rss_receiver_kb']):.0f} MB; CPU receiver {d['cpu_receiver_s']:.1f} s, sender "
                f"{d['cpu_sender_s']:.1f} s; "
                f"{'all files match' if not d['mismatched_files'] else str(d['mismatched_files']) + ' FILES DIFFER'}"
            )
        print(
            f"setup (not timed above): attach {total / 1e6:.0f} MB to A in {med([r['attach_s'] for r in runs]):.1f} s "
            f"(copy + hash + chunk); daemon start to 'listening' "
            f"{med([x['daemon_start_s'] for x in ini]):.2f} s; a bare `p2psync --version` takes {startup:.2f} s "
            f"of each receiver wall time"
        )

    if st_results:
        st_mbps = [r["dataset"]["total_bytes"] / 1e6 / r["initial"]["b_start_to_complete_s"] for r in st_results]
        st_conn = [r["dataset"]["total_bytes"] / 1e6 / r["initial"]["connected_to_complete_s"] for r in st_results]
        st_delta = [r["delta"]["append_to_complete_s"] for r in st_results]
        st_delta_wire = [r["delta"]["wire_bytes_received"] for r in st_results]
        st_rss_a = [mb(r["peak_rss_kb"]["A"]) for r in st_results]
        st_rss_b = [mb(r["peak_rss_kb"]["B"]) for r in st_results]
        print(f"\nSyncthing baseline ({st_results[0]['version'].split(' (')[0]}), {len(st_results)} runs, same sizes:")
        print(
            f"  initial: B start -> complete {med(st_mbps):.1f} MB/s (from connect {med(st_conn):.1f} MB/s); "
            f"each run: {', '.join(f'{x:.1f}' for x in st_mbps)} MB/s"
        )
        print(
            f"  delta: append -> B complete {med(st_delta):.2f} s (A rescan "
            f"{med([r['delta']['a_rescan_s'] for r in st_results]):.2f} s), "
            f"{med(st_delta_wire) / 1e6:.3f} MB on the wire; "
            f"each run: {', '.join(f'{x:.2f}' for x in st_delta)} s"
        )
        print(f"  peak RSS (worker): A {med(st_rss_a):.0f} MB, B {med(st_rss_b):.0f} MB")
        out["syncthing"] = {
            "runs": st_results,
            "median": {
                "mbps_from_start": med(st_mbps),
                "mbps_from_connect": med(st_conn),
                "delta_s": med(st_delta),
                "delta_wire_bytes": med(st_delta_wire),
                "rss_a_mb": med(st_rss_a),
                "rss_b_mb": med(st_rss_b),
            },
        }
        if runs:
            m = out["p2psync"]["median"]
            ratios = {
                "throughput": m["mbps"] / med(st_mbps),
                "delta_time": m["delta_wall_s"] / med(st_delta),
            }
            print("p2psync / Syncthing:")
            print(
                f"  throughput ratio {ratios['throughput']:.2f} (p2psync {m['mbps']:.1f} MB/s from receiver start / "
                f"Syncthing {med(st_mbps):.1f} MB/s from B start; both include start-up) -> p2psync is "
                f"{'faster' if ratios['throughput'] > 1 else 'slower'}; target >= {TARGET_RATIO:.2f}: "
                f"{mark(ratios['throughput'] >= TARGET_RATIO)}"
            )
            print(
                f"  delta time ratio {ratios['delta_time']:.2f} (p2psync append -> B has all, daemons, "
                f"{m['delta_wall_s']:.2f} s / Syncthing append -> REST rescan -> B complete {med(st_delta):.2f} s; "
                f"target <= 1.00: {mark(ratios['delta_time'] <= 1.0)})"
            )
    if st_skip:
        print(f"\nSyncthing baseline {'skipped' if not st_results else 'stopped'}: {st_skip}")
        out["syncthing_skipped"] = st_skip.splitlines()[0] if st_skip else ""
    out["ratios"] = ratios
    out["bench_s"] = time.perf_counter() - started
    print(f"(whole bench: {out['bench_s']:.0f} s)")
    print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main()
