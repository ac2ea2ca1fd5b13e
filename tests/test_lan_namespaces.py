"""Several machines on a private LAN (network namespaces, tests/netns.py), each running the real
`p2psync` command: daemons that find each other by mDNS, changes travelling A -> B -> C, a cable cut
in the middle of a large first sync, and a machine whose clock is three hours off.

Everything that multicasts runs inside namespaces the test made, so nothing reaches the host's
real interfaces. Each test skips (with the reason) only where namespaces cannot be made. Every wait
is bounded; a daemon's stderr (its log, in words) is shown when a wait fails.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2psync.store import peers as peer_store
from p2psync.store.library import Library
from p2psync.store.schema import LOCAL_COLUMNS, REPLICATED_TABLES
from tests import netns
from tests.netns import JsonLines, Lab
from tests.sync_support import digest, founded, joined

lab = netns.lab  # the fixture: `lab(n)` makes a Lab that is closed after the test

REPO = Path(__file__).resolve().parent.parent
P2PSYNC = [sys.executable, "-m", "p2psync"]
WAIT = 20.0  # seconds: the bound on any one wait for the network (the target is about a second)
SKEW_SECONDS = 3 * 3600
# A machine whose clock is three hours ahead: only this process's time.time/time_ns are shifted,
# before p2psync is imported (so every `import time` inside it sees the shifted functions).
SKEWED = [
    sys.executable,
    "-c",
    "import sys, time\n"
    f"_time, _time_ns = time.time, time.time_ns\n"
    f"time.time = lambda: _time() + {SKEW_SECONDS}\n"
    f"time.time_ns = lambda: _time_ns() + {SKEW_SECONDS} * 10**9\n"
    "from p2psync.cli import main\n"
    "sys.argv[0] = 'p2psync'\n"
    "main()\n",
]


@pytest.fixture(autouse=True)
def _no_library_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("P2PSYNC_LIBRARY", raising=False)  # every command here names its library


class Daemon:
    """`p2psync daemon --json` on one machine of the lab; stop() is a clean SIGTERM."""

    def __init__(self, net: Lab, machine: int, library: Path, *extra: str, argv: list[str] = P2PSYNC) -> None:
        self.library = library
        self.out = JsonLines(
            net.popen(machine, [*argv, "daemon", "--library", str(library), "--json", *extra], cwd=REPO)
        )
        first = self.out.expect(lambda m: "listening" in m, WAIT, "the daemon listening")
        self.port = int(first["listening"].rsplit(":", 1)[1])
        self.device: str = first["device_id"]

    def log(self) -> str:
        return self.out.stderr_text(80)

    def stop(self) -> str:
        """SIGTERM, then the exit code must be 0 within the bound; returns its log."""
        self.out.proc.send_signal(signal.SIGTERM)
        code = self.out.wait(WAIT)
        assert code == 0, self.log()
        return self.log()


def cli(net: Lab, machine: int, *args: str | Path, argv: list[str] = P2PSYNC) -> str:
    """Run one p2psync command on a machine; it must succeed. Returns its stdout."""
    done = net.run(machine, [*argv, *map(str, args)], timeout=60)
    assert done.returncode == 0, f"p2psync {' '.join(map(str, args))}: exit {done.returncode}\n{done.stderr}"
    return done.stdout


def titles(path: Path) -> set[str]:
    with Library.open(path) as library:
        return {r["title"] for r in library.list_references()}


def wait_until(condition: Callable[[], bool], what: str, *daemons: Daemon, limit: float = WAIT) -> float:
    """Seconds until condition() held (polled every 50 ms); AssertionError with the logs after limit."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if condition():
            return time.monotonic() - start
        time.sleep(0.05)
    logs = "\n".join(f"--- daemon on {d.library.name}:\n{d.log()}" for d in daemons)
    raise AssertionError(f"{what}: not within {limit:g} s\n{logs}")


def settles(daemons: list[Daemon], window: float = 1.5, limit: float = WAIT) -> float:
    """Seconds until no daemon has synced for `window` seconds: news is passed on, then it stops
    (a forwarding loop would keep the logs growing and fail this after `limit`)."""

    def syncs() -> int:
        return sum(d.out.stderr_text(10**6).count("synced with") for d in daemons)

    start = time.monotonic()
    last, since = syncs(), time.monotonic()
    while time.monotonic() - start < limit:
        time.sleep(0.1)
        now = syncs()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= window:
            return since - start
    logs = "\n".join(f"--- daemon on {d.library.name}:\n{d.log()}" for d in daemons)
    raise AssertionError(f"the daemons kept syncing for {limit:g} s\n{logs}")


