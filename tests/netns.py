"""A private LAN of N "machines" for tests, built from Linux network namespaces (needs root).

Why: mDNS and multi-machine sync must be tested with real multicast, and a test must never
multicast on the host's real interfaces. Each machine here is a network namespace with one
interface, eth0 (198.18.0.I/24, RFC 2544 benchmark range), plugged into a bridge that lives in its
own namespace; the multicast route 224.0.0.0/4 goes via eth0. Nothing reaches the real network.
This is ../shared/tools/netlab in Python, with per-lab random names so labs never collide.

Usage (inside a test; the `lab` fixture skips the test when namespaces cannot be made here)::

    from tests.netns import JsonLines, Lab, netns_available

    def test_two_machines() -> None:
        reason = netns_available()
        if reason:
            pytest.skip(reason)
        with Lab(2) as lab:
            server = JsonLines(lab.popen(1, [sys.executable, "-c", SERVER_CODE, lab.address(1)]))
            server.expect(lambda m: m.get("event") == "listening", timeout=10)
            out = lab.run(2, [sys.executable, "-c", CLIENT_CODE, lab.address(1)], timeout=10)
            assert out.returncode == 0                   # (there is no `ping` in the CI image)
            lab.cut(1)                                   # unplug machine 1's cable
            lab.heal(1)                                  # and plug it back in
        # leaving the block ends what the lab started and deletes its namespaces

Or with the `lab` fixture, a factory that skips when namespaces are not permitted. Bind it by
assignment in the test module (`from tests.netns import lab` trips ruff's F401/F811, and
`pytest_plugins = ["tests.netns"]` warns that the module cannot be assert-rewritten)::

    from tests import netns

    lab = netns.lab

    def test_three(lab: Callable[[int], Lab]) -> None:
        net = lab(3)                                     # closed after the test

Processes started with `Lab.popen` get their own process group; `Lab.close()` ends exactly those
groups (SIGTERM, then SIGKILL after a grace period), then anything still inside the lab's own
namespaces (which can only be descendants of what the lab started, since the names are random and
private), then deletes every namespace it made. `close()` is idempotent and also runs when the Lab
is garbage-collected or the interpreter exits, so a failing test cannot leave namespaces behind.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

SUBNET = "198.18.0"
MAX_MACHINES = 200
_IP_TIMEOUT = 15.0  # seconds for one `ip` command; they normally take milliseconds
_TERM_GRACE = 3.0  # seconds a process gets between SIGTERM and SIGKILL


class LabError(RuntimeError):
    """Building or changing the lab's network failed (the message carries `ip`'s own words)."""


def _ip(*args: str, timeout: float = _IP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS`, raising LabError with its stderr when it fails."""
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"ip {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done


@functools.cache
def netns_available() -> str | None:
    """None when this process can build a lab; otherwise the reason why not (for pytest.skip).

    It really builds a tiny one (a namespace, a bridge, a veth pair, one `ip netns exec`), because
    containers often allow some of these and not others.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (run the LAN tests as root, e.g. in the CI container)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = "p2pchk" + secrets.token_hex(3)
    try:
        _ip("netns", "add", probe)
    except LabError as exc:
        return f"`ip netns add` was refused here: {exc}"
    try:
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
        _ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        _ip("-n", probe, "link", "set", "v0", "master", "br0")
        done = subprocess.run(
            ["ip", "netns", "exec", probe, "true"], capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False
        )
        if done.returncode != 0:
            return f"`ip netns exec` does not work here: {done.stderr.strip()}"
    except (LabError, OSError, subprocess.TimeoutExpired) as exc:
        return f"bridges or veth pairs cannot be made in a network namespace here: {exc}"
    finally:
        with contextlib.suppress(LabError):
            _ip("netns", "del", probe)
    return None


class _State:
    """What a Lab must undo; kept apart from the Lab so a weakref finalizer can undo it."""

    def __init__(self) -> None:
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[Any]] = []
        self.closed = False
        self.lock = threading.Lock()


def _end_group(proc: subprocess.Popen[Any], sig: int) -> None:
    """Signal the process group this lab created for `proc` (its pgid is its pid: start_new_session)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _cleanup(state: _State) -> None:
    """End what the lab started, then delete its namespaces. Safe to call more than once."""
    with state.lock:
        if state.closed:
            return
        state.closed = True
        for proc in state.processes:
            _end_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + _TERM_GRACE
        for proc in state.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if proc.poll() is None:
                _end_group(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=_TERM_GRACE)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        # Anything still inside our namespaces descends from what we started (the names are random and
        # ours alone): a namespace is only freed when its last process leaves, so end those too.
        for ns in state.namespaces:
            for pid in _netns_pids(ns):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for ns in reversed(state.namespaces):
            with contextlib.suppress(LabError):
                _ip("netns", "del", ns)
        state.namespaces.clear()


