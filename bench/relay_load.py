"""The open-loop load that bench_relay.py offers a relay: simulated devices, a fixed schedule.

How the parts move. `make_devices` signs up ACCOUNTS accounts with two devices each (each its own
login and token), binds them, and returns the devices. `run_step` lays out RATE x SECONDS
operations on a fixed schedule (operation i at start + i / RATE, round-robin over the devices in
a shuffled order, so each device acts every DEVICES / RATE seconds) and launches each at its
time, whatever became of the ones before: open loop, so a relay that falls behind shows it as
latency instead of slowing the clients down. A device does one thing at a time (its pushes must
arrive in order), so an operation whose device is still busy waits for it; its latency is always
measured from its scheduled time, so that wait counts too. A device's operations cycle through
push, pull, put chunk, pull, push, pull, get chunk, pull: pushes are change sets (2-20 KB) and
chunks (16-64 KB) going up, pulls are change sets after the device's cursor and a chunk its
other device put. Requests go round-robin to the relay processes, as a load balancer would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2psync.relay import keyring

API = "/relay/v1"
HEADERS = {"P2PSync-Protocol": "1"}
REQUEST_SECONDS = 30.0  # one request's limit: beyond it, it is an error
DRAIN_SECONDS = 40.0  # after the schedule ends, how long the last operations may take
CYCLE = ("push", "pull", "put_chunk", "pull", "push", "pull", "get_chunk", "pull")
PUSHES = {"push", "put_chunk"}  # what goes up; the rest comes down


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class Device:
    account: int
    token: str
    device: str
    head: int = 0  # its last stored sequence number
    cursor: int = 0  # the last num it pulled
    step: int = 0  # where it is in CYCLE
    chunks: list[str] = field(default_factory=list)  # chunk ids it put
    partner: Device | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class StepResult:
    rate: float
    seconds: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"push": [], "pull": []})
    errors: list[str] = field(default_factory=list)
    late_start: float = 0.0  # the dispatcher's worst lag behind the schedule (s): the client's own limit
    bytes_up: int = 0
    bytes_down: int = 0

    def percentile(self, kind: str, q: float) -> float:
        values = sorted(self.latencies[kind])
        return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else 0.0

    def passed(self, limit: float = 1.0) -> bool:
        return not self.errors and self.percentile("push", 0.99) < limit and self.percentile("pull", 0.99) < limit


class Http:
    """One aiohttp session; each request to the next relay process in turn."""

    def __init__(self, bases: list[str], connections: int) -> None:
        self.bases = [base + API for base in bases]
        self._turn = 0
        timeout = aiohttp.ClientTimeout(total=REQUEST_SECONDS)
        connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0)
        self.session = aiohttp.ClientSession(connector=connector, headers=HEADERS, timeout=timeout)

    def base(self) -> str:
        self._turn += 1
        return self.bases[self._turn % len(self.bases)]

    async def call(
        self, method: str, path: str, token: str | None = None, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        if body is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, self.base() + path, data=data, headers=headers) as response:
            return response.status, await response.read()

    async def close(self) -> None:
        await self.session.close()


def _proof(email: str) -> dict[str, Any]:
    return keyring.make_proof(Ed25519PrivateKey.generate(), email, time.time()).as_json()


async def make_devices(http: Http, accounts: int, tag: str, parallel: int = 16) -> list[Device]:
    """Sign up, bind, and log in a second device, for every account; `parallel` at a time."""
    gate = asyncio.Semaphore(parallel)

    async def one(n: int) -> list[Device]:
        async with gate:
            email = f"bench-{tag}-{n}@example.test"
            key = {"email": email, "login_key": b64(os.urandom(32))}
            status, raw = await http.call("POST", "/signup", body={**key, "device": _proof(email)})
            assert status == 201, raw
            first = orjson.loads(raw)
            library = base64.b32encode(os.urandom(10)).decode().lower()
            status, raw = await http.call(
                "POST", "/bind", first["token"], {"library_id": library, "wrapped_key": b64(os.urandom(60))}
            )
            assert status == 200, raw
            status, raw = await http.call("POST", "/login", body={**key, "device": _proof(email)})
            assert status == 200, raw
            second = orjson.loads(raw)
            # each device starts at its own place in CYCLE, so that every step offers the same mix
            offsets = random.Random(n).sample(range(len(CYCLE)), 2)
            a = Device(n, first["token"], first["device"], step=offsets[0])
            b = Device(n, second["token"], second["device"], step=offsets[1])
            a.partner, b.partner = b, a
            return [a, b]

    pairs = await asyncio.gather(*(one(n) for n in range(accounts)))
    return [device for pair in pairs for device in pair]


async def _operation(http: Http, device: Device, rng: random.Random, out: StepResult) -> str:
    """The device's next operation; returns its kind. Raises on anything but the expected answer."""
    kind = CYCLE[device.step % len(CYCLE)]
    device.step += 1
    if kind == "push":
        blob = rng.randbytes(rng.randint(2_000, 20_000))
        item = {"device": device.device, "first": device.head + 1, "last": device.head + 1, "blob": b64(blob)}
        status, raw = await http.call("POST", "/changesets", device.token, {"items": [item]})
        if status != 200 or orjson.loads(raw) != {"stored": 1, "duplicates": 0}:
            raise RuntimeError(f"push {status} {raw[:200]!r}")
        device.head += 1
        out.bytes_up += len(blob)
    elif kind == "pull":
        return await _pull(http, device, out)
    elif kind == "put_chunk":
        blob = rng.randbytes(rng.randint(16_000, 64_000))
        chunk = hashlib.sha256(blob).hexdigest()
        status, raw = await http.call("PUT", f"/chunks/{chunk}", device.token, raw=blob)
        if status != 201:
            raise RuntimeError(f"put chunk {status} {raw[:200]!r}")
        device.chunks.append(chunk)
        out.bytes_up += len(blob)
    else:
        source = device.partner.chunks if device.partner and device.partner.chunks else device.chunks
        if not source:  # nothing put yet in this account: pull change sets instead
            return await _pull(http, device, out)
        status, raw = await http.call("GET", f"/chunks/{source[-1]}", device.token)
        if status != 200:
            raise RuntimeError(f"get chunk {status} {raw[:200]!r}")
        out.bytes_down += len(raw)
    return "push" if kind in PUSHES else "pull"


