"""Relay benchmark (issue 21): the highest offered rate each relay set-up carries, open loop.

    python bench/bench_relay.py [--configs sqlite,postgresql] [--database URL] [--relays 2]
                                [--accounts 500] [--step-seconds 15] [--max-steps 6]

For each configuration, in one run: one relay process on SQLite (a temporary folder), and
`--relays` processes (2) on one PostgreSQL database (`--database URL`; without it a durable
cluster of its own in a temporary folder, started with tests/pg_support.py and stopped at the
end). 500 accounts of 2 devices (1,000 devices) sign up, bind and log in; then bench/relay_load.py
offers operations on a fixed schedule (open loop: a late answer shows as latency measured from
the scheduled time, never as a slower client). A short step search finds the highest rate whose
push and pull p99 both stay under 1 s with 0 errors: the rate doubles while a step passes, then
halves the gap between the best pass and the first failure, at most --max-steps steps of
--step-seconds each (plus at most 40 s for the last answers). Then one more step at that rate is
profiled: CPU seconds of the client, the relays and PostgreSQL (from /proc), the relays' own
/metrics (time in the storage: waiting for it and running; the rest: the event loop), and, where
py-spy is installed, a sampled profile of relay process 1 (its busiest functions and threads).
At the end every account must hold exactly what its devices pushed. The whole run takes about
8 to 10 minutes on 2 cores; the last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

from relay_load import Device, Http, StepResult, check_accounts, make_devices, run_step

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
COOLDOWN_SECONDS = 2.0
LIMIT_SECONDS = 1.0  # the p99 a step must stay under, for push and for pull
PUSH_ROUTES = ("POST /relay/v1/changesets", "PUT /relay/v1/chunks/{id}")
PULL_ROUTES = ("GET /relay/v1/changesets", "GET /relay/v1/chunks/{id}")


@dataclass
class RelayProc:
    proc: subprocess.Popen[str]
    url: str
    metrics_url: str


def start_relay(folder: Path, n: int, database: str | None) -> RelayProc:
    env = dict(os.environ)
    argv = [sys.executable, "-m", "p2psync", "relay", "serve", "--host", "127.0.0.1", "--port", "0", "--json"]
    argv += ["--quota", "unlimited", "--signups-per-hour", "1000000", "--metrics-listen", "127.0.0.1:0"]
    if database is None:
        argv += ["--data", str(folder / "sqlite")]
    else:
        env["P2PSYNC_RELAY_DATABASE"] = database  # as in production: never on the command line
    log = folder / f"relay-{n}.log"
    with open(log, "wb") as errors:  # the relay logs a JSON line per request, as it would in production
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL, text=True,
                                env=env)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(30)
        raise SystemExit(f"relay {n} did not start: {log.read_text()[-2000:]}")
    metrics = next(
        json.loads(entry)["metrics"] for entry in log.read_text().splitlines() if '"event": "listening"' in entry
    )
    return RelayProc(proc, json.loads(line)["listening"], metrics)


def stop_relay(relay: RelayProc) -> int:
    if relay.proc.poll() is None:
        os.kill(relay.proc.pid, signal.SIGTERM)
    try:
        return relay.proc.wait(60)
    except subprocess.TimeoutExpired:
        os.kill(relay.proc.pid, signal.SIGKILL)
        return relay.proc.wait(10)


# --- where the time goes -----------------------------------------------------------------------


def cpu_seconds(pids: list[int], with_children_of: int | None = None) -> float:
    """User + system CPU seconds of these processes (and of every child of one, for PostgreSQL's
    backends) so far; a process that is gone counts 0."""
    wanted = set(pids)
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid in wanted or (with_children_of is not None and ppid == with_children_of):
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def client_cpu() -> float:
    times = os.times()
    return times.user + times.system


def metrics_sums(urls: list[str]) -> dict[str, float]:
    """Sums and counts of the relays' histograms, added over the processes."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    out: collections.Counter[str] = collections.Counter()
    for url in urls:
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name.startswith("p2psync_relay_request_duration_seconds_"):
                    route = f"{labels.get('method')} {labels.get('route')}"
                    kind = "push" if route in PUSH_ROUTES else "pull" if route in PULL_ROUTES else "other"
                    out[f"request_{kind}_{sample.name.rsplit('_', 1)[1]}"] += sample.value
                elif sample.name.startswith(("p2psync_relay_storage_wait_seconds_", "p2psync_relay_storage_call_s")):
                    part = "wait" if "wait" in sample.name else "run"
                    if sample.name.endswith(("_sum", "_count")):
                        out[f"storage_{part}_{sample.name.rsplit('_', 1)[1]}"] += sample.value
                        out[f"call_{labels.get('call')}_{part}_{sample.name.rsplit('_', 1)[1]}"] += sample.value
    return dict(out)