def _netns_pids(ns: str) -> list[int]:
    with contextlib.suppress(LabError):
        return [int(p) for p in _ip("netns", "pids", ns).stdout.split() if p.isdigit()]
    return []


class Lab:
    """N machines on one bridge: machine i (1-based) is 198.18.0.i on its eth0.

    Namespaces are `<name>-br` and `<name>-<i>`; veth ends are `<name>h<i>` (moved into the
    machine and renamed eth0) and `<name>b<i>` (on the bridge), where name is "p" + 6 hex
    characters: at most 11 characters, inside Linux's 15-character limit for interface names.
    """

    def __init__(self, n: int) -> None:
        if not 1 <= n <= MAX_MACHINES:
            raise ValueError(f"a lab has 1 to {MAX_MACHINES} machines, not {n}")
        self.n = n
        self.name = "p" + secrets.token_hex(3)
        self._state = _State()
        self._finalizer = weakref.finalize(self, _cleanup, self._state)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # --- building -------------------------------------------------------------------------------

    @property
    def bridge_namespace(self) -> str:
        return f"{self.name}-br"

    def namespace(self, i: int) -> str:
        """The network namespace of machine i (for `ip -n` or `ip netns exec`)."""
        self._check(i)
        return f"{self.name}-{i}"

    def _add_namespace(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._state.namespaces.append(ns)

    def _build(self) -> None:
        br = self.bridge_namespace
        self._add_namespace(br)
        # No multicast snooping: the bridge floods every group, as a dumb home switch does.
        _ip("-n", br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", br, "link", "set", "lo", "up")
        _ip("-n", br, "link", "set", "br0", "up")
        for i in range(1, self.n + 1):
            ns, host_end, bridge_end = f"{self.name}-{i}", f"{self.name}h{i}", f"{self.name}b{i}"
            self._add_namespace(ns)
            # Create the pair inside the bridge namespace right away, so nothing is ever made in ours.
            _ip("-n", br, "link", "add", bridge_end, "type", "veth", "peer", "name", host_end, "netns", ns)
            _ip("-n", ns, "link", "set", host_end, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{i}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
            _ip("-n", br, "link", "set", bridge_end, "master", "br0")
            _ip("-n", br, "link", "set", bridge_end, "up")

    # --- using ----------------------------------------------------------------------------------

    def _check(self, i: int) -> None:
        if not 1 <= i <= self.n:
            raise ValueError(f"machine {i} is not in this lab (1..{self.n})")

    def address(self, i: int) -> str:
        """Machine i's IPv4 address on the lab LAN."""
        self._check(i)
        return f"{SUBNET}.{i}"

    def _argv(self, i: int, argv: Sequence[str]) -> list[str]:
        if self._state.closed:
            raise LabError(f"lab {self.name} is closed")
        return ["ip", "netns", "exec", self.namespace(i), *argv]

    def popen(self, i: int, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv on machine i in a new process group that close() ends.

        Defaults: stdin, stdout and stderr are pipes in text mode, line-buffered (wrap the result in
        JsonLines to read it with bounded waits). Any subprocess.Popen keyword overrides these.
        """
        options: dict[str, Any] = {
            "stdin": subprocess.PIPE,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.PIPE,
            "text": True,
            "bufsize": 1,
        }
        options.update(kwargs)
        options["start_new_session"] = True  # its own process group, so close() can end all of it
        proc: subprocess.Popen[Any] = subprocess.Popen(self._argv(i, argv), **options)
        self._state.processes.append(proc)
        return proc

    def run(self, i: int, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run argv on machine i to completion (killed after timeout seconds); output captured as text."""
        return subprocess.run(self._argv(i, argv), capture_output=True, text=True, timeout=timeout, check=False)

    def cut(self, i: int) -> None:
        """Unplug machine i's cable: its bridge port goes down (eth0 inside sees no carrier)."""
        self._check(i)
        _ip("-n", self.bridge_namespace, "link", "set", f"{self.name}b{i}", "down")

    def heal(self, i: int) -> None:
        """Plug machine i's cable back in."""
        self._check(i)
        _ip("-n", self.bridge_namespace, "link", "set", f"{self.name}b{i}", "up")

    def netem(self, i: int, spec: str) -> None:
        """Shape machine i's outgoing traffic with tc netem (e.g. "delay 40ms loss 1%"); "" clears it."""
        ns = self.namespace(i)
        if shutil.which("tc") is None:
            raise LabError("tc (iproute2) is not installed; netem shaping is not available")
        subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root"], capture_output=True)
        if spec:
            done = subprocess.run(
                ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", *spec.split()],
                capture_output=True,
                text=True,
                timeout=_IP_TIMEOUT,
            )
            if done.returncode != 0:
                raise LabError(f"tc netem {spec!r} on machine {i}: {done.stderr.strip()}")

    def limit_rate(self, i: int, rate: str | None) -> bool:
        """Limit what machine i sends to `rate` (e.g. "30mbit") with a token bucket; None lifts the
        limit. False where the kernel has no tbf qdisc (then nothing is limited)."""
        tc = ["tc", "qdisc", "del" if rate is None else "add", "dev", "eth0", "root"]
        if rate is not None:
            tc += ["tbf", "rate", rate, "burst", "256kb", "latency", "100ms"]
        return self.run(i, tc, timeout=10).returncode == 0

    def close(self) -> None:
        """End the processes this lab started and delete its namespaces (idempotent)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return self._state.closed

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Lab({self.n}, name={self.name!r}{', closed' if self.closed else ''})"


class JsonLines:
    """Reads a process's stdout as JSON lines with bounded waits, and keeps its stderr for messages.

    Two daemon threads drain stdout and stderr, so the child never blocks on a full pipe. Lines that
    are not JSON objects are kept in `other` (a crash's traceback ends up in `stderr_text()`).
    """

    def __init__(self, proc: subprocess.Popen[Any]) -> None:
        if proc.stdout is None or proc.stderr is None:
            raise ValueError("JsonLines needs a process started with stdout=PIPE and stderr=PIPE")
        self.proc = proc
        self.seen: list[dict[str, Any]] = []
        self.other: list[str] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed under us by Lab.close()
            for line in self.proc.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    message = None
                if isinstance(message, dict):
                    self._lines.put(message)
                else:
                    self.other.append(line.rstrip("\n"))
        self._lines.put(None)  # end of output

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stderr:
                self._stderr.append(line)

    def stderr_text(self, last: int = 40) -> str:
        """The last lines the process wrote to stderr (for assertion messages)."""
        return "".join(self._stderr[-last:])

    def send(self, message: dict[str, Any]) -> None:
        """Write one JSON line to the process's stdin."""
        if self.proc.stdin is None:
            raise ValueError("the process was not started with stdin=PIPE")
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def expect(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str = "") -> dict[str, Any]:
        """The next message that satisfies predicate; AssertionError after timeout seconds or at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                message = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if message is None:
                self._lines.put(None)  # keep EOF visible to later calls
                time.sleep(0.05)  # let the stderr pump catch up for the message below
                raise AssertionError(
                    f"process ended (exit {self.proc.poll()}) before {what or 'the expected message'}; "
                    f"stderr:\n{self.stderr_text()}"
                )
            self.seen.append(message)
            if predicate(message):
                return message
        raise AssertionError(
            f"no {what or 'expected message'} within {timeout:g} s; last messages: {self.seen[-5:]}; "
            f"stderr:\n{self.stderr_text()}"
        )

    def wait(self, timeout: float) -> int:
        """The exit code, waiting at most timeout seconds (AssertionError if it is still running)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"process still running after {timeout:g} s; stderr:\n{self.stderr_text()}") from exc


@pytest.fixture
def lab() -> Iterator[Callable[[int], Lab]]:
    """A factory `lab(n) -> Lab`; every lab made is closed after the test. Skips when namespaces are
    not permitted here (and only then)."""
    reason = netns_available()
    if reason is not None:
        pytest.skip(reason)
    made: list[Lab] = []

    def make(n: int) -> Lab:
        new = Lab(n)
        made.append(new)
        return new

    try:
        yield make
    finally:
        for each in made:
            each.close()