def arrives(path: Path, title: str, *daemons: Daemon, limit: float = WAIT) -> float:
    return wait_until(lambda: title in titles(path), f"{title!r} reaching {path.name}", *daemons, limit=limit)


def make_libraries(tmp_path: Path, *names: str) -> list[Path]:
    """A founds the library and introduces B; with a third, B (not A) introduces C. Set up with the
    library API, as pairing would leave them; nobody knows anybody's address yet."""
    paths = [tmp_path / name.lower() for name in names]
    a = founded(paths[0], names[0])
    b = joined(a, paths[1], names[1])
    opened = [a, b]
    if len(names) > 2:
        opened.append(joined(b, paths[2], names[2]))
    for library in opened:
        library.close()
    return paths


# --- (a) two daemons find each other ------------------------------------------------------------


def test_daemons_find_each_other_by_mdns_and_sync_edits(lab: Callable[[int], Lab], tmp_path: Path) -> None:
    net = lab(2)
    pa, pb = make_libraries(tmp_path, "A", "B")
    # The default --listen (every address, port 47625) and no --address: only mDNS can bring them together.
    a = Daemon(net, 1, pa)
    b = Daemon(net, 2, pb)
    ref_id = cli(net, 1, "ref", "add", "--title", "Made on A", "--library", pa).strip()
    took_ab = arrives(pb, "Made on A", a, b)
    cli(net, 2, "ref", "edit", ref_id, "--title", "Edited on B", "--library", pb)
    took_ba = arrives(pa, "Edited on B", a, b)
    log_a, log_b = a.stop(), b.stop()
    with Library.open(pa) as la, Library.open(pb) as lb:
        assert digest(la) == digest(lb)
        assert titles(pa) == {"Edited on B"}
        # B reached A where mDNS said, at the default port. (B's last sync, on its stop, found A gone.)
        [status_a] = [p for p in peer_store.peer_status(lb) if p.device_id == la.device_id]
        assert status_a.address == f"{net.address(1)}:47625" and status_a.last_sync is not None
    assert "Announcing this device on the LAN at 198.18.0.1:47625" in log_a, log_a
    assert re.search(r"synced with .* at 198\.18\.0\.1:47625", log_b), log_b
    print(f"edit A -> B visible after {took_ab:.2f} s, B -> A after {took_ba:.2f} s")


def test_without_multicast_the_daemon_says_so_and_syncs_at_given_addresses(
    lab: Callable[[int], Lab], tmp_path: Path
) -> None:
    net = lab(2)
    pa, pb = make_libraries(tmp_path, "A", "B")
    b = Daemon(net, 2, pb, "--no-mdns")
    # 198.18.0.2 is not machine 1's address: mDNS cannot bind there, exactly as on a host without multicast.
    a = Daemon(net, 1, pa, "--mdns-interface", net.address(2), "--address", f"{net.address(2)}:{b.port}")
    cli(net, 1, "ref", "add", "--title", "Sent without mDNS", "--library", pa)
    arrives(pb, "Sent without mDNS", a, b)
    log_a = a.stop()
    b.stop()
    assert "mDNS discovery could not start on 198.18.0.2" in log_a, log_a
    assert "Syncing goes on with the addresses given and those remembered." in log_a, log_a


# --- (b) three machines: membership signed by B, changes forwarded through B --------------------


def test_three_machines_c_introduced_by_b_gets_a_edits_also_through_b(
    lab: Callable[[int], Lab], tmp_path: Path
) -> None:
    net = lab(3)
    pa, pb, pc = make_libraries(tmp_path, "A", "B", "C")
    with Library.open(pa) as la, Library.open(pc) as lc:
        c_id = lc.device_id
        assert c_id not in {d["device_id"] for d in la.devices()}  # A has never heard of C
    a, b, c = Daemon(net, 1, pa), Daemon(net, 2, pb), Daemon(net, 3, pc)
    ref_id = cli(net, 1, "ref", "add", "--title", "From A", "--library", pa).strip()
    took = arrives(pc, "From A", a, b, c)
    settles([a, b, c])  # and then all three fall quiet: passing news on does not ping-pong
    with Library.open(pa) as la, Library.open(pc) as lc:
        # C took A's signed change sets: A is a member for C, and B's signed introduction of C reached A.
        assert c_id in {d["device_id"] for d in la.devices() if not d["revoked"]}
        assert not lc.db.execute("SELECT count(*) FROM sync_problems").fetchone()[0]

    # Forwarding: A's daemon is gone, A sends one edit to B alone, and A's cable is cut at once.
    # C can then only get it from B, and only because B passes on what a peer pushed to it (B's own
    # library did not change locally, and no interval falls inside this test).
    a.stop()
    cli(net, 1, "ref", "edit", ref_id, "--title", "From A, via B", "--library", pa)
    to_b_only = ["--peer", b.device, "--address", f"{net.address(2)}:{b.port}"]
    report = json.loads(cli(net, 1, "sync", *to_b_only, "--json", "--library", pa))
    net.cut(1)
    [to_b] = report["peers"]
    assert to_b["device"] == b.device and to_b["sent"]["applied"] == 1, report
    took_forward = arrives(pc, "From A, via B", b, c)
    net.heal(1)  # so that B's and C's last syncs on stop do not wait for A's connect timeout
    b.stop()
    c.stop()
    assert titles(pc) == {"From A, via B"}
    with Library.open(pa) as la, Library.open(pb) as lb, Library.open(pc) as lc:
        assert digest(la) == digest(lb) == digest(lc)
    print(f"A -> C after {took:.2f} s; A -> B -> C after {took_forward:.2f} s")