IDLE = {  # leaves where a thread waits rather than works (py-spy's idle detection misses these)
    "EpollSelector.select (selectors.py)": "event loop idle",
    "_worker (thread.py)": "storage thread idle",
    "Connection.wait (connection.py)": "waiting for PostgreSQL",
}


def summarize_profile(path: Path, top: int = 10) -> list[str]:
    """py-spy's raw stacks of one relay process: how its samples split between work and waiting,
    per thread; the functions with most own samples; the relay functions with most under them."""
    threads: collections.Counter[str] = collections.Counter()
    waiting: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    total = busy = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit() or ";" not in stack:
            continue
        count = int(count_text)
        label, *frames = stack.split(";")  # the first part names the thread
        name = label.split(": ", 1)[1] if ": " in label else "unnamed"
        leaf = _short(frames[-1])
        total += count
        if leaf in IDLE:
            waiting[IDLE[leaf]] += count
            continue
        busy += count
        threads[name.rstrip("_0123456789") or name] += count
        own[leaf] += count
        for frame in {_short(f) for f in frames if "p2psync/relay/" in f}:
            under[frame] += count
    if busy == 0:
        return ["py-spy took no samples of work"]

    def shares(counter: collections.Counter[str], whole: int, digits: int = 0) -> str:
        return "; ".join(f"{key} {100 * n / whole:.{digits}f}%" for key, n in counter.most_common(top))

    return [
        f"of {total} samples: working {100 * busy / total:.0f}%; {shares(waiting, total)}",
        f"working samples by thread: {shares(threads, busy)}",
        f"own time (share of working samples): {shares(own, busy, 1)}",
        f"relay functions, time under them: {shares(under, busy)}",
    ]


def _short(frame: str) -> str:
    function, _, where = frame.partition(" (")
    file = where.split(":", 1)[0].rsplit("/", 1)[-1]
    return f"{function} ({file})"


# --- one configuration -------------------------------------------------------------------------


def describe(step: StepResult) -> str:
    return (
        f"{step.rate:7.1f}/s: push p50 {1000 * step.percentile('push', 0.5):6.0f} p99 "
        f"{1000 * step.percentile('push', 0.99):6.0f} ms, pull p50 {1000 * step.percentile('pull', 0.5):6.0f} p99 "
        f"{1000 * step.percentile('pull', 0.99):6.0f} ms, errors {len(step.errors)}, dispatcher late "
        f"{1000 * step.late_start:.0f} ms {'PASS' if step.passed(LIMIT_SECONDS) else 'fail'}"
    )


async def resync_heads(http: Http, devices: list[Device]) -> None:
    """After a failed step a push may have been stored and its answer lost: take the heads the
    relay holds, as a device's next sync would."""
    import orjson

    for a in devices[::2]:
        status, raw = await http.call("GET", "/state", a.token)
        if status == 200 and a.partner is not None:
            heads = orjson.loads(raw)["heads"]
            a.head, a.partner.head = heads.get(a.device, 0), heads.get(a.partner.device, 0)


