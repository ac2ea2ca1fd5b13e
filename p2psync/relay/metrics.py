"""The relay's own counters, written out in the Prometheus text exposition format (0.0.4).

How the parts move: the access middleware (server.py) calls `request_done` once per request with
its route (the route's pattern, `/relay/v1/chunks/{id}`, never the path a client sent, so that no
one can make a series per chunk id), method, status, seconds and bytes; `Relay.call` calls
`storage_done` with how long a storage call waited for the storage thread and how long it ran;
`Relay.hash` calls `hash_done`. `render` writes everything as one text page for `GET /metrics`.
Every update and the rendering run on the event loop's thread, so nothing here needs a lock.

Hand-written rather than prometheus_client (on PyPI, well kept): the format is a few lines of
text; the counters belong to one application object, not to prometheus_client's process-wide
registry (the tests build several relays in one process); and each relay process is scraped on
its own address, so prometheus_client's multi-process mode (a folder of mmap files) has nothing
to do. The tests read the page back with prometheus_client's own parser.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds. From a 2 ms SQLite read to a 10 s push queued behind a slow disk; the 1 s alert
# threshold (docs/relay-operations.md) is a bucket edge, so "share of requests over 1 s" is exact.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PREFIX = "p2psync_relay_"

Labels = tuple[tuple[str, str], ...]


@dataclass
class Histogram:
    """Cumulative buckets as Prometheus counts them: bucket i holds every value <= bounds[i]."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: Labels) -> Iterable[str]:
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            yield f"{name}_bucket{_labels((*labels, ('le', repr(float(bound)))))} {running}"
        yield f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {self.count}"
        yield f"{name}_sum{_labels(labels)} {_number(self.total)}"
        yield f"{name}_count{_labels(labels)} {self.count}"


@dataclass
class Family:
    """One metric name: its help text, its type, and a value or histogram per label set."""

    name: str
    kind: str  # counter, gauge or histogram
    help: str
    bounds: tuple[float, ...] = ()
    values: dict[Labels, float] = field(default_factory=dict)
    histograms: dict[Labels, Histogram] = field(default_factory=dict)

    def add(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def observe(self, labels: Labels, value: float) -> None:
        histogram = self.histograms.get(labels)
        if histogram is None:
            histogram = self.histograms[labels] = Histogram(self.bounds)
        histogram.observe(value)

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels in sorted(self.values):
            yield f"{self.name}{_labels(labels)} {_number(self.values[labels])}"
        for labels in sorted(self.histograms):
            yield from self.histograms[labels].lines(self.name, labels)


class RelayMetrics:
    """Everything `/metrics` shows for one relay process."""

    def __init__(self, backend: str, version: str, clock: float | None = None) -> None:
        def family(name: str, kind: str, text: str, bounds: tuple[float, ...] = ()) -> Family:
            made = Family(PREFIX + name, kind, text, bounds)
            self.families.append(made)
            return made

        self.families: list[Family] = []
        self.info = family("info", "gauge", "Always 1; the labels say which p2psync and which storage backend.")
        self.started = family("start_time_seconds", "gauge", "When this relay process started (Unix time).")
        self.requests = family(
            "requests_total", "counter", "Requests answered, by route pattern, method and status (499: client left)."
        )
        self.latency = family(
            "request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its answer, by route pattern, method and status.",
            LATENCY_BUCKETS,
        )
        self.in_flight = family("requests_in_flight", "gauge", "Requests being answered now.")
        self.bytes_in = family("request_bytes_total", "counter", "Request body bytes read, by route pattern.")
        self.bytes_out = family("response_bytes_total", "counter", "Response body bytes sent, by route pattern.")
        self.refusals = family(
            "refusals_total", "counter", "Error answers by their code (protocol/relay.md), e.g. gap, quota_exceeded."
        )
        self.storage_wait = family(
            "storage_wait_seconds",
            "histogram",
            "Time a storage call waited for the storage to take it, by call.",
            STORAGE_BUCKETS,
        )
        self.storage_run = family(
            "storage_call_seconds",
            "histogram",
            "Time a storage call ran (database and blobs), by call and outcome (ok, refused, error).",
            STORAGE_BUCKETS,
        )
        self.hashing = family(
            "password_hash_seconds", "histogram", "Time a password hash took on the hashing pool.", STORAGE_BUCKETS
        )
        self.draining = family("draining", "gauge", "1 while the relay is stopping (it answers what is in flight).")
        self.info.set((("backend", backend), ("version", version)), 1)
        self.started.set((), time.time() if clock is None else clock)

    def request_done(self, route: str, method: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        labels = (("method", method), ("route", route), ("status", str(status)))
        self.requests.add(labels)
        self.latency.observe(labels, seconds)
        self.bytes_in.add((("route", route),), bytes_in)
        self.bytes_out.add((("route", route),), bytes_out)

    def refused(self, code: str) -> None:
        self.refusals.add((("code", code),))

    def storage_done(self, call: str, outcome: str, waited: float, ran: float) -> None:
        self.storage_wait.observe((("call", call),), waited)
        self.storage_run.observe((("call", call), ("outcome", outcome)), ran)

    def hash_done(self, seconds: float) -> None:
        self.hashing.observe((), seconds)

    def render(self, in_flight: int, draining: bool) -> bytes:
        self.in_flight.set((), in_flight)
        self.draining.set((), 1 if draining else 0)
        return ("\n".join(line for family in self.families for line in family.lines()) + "\n").encode()


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)
