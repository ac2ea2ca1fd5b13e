"""Several relay processes on one PostgreSQL database (issue 21, point 2): every rule holds across
processes because the database enforces it. Real `p2psync relay serve` processes (started as
deploy/p2psync-relay@.service starts them) on a cluster the tests start themselves; real devices
(libraries and the relay client) and raw HTTP where a test needs exact timing.

- two devices of one account syncing at the same moment, each through its own process;
- two devices uploading change sets, chunks and the same chunks at once through different
  processes: every change set stored once, in order, every chunk once, the usage exact;
- the quota exact when uploads race through both processes;
- a process SIGKILLed in the middle of an upload: the device finishes through the other process,
  nothing lost, nothing stored twice (raw, and a real device with an attachment through nginx).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from p2psync.store import relay_state
from p2psync.store.library import Library
from tests.relay_ops_support import (
    Device,
    Nginx,
    ServedRelay,
    nginx_binary,
    relay_as_unit,
    relay_requests,
    scrape,
    self_signed,
)
from tests.sync_support import digest
from tests.test_relay_server import proof

T = TypeVar("T")
API = "/relay/v1"


# --- two relay processes on one database -------------------------------------------------------


@pytest.fixture
def pair(pg_url: str, tmp_path: Path) -> Iterator[list[ServedRelay]]:
    relays = [relay_as_unit(pg_url, tmp_path, n, "--signups-per-hour", "1000", "--quota", "1GB") for n in (1, 2)]
    yield relays
    for relay in relays:
        if relay.proc.poll() is None:
            assert relay.stop() == 0


def at_once(*calls: Callable[[], T]) -> list[T]:
    """Run the calls on threads of their own, released together; their results (or raise)."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        start.wait(30)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result(timeout=300) for f in [pool.submit(run, call) for call in calls]]