async def measure(
    name: str, relays: list[RelayProc], pg_pid: int | None, args: argparse.Namespace, folder: Path
) -> dict[str, Any]:
    http = Http([r.url for r in relays], args.connections)
    try:
        start = time.perf_counter()
        devices = await make_devices(http, args.accounts, name)
        print(f"[{name}] {len(devices)} devices signed up, bound and logged in in {time.perf_counter() - start:.0f} s")
        rate, best, failed = args.start_rate, None, None
        steps: list[StepResult] = []
        for n in range(args.max_steps):  # bounded in count; each step bounded in time
            step = await run_step(http, devices, rate, args.step_seconds, seed=n)
            steps.append(step)
            print(f"[{name}] step {n + 1}: {describe(step)}", flush=True)
            if step.errors:
                await resync_heads(http, devices)
            if step.passed(LIMIT_SECONDS):
                best = step if best is None or step.rate > best.rate else best
            else:
                failed = step if failed is None or step.rate < failed.rate else failed
            if best is not None and failed is not None and failed.rate / best.rate <= 1.15:
                break
            if failed is None:
                rate = rate * 2
            elif best is None:
                rate = rate / 2
            else:
                rate = (best.rate + failed.rate) / 2
            await asyncio.sleep(COOLDOWN_SECONDS)

        profile = await profile_step(name, http, devices, relays, pg_pid, best.rate if best else rate / 2, args, folder)
        problems = await check_accounts(http, devices)
        print(f"[{name}] every account holds exactly what its devices pushed: {not problems} {problems[:3]}")
    finally:
        await http.close()
    result: dict[str, Any] = {"config": name, "steps": [describe(s) for s in steps], "consistent": not problems}
    if best is not None:
        result.update(
            best_rate=round(best.rate, 1),
            push_p50_ms=round(1000 * best.percentile("push", 0.5)),
            push_p99_ms=round(1000 * best.percentile("push", 0.99)),
            pull_p50_ms=round(1000 * best.percentile("pull", 0.5)),
            pull_p99_ms=round(1000 * best.percentile("pull", 0.99)),
            operations=sum(map(len, best.latencies.values())),
            errors=len(best.errors),
        )
    result["first_failure"] = describe(failed) if failed else None
    result["profile"] = profile
    return result


