"""The relay's operations face (relay/operations.py, relay/metrics.py) on a real relay process:
/healthz on the public port and on --metrics-listen, /metrics only on --metrics-listen, read back
with prometheus_client's own parser; counts per route and status, refusals, storage calls, bytes,
requests in flight, a stop in progress; and a database that does not answer (503)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from p2psync.relay.metrics import RelayMetrics
from p2psync.relay.server import make_app
from p2psync.relay.storage import SqliteStorage
from tests.test_relay_server import P2PSYNC, RelayProcess, User, b64, key, new_email

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_url(relay: RelayProcess) -> str:
    """The metrics address from the relay's 'listening' log line (it may have taken any free port)."""
    for line in relay.log_lines():
        record = json.loads(line)
        if record.get("event") == "listening":
            return str(record["metrics"])
    raise AssertionError("no listening line")


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """GET url: status, content type, body text."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/" + path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        conn.close()


def scrape(relay: RelayProcess) -> tuple[Samples, str]:
    status, content_type, text = get(metrics_url(relay))
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4"), (status, content_type)
    samples: Samples = {}
    for family in text_string_to_metric_families(text):  # the reference parser: the page is well formed
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(("p2psync_relay_" + name, frozenset(labels.items())), 0.0)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path / "data", "--metrics-listen", "127.0.0.1:0", "--quota", "200KB")
    yield process
    if process.proc.poll() is None:
        assert process.stop() == 0


def test_metrics_count_requests_by_route_status_and_refusal(relay: RelayProcess) -> None:
    user = User(relay)
    blob = os.urandom(30_000)
    assert user.push((user.device, 1, 1, blob))[0] == 200
    status, body = user.push((user.device, 5, 5, blob))
    assert status == 409 and body["error"] == "gap"
    status, body = user.push((user.device, 2, 2, os.urandom(300_000)))
    assert status == 507 and body["error"] == "quota_exceeded"
    assert user.call("GET", "/changesets?after=0")[0] == 200
    chunk = os.urandom(40_000)
    cid = "ab" * 32
    assert user.call("PUT", f"/chunks/{cid}", raw=chunk)[0] == 201
    status, _ = user.call("GET", f"/chunks/{cid}")
    assert status == 200
    assert relay.call("GET", "/no/such/path")[0] == 404
    assert relay.request("GET", "/healthz", version=None)[0] == 200

    samples, text = scrape(relay)
    requests = "requests_total"
    changesets = "/relay/v1/changesets"
    assert value(samples, requests, route="/relay/v1/signup", method="POST", status="201") == 1
    assert value(samples, requests, route=changesets, method="POST", status="200") == 1
    assert value(samples, requests, route=changesets, method="POST", status="409") == 1
    assert value(samples, requests, route=changesets, method="POST", status="507") == 1
    assert value(samples, requests, route=changesets, method="GET", status="200") == 1
    # a chunk id never becomes a series: the route pattern does
    assert value(samples, requests, route="/relay/v1/chunks/{id}", method="PUT", status="201") == 1
    assert cid not in text
    assert value(samples, requests, route="unmatched", method="GET", status="404") == 1
    assert value(samples, requests, route="/healthz", method="GET", status="200") == 1
    assert value(samples, "refusals_total", code="gap") == 1
    assert value(samples, "refusals_total", code="quota_exceeded") == 1
    assert value(samples, "refusals_total", code="not_found") == 1

    # latency histogram: per route, method and status; cumulative buckets ending in +Inf == count
    labels = {"route": changesets, "method": "POST", "status": "200"}
    assert value(samples, "request_duration_seconds_count", **labels) == 1
    assert value(samples, "request_duration_seconds_bucket", le="+Inf", **labels) == 1
    assert value(samples, "request_duration_seconds_sum", **labels) > 0
    buckets = sorted(
        (float(dict(key[1])["le"]), count)
        for key, count in samples.items()
        if key[0] == "p2psync_relay_request_duration_seconds_bucket" and set(labels.items()) <= key[1]
    )
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)

    # bytes: the base64 of the pushed blob came in, the chunk went out
    assert value(samples, "request_bytes_total", route=changesets) > len(blob) * 4 / 3
    assert value(samples, "request_bytes_total", route="/relay/v1/chunks/{id}") >= len(chunk)
    assert value(samples, "response_bytes_total", route="/relay/v1/chunks/{id}") >= len(chunk)

    # storage calls: measured per call and outcome (a gap is the storage refusing, not failing)
    assert value(samples, "storage_call_seconds_count", call="push", outcome="ok") == 1
    assert value(samples, "storage_call_seconds_count", call="push", outcome="refused") == 2
    assert value(samples, "storage_call_seconds_count", call="pull_page", outcome="ok") == 1
    assert value(samples, "storage_wait_seconds_count", call="token_session") == 6  # each authed request
    assert value(samples, "password_hash_seconds_count") >= 1
    assert value(samples, "info", backend="sqlite", version="0.1.0") == 1
    assert 0 < time.time() - value(samples, "start_time_seconds") < 300
    assert value(samples, "requests_in_flight") == 0 and value(samples, "draining") == 0

    # nothing secret or personal on the page
    assert user.token not in text and user.email not in text and user.account not in text


def test_metrics_only_on_the_metrics_address_and_healthz_on_both(relay: RelayProcess) -> None:
    status, _, body = relay.request("GET", "/metrics")
    assert status == 404 and json.loads(body)["error"] == "not_found"
    for url in (relay.url + "/healthz", metrics_url(relay).replace("/metrics", "/healthz")):
        status, content_type, text = get(url)  # no token, no protocol header
        assert status == 200 and content_type.startswith("text/plain"), url
        assert text.startswith("ok: the database answered a ping in ") and text.endswith(" ms.\n")


def test_in_flight_and_draining_show_while_a_stop_waits_for_an_upload(relay: RelayProcess) -> None:
    body = json.dumps({"email": new_email(), "login_key": b64(key())}).encode()
    health_url = metrics_url(relay).replace("/metrics", "/healthz")
    with socket.create_connection(("127.0.0.1", relay.port), timeout=30) as sock:
        sock.sendall(
            b"POST /relay/v1/signup HTTP/1.1\r\nHost: relay\r\nP2PSync-Protocol: 1\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        deadline = time.monotonic() + 10
        while value(scrape(relay)[0], "requests_in_flight") != 1:
            assert time.monotonic() < deadline, "the slow upload never showed as in flight"
            time.sleep(0.05)
        os.kill(relay.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while value(scrape(relay)[0], "draining") != 1:
            assert time.monotonic() < deadline, "the stop never showed"
            time.sleep(0.05)
        status, _, text = get(health_url)  # a load balancer takes this process out now
        assert status == 503 and text.startswith("stopping: ")
        sock.sendall(body[10:])
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
    assert answer.startswith(b"HTTP/1.1 201")
    assert relay.stop() == 0


def test_healthz_is_503_in_words_when_the_database_does_not_answer(tmp_path: Path) -> None:
    """A real SqliteStorage whose database is gone (closed under the relay): 503, a sentence that
    names the kind of failure, nothing of the database's own message (which may name hosts)."""

    async def scenario() -> tuple[int, str, int, str]:
        storage = SqliteStorage(tmp_path)
        app = make_app(storage, None)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/healthz"
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(url) as response:
                    before = response.status, await response.text()
                storage.db.close()
                async with http.get(url) as response:
                    return (*before, response.status, await response.text())
        finally:
            await runner.cleanup()

    status, text, broken, words = asyncio.run(scenario())
    assert status == 200 and text.startswith("ok:")
    assert broken == 503
    assert words == "unavailable: the database did not answer a ping (ProgrammingError; see the log).\n"
    assert str(tmp_path) not in words