def db(pg_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(pg_url, autocommit=True)


def stored_exactly_once(pg_url: str, account: str) -> dict[str, int]:
    """The relay's own bookkeeping, read from the database: each device's change sets form one
    unbroken run 1..head without overlap, every row names a blob that is there, and the account's
    usage is exactly the sum of what it stores. Returns the heads."""
    with db(pg_url) as conn:
        rows = conn.execute(
            "SELECT device, first, last, size, blob FROM changesets WHERE account = %s ORDER BY num", [account]
        ).fetchall()
        chunks = conn.execute("SELECT size, blob FROM chunks WHERE account = %s", [account]).fetchall()
        blobs = {
            name: size
            for name, size in conn.execute(
                "SELECT name, octet_length(data) FROM blobs WHERE account = %s", [account]
            ).fetchall()
        }
        (used,) = conn.execute("SELECT used_bytes FROM accounts WHERE id = %s", [account]).fetchone() or (None,)
        heads = dict(conn.execute("SELECT device, last FROM heads WHERE account = %s", [account]).fetchall())
    seen: dict[str, int] = {}
    for device, first, last, size, blob in rows:
        assert first == seen.get(device, 0) + 1, f"{device}: {first} after {seen.get(device, 0)}"
        seen[device] = last
        assert blobs.get(blob) == size, f"change set {device} {first}: blob {blob} missing or of another size"
    for size, blob in chunks:
        assert blobs.get(blob) == size
    assert seen == heads
    assert used == sum(r[3] for r in rows) + sum(c[0] for c in chunks)
    return heads


# --- raw HTTP, for exact timing ----------------------------------------------------------------


def request(
    url: str, method: str, path: str, body: Any = None, *, raw: bytes | None = None, token: str | None = None
) -> tuple[int, Any]:
    host_port = url.removeprefix("http://")
    host, _, port = host_port.rpartition(":")
    headers = {"P2PSync-Protocol": "1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, API + path, payload, headers)
        response = conn.getresponse()
        data = response.read()
        if response.getheader("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(data)
        return response.status, data
    finally:
        conn.close()


class Client:
    """One device of an account, speaking to whichever relay process it is given."""

    def __init__(self, token: str, device: str, account: str) -> None:
        self.token, self.device, self.account = token, device, account

    @classmethod
    def signup(cls, url: str) -> tuple[Client, str, bytes]:
        email = f"{uuid.uuid4().hex[:12]}@example.test"
        login_key = os.urandom(32)
        body = {"email": email, "login_key": b64(login_key), "device": proof(email)}
        status, made = request(url, "POST", "/signup", body)
        assert status == 201, made
        return cls(made["token"], made["device"], made["account"]), email, login_key

    @classmethod
    def login(cls, url: str, email: str, login_key: bytes) -> Client:
        body = {"email": email, "login_key": b64(login_key), "device": proof(email)}
        status, made = request(url, "POST", "/login", body)
        assert status == 200, made
        return cls(made["token"], made["device"], made["account"])

    def push(self, url: str, first: int, blob: bytes) -> tuple[int, Any]:
        item = {"device": self.device, "first": first, "last": first, "blob": b64(blob)}
        return request(url, "POST", "/changesets", {"items": [item]}, token=self.token)

    def put_chunk(self, url: str, chunk_id: str, blob: bytes) -> int:
        return request(url, "PUT", f"/chunks/{chunk_id}", raw=blob, token=self.token)[0]

    def get(self, url: str, path: str) -> Any:
        status, body = request(url, "GET", path, token=self.token)
        assert status == 200, body
        return body

    def pull_all(self, url: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for _ in range(10_000):
            page = self.get(url, f"/changesets?after={items[-1]['num'] if items else 0}")
            items += page["items"]
            if not page["more"]:
                return items
        raise AssertionError("pull never ended")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- real devices through different processes --------------------------------------------------


def test_devices_sync_at_the_same_moment_each_through_its_own_process(pair: list[ServedRelay], tmp_path: Path) -> None:
    one, two = pair
    home, work = Device.make(tmp_path / "home").init(), Device.make(tmp_path / "work")
    home.add("Shared from the start")
    assert home.account("signup", one.url, "ada@example.org")["mode"] == "bound"
    assert work.account("login", two.url, "ada@example.org")["mode"] == "joined"
    expected = {"Shared from the start"}
    for round_ in range(3):
        for device, name in ((home, "home"), (work, "work")):
            for n in range(2):
                device.add(f"{name} round {round_} paper {n}")
                expected.add(f"{name} round {round_} paper {n}")
        reports = at_once(home.sync, work.sync)  # two processes (devices) at once, each on its own relay
        assert [r["relay"]["error"] for r in reports] == [None, None], reports
        assert all(not r["relay"]["received"]["rejected"] for r in reports)
    for device in (home, work, home):  # what the other pushed during the last round
        assert device.sync()["relay"]["error"] is None
    assert home.titles() == work.titles() == expected
    assert same_library(home, work)
    served = [relay_requests(scrape(relay.metrics_url or "")) for relay in pair]
    assert all(count >= 10 for count in served), served


def test_two_devices_upload_attachments_at_once_through_different_processes(
    pair: list[ServedRelay], pg_url: str, tmp_path: Path
) -> None:
    one, two = pair
    home, work = Device.make(tmp_path / "home").init(), Device.make(tmp_path / "work")
    home.account("signup", one.url, "grace@example.org")
    work.account("login", two.url, "grace@example.org")
    files: dict[str, bytes] = {}
    for round_ in range(3):
        for device, name in ((home, "home"), (work, "work")):
            data = b"%PDF-1.7\n" + os.urandom(1_500_000)
            path = tmp_path / f"{name}-{round_}.pdf"
            path.write_bytes(data)
            device.json("attach", device.add(f"{name} {round_}"), str(path))
            files[f"{name} {round_}"] = data
        reports = at_once(home.sync, work.sync)
        assert [r["relay"]["error"] for r in reports] == [None, None], reports
        assert all(r["relay"]["attachments"]["chunks_sent"] > 0 for r in reports)
    for device in (home, work, home, work):
        assert device.sync()["relay"]["error"] is None
    for device in (home, work):
        library = Library.open(device.library)
        for ref in library.list_references():
            (attachment,) = library.list_attachments(ref["id"], scan=False)
            path = library.attachment_path(ref["id"], attachment["name"])
            assert path.read_bytes() == files[ref["title"]], ref["title"]
        library.close()
    assert same_library(home, work)
    assert len(stored_exactly_once(pg_url, account_of(pg_url, "grace@example.org"))) == 2


def same_library(*devices: Device) -> bool:
    digests = set()
    for device in devices:
        library = Library.open(device.library)
        digests.add(digest(library))
        library.close()
    return len(digests) == 1


# --- raw uploads racing through both processes -------------------------------------------------


def test_change_sets_and_the_same_chunks_at_once_through_both_processes_are_stored_once(
    pair: list[ServedRelay], pg_url: str
) -> None:
    one, two = pair
    x, email, login_key = Client.signup(one.url)
    y = Client.login(two.url, email, login_key)
    shared = [os.urandom(20_000) for _ in range(30)]  # both devices put these: stored once each
    own = {x.device: [os.urandom(5_000) for _ in range(40)], y.device: [os.urandom(5_000) for _ in range(40)]}

    def upload(client: Client, url: str, other: str) -> list[int]:
        statuses = []
        for n, blob in enumerate(own[client.device], start=1):
            status, body = client.push(url if n % 2 else other, n, blob)  # alternate processes too
            assert status == 200 and body == {"stored": 1, "duplicates": 0}, body
            statuses.append(client.put_chunk(url, sha(shared[n % len(shared)]), shared[n % len(shared)]))
        return statuses

    puts = at_once(lambda: upload(x, one.url, two.url), lambda: upload(y, two.url, one.url))
    # every shared chunk was created exactly once across both devices and both processes
    created = sum(status == 201 for statuses in puts for status in statuses)
    assert created == len(shared) and all(s in (200, 201) for statuses in puts for s in statuses)
    info = x.get(two.url, "/account")
    assert info["change_sets"] == 80 and info["chunks"] == len(shared)
    assert info["used_bytes"] == 80 * 5_000 + 30 * 20_000
    items = x.pull_all(one.url)
    assert [i["num"] for i in items] == list(range(1, 81))
    for device, blobs in own.items():
        mine = [i for i in items if i["device"] == device]
        assert [(i["first"], base64.b64decode(i["blob"])) for i in mine] == list(enumerate(blobs, start=1))
    assert stored_exactly_once(pg_url, x.account) == {x.device: 40, y.device: 40}


def test_the_quota_is_exact_when_uploads_race_through_both_processes(pg_url: str, tmp_path: Path) -> None:
    quota, size = 500_000, 5_000  # room for exactly 100 chunks
    relays = [relay_as_unit(pg_url, tmp_path, n, "--signups-per-hour", "1000", "--quota", str(quota)) for n in (1, 2)]
    try:
        x, email, login_key = Client.signup(relays[0].url)
        y = Client.login(relays[1].url, email, login_key)

        def fill(client: Client, url: str) -> list[int]:
            statuses = []
            for _ in range(200):  # bounded: at most 200 tries per thread, the quota stops far earlier
                blob = os.urandom(size)
                status = client.put_chunk(url, sha(blob), blob)
                statuses.append(status)
                if status == 507:
                    return statuses
            raise AssertionError("the quota never refused")

        results = at_once(*(lambda c=c, u=u: fill(c, u) for c in (x, y) for u in (relays[0].url, relays[1].url)))
        stored = sum(status == 201 for statuses in results for status in statuses)
        assert stored == quota // size, stored  # not one more (overshoot) and not one fewer (a lost update)
        assert all(statuses[-1] == 507 and set(statuses[:-1]) == {201} for statuses in results)
        info = x.get(relays[1].url, "/account")
        assert info["used_bytes"] == quota and info["chunks"] == quota // size
        status, body = x.push(relays[0].url, 1, b"x")
        assert status == 507 and body["error"] == "quota_exceeded" and body["used_bytes"] == quota
        stored_exactly_once(pg_url, x.account)
    finally:
        for relay in relays:
            assert relay.stop() == 0


def test_a_process_killed_mid_upload_and_the_device_finishes_through_the_other(
    pair: list[ServedRelay], pg_url: str
) -> None:
    one, two = pair
    client, _, _ = Client.signup(one.url)
    sets = [os.urandom(100_000) for _ in range(150)]
    chunks = {sha(blob): blob for blob in (os.urandom(100_000) for _ in range(150))}
    answered = {"sets": 0, "chunks": 0}

    def upload(url: str, deadline: float) -> None:
        """Push change sets from the relay's head on and put the chunks it lacks, interleaved."""
        head = client.get(url, "/state")["heads"].get(client.device, 0)
        missing = [cid for cid in chunks if not _has(client, url, cid)]
        for n in range(head + 1, len(sets) + 1):
            assert time.monotonic() < deadline
            status, body = client.push(url, n, sets[n - 1])
            assert status == 200 and body == {"stored": 1, "duplicates": 0}, body
            answered["sets"] += 1
            if missing:
                cid = missing.pop()
                assert client.put_chunk(url, cid, chunks[cid]) == 201
                answered["chunks"] += 1
        for cid in missing:
            assert client.put_chunk(url, cid, chunks[cid]) == 201

    killer = threading.Thread(target=_kill_when, args=(one, lambda: answered["sets"] >= 30))
    killer.start()
    try:
        upload(one.url, time.monotonic() + 120)
        raise AssertionError("the upload finished before the process was killed")
    except (ConnectionError, http.client.HTTPException, OSError):
        pass  # process 1 died under the upload
    finally:
        killer.join(60)
    assert one.proc.returncode is not None and one.proc.returncode < 0  # SIGKILLed
    before = dict(answered)
    upload(two.url, time.monotonic() + 120)  # the device goes on through process 2, from its heads
    assert before["sets"] >= 30

    items = client.pull_all(two.url)
    assert [(i["first"], base64.b64decode(i["blob"])) for i in items] == list(enumerate(sets, start=1))
    for cid, blob in chunks.items():
        status, data = request(two.url, "GET", f"/chunks/{cid}", token=client.token)
        assert status == 200 and data == blob
    info = client.get(two.url, "/account")
    assert info["change_sets"] == len(sets) and info["chunks"] == len(chunks)
    assert info["used_bytes"] == sum(map(len, sets)) + sum(map(len, chunks.values()))
    stored_exactly_once(pg_url, client.account)


def _has(client: Client, url: str, cid: str) -> bool:
    status, body = request(url, "POST", "/chunks/have", {"ids": [cid]}, token=client.token)
    assert status == 200, body
    return bool(body["have"][0])


def _kill_when(relay: ServedRelay, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.005)
    relay.kill()


def test_a_device_finishes_an_attachment_through_nginx_after_a_process_is_killed_under_it(
    pair: list[ServedRelay], pg_url: str, tmp_path: Path
) -> None:
    """A real device (the CLI) uploading a 24 MB attachment through nginx in front of both
    processes; process 1 is SIGKILLed while chunks are going up through it. The device syncs again,
    through process 2, and finishes; another device receives the file byte for byte; the relay
    holds every chunk and change set once."""
    if nginx_binary() is None:
        pytest.skip("nginx tests skipped: no nginx here (apt-get install nginx; make test does it as root)")
    cert, key = self_signed(tmp_path)
    (tmp_path / "nginx").mkdir()
    proxy = Nginx(tmp_path / "nginx", [relay.port for relay in pair], cert, key)
    try:
        url = f"https://localhost:{proxy.port}"
        home = Device.make(tmp_path / "home", cert).init()
        assert home.account("signup", url, "kim@example.org")["sync"]["error"] is None
        data = b"%PDF-1.7\n" + os.urandom(24_000_000)
        (tmp_path / "big.pdf").write_bytes(data)
        ref = home.add("Big")
        home.json("attach", ref, str(tmp_path / "big.pdf"))
        one = pair[0]

        def chunk_puts() -> float:
            samples = scrape(one.metrics_url or "")
            return sum(
                count
                for (name, labels), count in samples.items()
                if name == "p2psync_relay_requests_total" and ("route", "/relay/v1/chunks/{id}") in labels
                and ("method", "PUT") in labels
            )  # fmt: skip

        killer = threading.Thread(target=_kill_when, args=(one, lambda: _safe(chunk_puts) >= 40))
        killer.start()
        runs = [home.run("sync", "--relay-only", "--json")]
        killer.join(60)
        assert one.proc.returncode is not None and one.proc.returncode < 0, "process 1 was not killed mid-upload"
        for _ in range(3):  # bounded: the next sync normally finishes
            if runs[-1].returncode == 0 and json.loads(runs[-1].stdout)["relay"]["error"] is None:
                break
            runs.append(home.run("sync", "--relay-only", "--json"))
        assert runs[-1].returncode == 0 and len(runs) >= 2, [r.stderr for r in runs]
        library = Library.open(home.library)
        assert not relay_state.files_to_push(library)
        library.close()

        work = Device.make(tmp_path / "work", cert)
        joined = work.account("login", url, "kim@example.org")
        assert joined["mode"] == "joined" and joined["sync"]["attachments"]["files"] == 1
        library = Library.open(work.library)
        assert library.attachment_path(ref, "big.pdf").read_bytes() == data
        library.close()
        stored_exactly_once(pg_url, account_of(pg_url, "kim@example.org"))
    finally:
        assert proxy.stop() == 0


def _safe(read: Callable[[], float]) -> float:
    try:
        return read()
    except OSError:
        return 0.0


def account_of(pg_url: str, email: str) -> str:
    with db(pg_url) as conn:
        row = conn.execute("SELECT id FROM accounts WHERE email = %s", [email]).fetchone()
    assert row is not None
    return str(row[0])