async def profile_step(
    name: str,
    http: Http,
    devices: list[Device],
    relays: list[RelayProc],
    pg_pid: int | None,
    rate: float,
    args: argparse.Namespace,
    folder: Path,
) -> dict[str, Any]:
    """One more step at `rate`, measured: CPU per part, the relays' metrics, py-spy on relay 1."""
    spy = shutil.which("py-spy")
    spy_out = folder / f"py-spy-{name}.txt"

    async def record() -> None:
        if spy is None:
            return
        proc = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(relays[0].proc.pid), "--duration", str(int(args.step_seconds)),
            "--rate", "97", "--format", "raw", "--threads", "--nonblocking", "--output", str(spy_out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.wait_for(proc.wait(), args.step_seconds + 30)

    relay_pids = [r.proc.pid for r in relays]
    before = (client_cpu(), cpu_seconds(relay_pids), cpu_seconds([pg_pid], pg_pid) if pg_pid else 0.0)
    sums_before = metrics_sums([r.metrics_url for r in relays])
    wall = time.perf_counter()
    step = await run_step(http, devices, rate, args.step_seconds, seed=99, during=record)
    wall = time.perf_counter() - wall
    after = (client_cpu(), cpu_seconds(relay_pids), cpu_seconds([pg_pid], pg_pid) if pg_pid else 0.0)
    sums = metrics_sums([r.metrics_url for r in relays])
    delta = {k: sums.get(k, 0.0) - sums_before.get(k, 0.0) for k in sums}
    parts = ("client", "relays", "postgresql")
    cpu = {part: round((a - b) / wall, 2) for part, a, b in zip(parts, after, before, strict=True)}
    print(f"[{name}] profiled step: {describe(step)}")
    print(f"[{name}]   CPU cores busy over {wall:.0f} s: client {cpu['client']}, relays {cpu['relays']}, "
          f"PostgreSQL {cpu['postgresql'] if pg_pid else 'n/a'} (of 2)")  # fmt: skip
    out: dict[str, Any] = {"rate": round(rate, 1), "cpu_cores": cpu, "step": describe(step)}
    for kind in ("push", "pull"):
        count = delta.get(f"request_{kind}_count", 0) or 1
        out[f"relay_{kind}_mean_ms"] = round(1000 * delta.get(f"request_{kind}_sum", 0) / count, 1)
    calls = delta.get("storage_run_count", 0) or 1
    out["storage_wait_mean_ms"] = round(1000 * delta.get("storage_wait_sum", 0) / calls, 2)
    out["storage_run_mean_ms"] = round(1000 * delta.get("storage_run_sum", 0) / calls, 2)
    out["storage_calls_per_request"] = round(
        calls / max(1, sum(delta.get(f"request_{k}_count", 0) for k in ("push", "pull", "other"))), 2
    )
    busiest = sorted(
        ((k[5:-8], v) for k, v in delta.items() if k.startswith("call_") and k.endswith("_run_sum")),
        key=lambda kv: -kv[1],
    )[:6]
    out["storage_seconds_by_call"] = {call: round(v, 2) for call, v in busiest}
    print(f"[{name}]   inside the relays, per request: push {out['relay_push_mean_ms']} ms, pull "
          f"{out['relay_pull_mean_ms']} ms mean; per storage call: waiting {out['storage_wait_mean_ms']} ms, running "
          f"{out['storage_run_mean_ms']} ms ({out['storage_calls_per_request']} calls per request); storage seconds "
          f"by call: {out['storage_seconds_by_call']}")  # fmt: skip
    if spy is not None and spy_out.exists():
        out["py_spy"] = summarize_profile(spy_out)
        for line in out["py_spy"]:
            print(f"[{name}]   py-spy, relay 1: {line}")
    else:
        print(f"[{name}]   (py-spy is not installed: pip install py-spy for a sampled profile of relay 1)")
    return out


def run_config(name: str, args: argparse.Namespace, folder: Path, database: str | None, pg_pid: int | None) -> Any:
    count = 1 if database is None else args.relays
    relays = [start_relay(folder, n, database) for n in range(1, count + 1)]
    try:
        result = asyncio.run(measure(name, relays, pg_pid, args, folder))
    finally:
        codes = [stop_relay(r) for r in relays]
    result["relay_exit_codes"] = codes
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--configs", default="sqlite,postgresql", help="which set-ups, in order")
    parser.add_argument("--database", help="a PostgreSQL URL (its data is added to); default: a cluster of its own")
    parser.add_argument("--relays", type=int, default=2, help="relay processes on PostgreSQL")
    parser.add_argument("--accounts", type=int, default=500, help="accounts, of 2 devices each")
    parser.add_argument("--start-rate", type=float, default=100.0, help="operations per second of the first step")
    parser.add_argument("--step-seconds", type=float, default=15.0)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--connections", type=int, default=500, help="the client's connection limit")
    args = parser.parse_args()
    os.environ.setdefault("P2PSYNC_TEST_ONLY_WEAK_KDF", "1")  # no effect on the relay's own hashing
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            folder = Path(tmp) / name
            folder.mkdir()
            if name == "sqlite":
                results.append(run_config(name, args, folder, None, None))
                continue
            cluster = None
            database = args.database
            if database is None:
                from tests import pg_support

                reason = pg_support.unavailable()
                if reason is not None:
                    print(f"[{name}] skipped: {reason}")
                    continue
                cluster = pg_support.start_cluster(durable=True)
                database = cluster.create_database("bench")
            try:
                results.append(run_config(name, args, folder, database, cluster.process.pid if cluster else None))
            finally:
                if cluster is not None:
                    cluster.stop()
    print()
    print(f"highest offered rate with push and pull p99 < 1 s and 0 errors (open loop, {2 * args.accounts:,} devices):")
    heads = [f"{r['config']} x{1 if r['config'] == 'sqlite' else args.relays}" for r in results]
    print(f"{'':24}" + "".join(f"{head:>22}" for head in heads))
    rows = [("best_rate", "operations/s"), ("push_p50_ms", "push p50 ms"), ("push_p99_ms", "push p99 ms")]
    rows += [("pull_p50_ms", "pull p50 ms"), ("pull_p99_ms", "pull p99 ms"), ("errors", "errors")]
    for key, label in rows:
        print(f"{label:24}" + "".join(f"{r.get(key, '-')!s:>22}" for r in results))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
