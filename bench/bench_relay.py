"""Relay benchmark (DESIGN.md section 6): many devices pushing and pulling at once. Prints figures.

    python bench/bench_relay.py [--accounts 100] [--rounds 20] [--seconds 120] [--connections 200]

Starts one real relay process on 127.0.0.1 (SQLite + files in a temporary folder), signs up N
accounts with 2 devices each (each device its own login and token), binds each account, then
lets every device run at once: push one change set (a random 2-20 KB blob, first = its head + 1),
then pull everything after its cursor; repeat for the given rounds or until the time is up.
Checks at the end that every account holds exactly what its devices pushed. Prints change sets
pushed per second, p50/p99 latency of push and pull, and the error count; the last line is JSON.
Targets: zero errors, p99 < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent.parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2psync.relay import keyring

API = "/relay/v1"
HEADERS = {"P2PSync-Protocol": "1"}


@dataclass
class Figures:
    push_ms: list[float] = field(default_factory=list)
    pull_ms: list[float] = field(default_factory=list)
    pushed: int = 0
    pulled: int = 0
    errors: list[str] = field(default_factory=list)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def call(
    http: aiohttp.ClientSession, method: str, url: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, json=body, headers=headers) as response:
        data = await response.read()
        return response.status, json.loads(data) if data else None


def proof(email: str) -> dict[str, Any]:
    """A new device's proof of its key: its token may store that device's change sets (relay.md §5)."""
    return keyring.make_proof(Ed25519PrivateKey.generate(), email, time.time()).as_json()


async def make_account(http: aiohttp.ClientSession, base: str, n: int) -> list[tuple[str, str]]:
    """Sign up, bind, and log in a second device: the two devices' tokens and ids."""
    email = f"bench{n}@example.test"
    credentials = {"email": email, "login_key": b64(os.urandom(32))}
    status, first = await call(http, "POST", base + "/signup", body={**credentials, "device": proof(email)})
    assert status == 201, first
    library = base64.b32encode(os.urandom(10)).decode().lower()
    status, bound = await call(
        http, "POST", base + "/bind", first["token"], {"library_id": library, "wrapped_key": b64(os.urandom(60))}
    )
    assert status == 200, bound
    status, second = await call(http, "POST", base + "/login", body={**credentials, "device": proof(email)})
    assert status == 200, second
    return [(first["token"], first["device"]), (second["token"], second["device"])]


async def device(
    http: aiohttp.ClientSession,
    base: str,
    session: tuple[str, str],
    rounds: int,
    deadline: float,
    rng: random.Random,
    out: Figures,
) -> int:
    """One device's sync loop; how many change sets it pushed."""
    token, me = session
    head = cursor = 0
    for _ in range(rounds):
        if time.monotonic() > deadline:
            break
        blob = rng.randbytes(rng.randint(2_000, 20_000))
        item = {"device": me, "first": head + 1, "last": head + 1, "blob": b64(blob)}
        start = time.perf_counter()
        try:
            status, body = await call(http, "POST", base + "/changesets", token, {"items": [item]})
        except aiohttp.ClientError as exc:
            out.errors.append(f"push: {exc!r}")
            continue
        out.push_ms.append((time.perf_counter() - start) * 1000)
        if status != 200 or body != {"stored": 1, "duplicates": 0}:
            out.errors.append(f"push: {status} {body}")
            continue
        head += 1
        out.pushed += 1
        more = True
        while more:
            start = time.perf_counter()
            try:
                status, page = await call(http, "GET", f"{base}/changesets?after={cursor}", token)
            except aiohttp.ClientError as exc:
                out.errors.append(f"pull: {exc!r}")
                break
            out.pull_ms.append((time.perf_counter() - start) * 1000)
            if status != 200:
                out.errors.append(f"pull: {status} {page}")
                break
            if page["items"]:
                cursor = page["items"][-1]["num"]
                out.pulled += len(page["items"])
            more = page["more"]
    return head


async def bench(url: str, accounts: int, rounds: int, seconds: float, connections: int) -> dict[str, Any]:
    base = url + API
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS, timeout=timeout) as http:
        start = time.perf_counter()
        tokens = await asyncio.gather(*(make_account(http, base, n) for n in range(accounts)))
        setup = time.perf_counter() - start
        print(f"{accounts} accounts, {2 * accounts} devices signed up, bound and logged in in {setup:.1f} s")

        out = Figures()
        rng = random.Random(7)
        deadline = time.monotonic() + seconds
        start = time.perf_counter()
        heads = await asyncio.gather(
            *(
                device(http, base, session, rounds, deadline, random.Random(rng.random()), out)
                for pair in tokens
                for session in pair
            )
        )
        elapsed = time.perf_counter() - start

        # Every account holds exactly what its two devices pushed, in one order, nothing lost.
        for n, pair in enumerate(tokens):
            status, state = await call(http, "GET", base + "/state", pair[0][0])
            expected = sorted(heads[2 * n : 2 * n + 2])
            if status != 200 or sorted(state["heads"].values()) != expected or state["last_num"] != sum(expected):
                out.errors.append(f"account {n}: state {state} after pushing {expected}")
    return {
        "devices": 2 * accounts,
        "change_sets_pushed": out.pushed,
        "change_sets_pulled": out.pulled,
        "seconds": round(elapsed, 2),
        "pushes_per_second": round(out.pushed / elapsed, 1),
        "push_p50_ms": round(percentile(out.push_ms, 0.50), 1),
        "push_p99_ms": round(percentile(out.push_ms, 0.99), 1),
        "pull_p50_ms": round(percentile(out.pull_ms, 0.50), 1),
        "pull_p99_ms": round(percentile(out.pull_ms, 0.99), 1),
        "pull_mean_ms": round(statistics.fmean(out.pull_ms), 1) if out.pull_ms else 0.0,
        "errors": len(out.errors),
        "first_errors": out.errors[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20, help="pushes per device")
    parser.add_argument("--seconds", type=float, default=120.0, help="stop starting new rounds after this")
    parser.add_argument("--connections", type=int, default=200, help="the client's connection limit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        relay = subprocess.Popen(
            [
                *(sys.executable, "-m", "p2psync", "relay", "serve"),
                *("--host", "127.0.0.1", "--port", "0", "--data", str(Path(tmp) / "data"), "--json"),
                *("--quota", "unlimited", "--signups-per-hour", str(args.accounts + 10)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # one log line per request: not what this measures
            text=True,
        )
        try:
            assert relay.stdout is not None
            url = json.loads(relay.stdout.readline())["listening"]
            figures = asyncio.run(bench(url, args.accounts, args.rounds, args.seconds, args.connections))
        finally:
            os.kill(relay.pid, signal.SIGTERM)
            figures_exit = relay.wait(60)
    figures["relay_exit_code"] = figures_exit
    print(
        f"{figures['change_sets_pushed']} change sets pushed by {figures['devices']} devices "
        f"in {figures['seconds']} s: {figures['pushes_per_second']} per second; {figures['change_sets_pulled']} pulled"
    )
    print(f"push latency p50 {figures['push_p50_ms']} ms, p99 {figures['push_p99_ms']} ms (target p99 < 1000 ms)")
    print(f"pull latency p50 {figures['pull_p50_ms']} ms, p99 {figures['pull_p99_ms']} ms (target p99 < 1000 ms)")
    print(f"errors: {figures['errors']} (target 0); relay exit code {figures_exit}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