async def _pull(http: Http, device: Device, out: StepResult) -> str:
    status, raw = await http.call("GET", f"/changesets?after={device.cursor}", device.token)
    if status != 200:
        raise RuntimeError(f"pull {status} {raw[:200]!r}")
    items = orjson.loads(raw)["items"]
    if items:
        device.cursor = items[-1]["num"]
    out.bytes_down += len(raw)
    return "pull"


async def run_step(
    http: Http,
    devices: list[Device],
    rate: float,
    seconds: float,
    seed: int,
    during: Callable[[], Awaitable[None]] | None = None,
) -> StepResult:
    """Offer `rate` operations per second for `seconds`; wait (bounded) for the last ones."""
    out = StepResult(rate, seconds)
    rng = random.Random(seed)
    order = devices[:]
    rng.shuffle(order)
    count = int(rate * seconds)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []

    async def act(device: Device, scheduled: float, op_rng: random.Random) -> None:
        try:
            async with device.lock:  # one operation of a device at a time, in schedule order
                kind = await _operation(http, device, op_rng, out)
            out.latencies[kind].append(loop.time() - scheduled)
        except (aiohttp.ClientError, TimeoutError, RuntimeError, AssertionError) as exc:
            out.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    side = asyncio.ensure_future(during()) if during is not None else None
    start = loop.time() + 0.1
    i = 0
    while i < count:  # bounded: count operations, each launched once
        now = loop.time()
        due = start + i / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        out.late_start = max(out.late_start, now - due)
        while i < count and start + i / rate <= now:
            tasks.append(asyncio.create_task(act(order[i % len(order)], start + i / rate, random.Random(rng.random()))))
            i += 1
    done, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS) if tasks else (set(), set())
    for task in pending:
        task.cancel()
        out.errors.append("not answered within the drain time")
    if pending:
        await asyncio.wait(pending, timeout=10)
    if side is not None:
        await side
    del done
    return out


async def check_accounts(http: Http, devices: list[Device]) -> list[str]:
    """Every account holds exactly what its devices pushed: heads and the count of change sets."""
    problems: list[str] = []
    gate = asyncio.Semaphore(32)

    async def one(a: Device) -> None:
        assert a.partner is not None
        async with gate:
            status, raw = await http.call("GET", "/state", a.token)
        state = orjson.loads(raw) if status == 200 else {}
        expected = {a.device: a.head, a.partner.device: a.partner.head}
        heads = {d: h for d, h in state.get("heads", {}).items() if h}
        if heads != {d: h for d, h in expected.items() if h} or state.get("last_num") != a.head + a.partner.head:
            problems.append(f"account {a.account}: relay {state} after pushing {expected}")

    await asyncio.gather(*(one(d) for d in devices[::2]))
    return problems