# --- (c) a cable cut in the middle of a large first sync -----------------------------------------

N_REFS = 20_000
NOTES = hashlib.sha256(b"filler").hexdigest() * 14  # ~900 characters: the transfer is ~23 MB


def big_records(count: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(7)
    for i in range(count):
        yield {
            "title": f"Paper {i}",
            "year": str(rng.randint(1950, 2026)),
            "authors": [{"family": f"Author{rng.randint(1, 999)}", "given": "Ann"}],
            "research_notes": f"{i} {NOTES}",  # not in the search index: builds fast, still weighs
        }


def table_digest(path: Path) -> tuple[str, int]:
    """SHA-256 over every replicated table (local columns left out) and the log, plus the
    number of references: sync_support.digest's content in SQL (that one takes minutes here)."""
    h = hashlib.sha256()
    with Library.open(path) as library:
        h.update(json.dumps(sorted(library.log_entries(), key=lambda e: (e[0], e[1])), sort_keys=True).encode())
        for table in REPLICATED_TABLES[1:]:
            columns = [d[0] for d in library.db.execute(f"SELECT * FROM {table} LIMIT 0").description]
            keep = ", ".join(c for c in columns if c not in LOCAL_COLUMNS)
            h.update(repr(sorted(library.db.execute(f"SELECT {keep} FROM {table}").fetchall())).encode())
        count = library.db.execute("SELECT count(*) FROM refs").fetchone()[0]
    return h.hexdigest(), count


def small_socket_buffers(net: Lab, machine: int) -> None:
    """Cap TCP buffers at 256 KB on one machine (these sysctls belong to its network namespace), so
    the kernels cannot hold megabytes of the transfer: what the receiver has not taken in is still
    at the sender when the cable is cut."""
    code = (
        "for name in ('tcp_rmem', 'tcp_wmem'):\n"
        "    with open('/proc/sys/net/ipv4/' + name, 'w') as f:\n"
        "        f.write('4096 65536 262144')\n"
    )
    done = net.run(machine, [sys.executable, "-c", code], timeout=10)
    assert done.returncode == 0, done.stderr


def reference_count(path: Path) -> int:
    with Library.open(path) as library:
        return int(library.db.execute("SELECT count(*) FROM refs").fetchone()[0])


def test_cable_cut_during_a_large_first_sync_then_sync_again(lab: Callable[[int], Lab], tmp_path: Path) -> None:
    net = lab(2)
    pa, pb = make_libraries(tmp_path, "A", "B")  # B is empty: its first sync brings everything
    with Library.open(pa) as la:
        la.add_references(big_records(N_REFS))
    with Library.open(pb) as lb:
        assert not peer_store.remembered_addresses(lb)  # B has never reached A anywhere
    small_socket_buffers(net, 1)
    small_socket_buffers(net, 2)
    # A sends at 30 Mbit/s (~3.7 MB/s), so the transfer takes ~6 s whatever the CPUs' speed: a
    # receiver that applies fast cannot have taken in the rest before the cut below.
    assert net.limit_rate(1, "30mbit"), "this test needs the kernel's tbf qdisc (tc)"
    a = Daemon(net, 1, pa)
    # No --address: B finds A on the LAN (the one-shot sync looks there for up to ~2 s).
    first = JsonLines(net.popen(2, [*P2PSYNC, "sync", "--json", "--library", str(pb)], cwd=REPO))
    # B applies what it receives in batches of ~16 MB, and reads nothing meanwhile, so the rest of
    # the ~23 MB is still at A (the buffers are small): the moment the first references are in,
    # unplug B.
    wait_until(lambda: reference_count(pb) > 0, "the first references reaching B", a, limit=60)
    net.cut(2)
    # B now waits for data that cannot come (its client would give up after its read timeout, a
    # minute); the user stops it with Ctrl-C, which keeps every change set that arrived whole.
    first.proc.send_signal(signal.SIGINT)
    # The batch being applied when Ctrl-C comes is finished first (a change set is whole or
    # absent), which on a machine loaded by other test runs took over 20 s once.
    assert first.wait(3 * WAIT) == 1, first.stderr_text()
    assert "interrupted" in first.stderr_text() and "sync again" in first.stderr_text(), first.stderr_text()
    partial = reference_count(pb)
    assert 0 < partial < N_REFS, partial
    with Library.open(pb) as lb:
        held = lb.db.execute("SELECT count(*) FROM changesets").fetchone()[0]
    net.heal(2)
    net.limit_rate(1, None)
    again = json.loads(cli(net, 2, "sync", "--json", "--library", pb))
    [result] = again["peers"]
    a.stop()
    with Library.open(pa) as la:
        total = la.db.execute("SELECT count(*) FROM changesets").fetchone()[0]
    # Only what was missing came, nothing twice; and B now holds exactly A's library.
    assert result["error"] is None and result["received"]["duplicates"] == 0, result
    assert result["received"]["applied"] == total - held, (result, total, held)
    digest_a, count_a = table_digest(pa)
    digest_b, count_b = table_digest(pb)
    assert count_a == count_b == N_REFS and digest_a == digest_b
    with Library.open(pb) as lb:
        assert lb.db.execute("SELECT count(DISTINCT json_extract(data, '$.title')) FROM refs").fetchone()[0] == N_REFS
    print(f"B held {partial} references ({held} of {total} change sets) when the cable was cut")


# --- (d) a clock three hours ahead ----------------------------------------------------------------


def test_a_machine_three_hours_ahead_converges_and_resolves_a_conflict_the_same(
    lab: Callable[[int], Lab], tmp_path: Path
) -> None:
    net = lab(2)
    pa, pb = make_libraries(tmp_path, "A", "B")
    a = Daemon(net, 1, pa)
    b = Daemon(net, 2, pb, argv=SKEWED)
    ref_id = cli(net, 2, "ref", "add", "--title", "Added ahead", "--library", pb, argv=SKEWED).strip()
    arrives(pa, "Added ahead", a, b)
    cli(net, 1, "ref", "add", "--title", "Added on time", "--library", pa)
    arrives(pb, "Added on time", a, b)
    with Library.open(pa) as la:
        b_id = next(d["device_id"] for d in la.devices() if not d["this_device"])
        [ahead] = [ts for device, _, ts, op in la.log_entries() if device == b_id and op.get("op") == "ref.put"]
    assert ahead > (time.time() + SKEW_SECONDS - 600) * 1000  # B's clock really is hours ahead

    # The same field changed on both machines while they cannot talk (B's daemon is stopped).
    b.stop()
    cli(net, 1, "ref", "edit", ref_id, "--title", "Title from A", "--library", pa)
    cli(net, 2, "ref", "edit", ref_id, "--title", "Title from B", "--library", pb, argv=SKEWED)
    b = Daemon(net, 2, pb, argv=SKEWED)

    def conflicted(path: Path) -> bool:
        with Library.open(path) as library:
            return "title" in (library.get_reference(ref_id).get("conflicts") or [])

    wait_until(lambda: conflicted(pa) and conflicted(pb), "the conflict on both machines", a, b)
    with Library.open(pa) as la, Library.open(pb) as lb:
        assert digest(la) == digest(lb)  # the same versions and the same provisional value on both
        shown = la.get_reference(ref_id)["title"]
        # Provisionally the version with the larger hybrid timestamp, the same everywhere: B's.
        assert shown == lb.get_reference(ref_id)["title"] == "Title from B"
        versions = {v["value"] for v in la.reference_versions(ref_id)["title"]}
        assert versions == {"Title from A", "Title from B"}

    # Resolved on the machine whose clock is behind: its choice wins on both, whatever the timestamps.
    cli(net, 1, "conflicts", "resolve", ref_id, "--keep", "local", "--library", pa)
    wait_until(lambda: titles(pb) == {"Title from A", "Added on time"}, "the resolution reaching B", a, b)
    a.stop()
    b.stop()
    with Library.open(pa) as la, Library.open(pb) as lb:
        assert not conflicted(pa) and not conflicted(pb)
        assert digest(la) == digest(lb)