def test_metrics_listen_is_checked(tmp_path: Path) -> None:
    for bad in ("9741", "localhost:", "[::1]:99999", ":9741"):
        done = subprocess.run(
            [*P2PSYNC, "relay", "serve", "--data", str(tmp_path / "a"), "--port", "0", "--metrics-listen", bad],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2 and "HOST:PORT" in done.stderr, (bad, done.stderr)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        metrics = f"127.0.0.1:{port}"
        done = subprocess.run(
            [*P2PSYNC, "relay", "serve", "--data", str(tmp_path / "b"), "--port", "0", "--metrics-listen", metrics],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1 and f"Cannot serve metrics on 127.0.0.1:{port}" in done.stderr, done.stderr
    assert done.stdout == ""


def test_exposition_escapes_label_values_and_counts_buckets() -> None:
    metrics = RelayMetrics("sqlite", "0.1.0", clock=1.0)
    metrics.request_done('a"b\\c\nd', "GET", 200, 0.003, 0, 10)
    metrics.request_done('a"b\\c\nd', "GET", 200, 20.0, 0, 10)
    metrics.storage_done("push", "ok", 0.0001, 1.0)
    text = metrics.render(in_flight=2, draining=False).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    latency = families["p2psync_relay_request_duration_seconds"].samples
    route = {s.labels["route"] for s in latency}
    assert route == {'a"b\\c\nd'}
    by_le = {s.labels["le"]: s.value for s in latency if s.name.endswith("_bucket")}
    assert by_le["0.002"] == 0 and by_le["0.005"] == 1 and by_le["10.0"] == 1 and by_le["+Inf"] == 2
    storage = {s.labels.get("le"): s.value for s in families["p2psync_relay_storage_call_seconds"].samples}
    assert storage["1.0"] == 1 and storage["0.5"] == 0  # a value on a bound counts in that bucket
    assert families["p2psync_relay_requests_in_flight"].samples[0].value == 2


def test_healthz_is_503_when_postgresql_goes_away_and_names_no_database(pg_url: str, tmp_path: Path) -> None:
    """Two relay processes on one PostgreSQL database that is then dropped under them (its
    connections ended by the server): both say 503 in words, without the URL, user or host."""
    from tests.relay_ops_support import relay_as_unit

    relays = [relay_as_unit(pg_url, tmp_path, n) for n in (1, 2)]
    try:
        for relay in relays:
            status, _, text = get(relay.url + "/healthz")
            assert status == 200 and text.startswith("ok: the database answered a ping in "), text
        name = pg_url.rsplit("/", 1)[1]
        admin = pg_url.rsplit("/", 1)[0] + "/postgres"
        import psycopg

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        # Both asked at once: each waits its ping's 5 s out.
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda relay: get(relay.url + "/healthz"), relays))
        for status, _, text in answers:
            assert status == 503 and text.startswith("unavailable: the database did not answer a ping"), text
            assert name not in text and "p2psync_test" not in text and "127.0.0.1" not in text
    finally:
        for relay in relays:  # both told to stop, then both waited for
            relay.terminate()
        for relay in relays:
            assert relay.stop() == 0
