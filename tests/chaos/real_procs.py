"""The processes of a real-process chaos run (tests/chaos/real.py): three `p2psync daemon`s and a
`p2psync relay serve`, each on its own machine of a tests/netns.py Lab, started, killed and
restarted from outside; the CLI run on a machine; device 3's library on a small tmpfs.

Set up as tests/test_lan_namespaces.py does (libraries founded and joined with the library API,
as pairing would leave them), then every device logs in to one relay account with the CLI, so
both paths (LAN and relay) carry changes while faults hit them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.netns import JsonLines, Lab
from tests.sync_support import founded, joined
from tests.tls_support import relay_certificates

REPO = Path(__file__).resolve().parent.parent.parent
P2PSYNC = [sys.executable, "-m", "p2psync"]
RELAY_MACHINE = 4
RELAY_PORT = 8740
DISK_DEVICE = 3  # the device whose library lives on a small tmpfs
# Room for 30 minutes of edits: the WAL alone reaches 16 MB (1000 pages of 16 KiB) between checkpoints.
DISK_SIZE = "96m"
PASSWORD = "correct horse battery staple chaos"
EMAIL = "chaos@example.org"
START_WAIT = 30.0  # seconds for a daemon or the relay to say it listens (the machine is loaded)
STOP_WAIT = 30.0  # seconds for a clean stop (a daemon syncs once more before it exits)
LOG_LINES = 400  # lines of each process's stderr kept across restarts


def environment(home: Path, ca: Path) -> dict[str, str]:
    """What every process of the run gets: weak KDF (as tests/conftest.py), a home of its own."""
    env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    env.update(
        P2PSYNC_TEST_ONLY_WEAK_KDF="1",
        HOME=str(home),
        XDG_DATA_HOME=str(home / "xdg"),
        XDG_CONFIG_HOME=str(home / "config"),
        PYTHONPATH=str(REPO),
        SSL_CERT_FILE=str(ca),
    )
    return env


@dataclass
class Proc:
    """One long-running process of the run (a daemon or the relay), restartable."""

    name: str
    machine: int
    argv: list[str]
    env: dict[str, str]
    out: JsonLines | None = None
    log: list[str] = field(default_factory=list)  # stderr of earlier lives, then of this one
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.out is not None and self.out.proc.poll() is None

    def start(self, lab: Lab) -> None:
        self.starts += 1
        self.log.append(f"--- start #{self.starts} at {time.strftime('%H:%M:%S')}\n")
        self.out = JsonLines(lab.popen(self.machine, self.argv, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL))
        self.out.expect(lambda m: "listening" in m, START_WAIT, f"{self.name} listening")

    def _keep_log(self) -> None:
        if self.out is not None:
            time.sleep(0.05)  # let the stderr pump catch the last lines
            self.log.append(self.out.stderr_text(10**6))
            self.log[:] = self.log[-LOG_LINES:]
            self.out = None

    def kill(self) -> None:
        """SIGKILL its process group (only what this run started, by its pid)."""
        if self.out is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.out.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.out.proc.wait(STOP_WAIT)
        self._keep_log()

    def stop(self) -> int | None:
        """SIGTERM and wait (a clean stop); SIGKILL if it does not end in time. The exit code."""
        if self.out is None:
            return None
        proc = self.out.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        code = proc.returncode
        self._keep_log()
        return code

    def exited_by_itself(self) -> int | None:
        """The exit code if it ended without being told to (then its log is kept), else None."""
        if self.out is not None and self.out.proc.poll() is not None:
            code = self.out.proc.returncode
            self._keep_log()
            return code
        return None

    def tail(self, lines: int = 30) -> str:
        text = "".join(self.log) + (self.out.stderr_text(10**6) if self.out is not None else "")
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Cluster:
    """The lab, the three devices' libraries and daemons, and the relay."""

    lab: Lab
    work: Path
    libraries: list[Path]  # index 0 is device 1
    daemons: list[Proc]
    relay: Proc
    envs: list[dict[str, str]]
    disk: Path  # the tmpfs mount point holding device DISK_DEVICE's library
    mounted: bool = False

    def cli(self, device: int, *args: str | Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run one p2psync command on device's machine (1-based) against its library."""
        argv = [*P2PSYNC, *map(str, args), "--library", str(self.libraries[device - 1])]
        full = ["ip", "netns", "exec", self.lab.namespace(device), *argv]
        try:
            return subprocess.run(
                full, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO, env=self.envs[device - 1]
            )
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(full, -9, str(exc.stdout or ""), f"timed out after {timeout:g} s")

    @property
    def relay_url(self) -> str:
        return f"https://{self.lab.address(RELAY_MACHINE)}:{RELAY_PORT}"

    def processes(self) -> list[Proc]:
        return [*self.daemons, self.relay]

    def close(self) -> None:
        for proc in self.processes():
            proc.kill()
        self.lab.close()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.disk)], capture_output=True, check=False)
            self.mounted = False


class SetupError(RuntimeError):
    """The cluster could not be built (the message says which step and why)."""


def build(work: Path, interval: str = "3s") -> Cluster:
    """Make the lab, the libraries (device 3's on a tmpfs), start the relay, log every device in
    to one account, and start the three daemons."""
    work.mkdir(parents=True, exist_ok=True)
    disk = work / "disk3"
    disk.mkdir(exist_ok=True)
    lab = Lab(4)
    ca, cert, key = relay_certificates(work, lab.address(RELAY_MACHINE))
    envs = [environment(work / f"home{i}", ca) for i in (1, 2, 3, 4)]
    libraries = [work / "a", work / "b", disk / "c"]
    relay = Proc(
        "relay",
        RELAY_MACHINE,
        [
            *P2PSYNC,
            "relay",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(RELAY_PORT),
            "--data",
            str(work / "relay"),
            "--signups-per-hour",
            "1000",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--json",
        ],
        envs[3],
    )
    daemons = [
        Proc(
            f"daemon {i}",
            i,
            [*P2PSYNC, "daemon", "--library", str(p), "--json", "--interval", interval, "--backup-every", "0"],
            envs[i - 1],
        )
        for i, p in zip((1, 2, 3), libraries, strict=True)
    ]
    cluster = Cluster(lab, work, libraries, daemons, relay, envs, disk)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(disk)], capture_output=True
        )
        if done.returncode != 0:
            raise SetupError(f"mount tmpfs on {disk}: {done.stderr.decode().strip()}")
        cluster.mounted = True
        a = founded(libraries[0], "A")
        b = joined(a, libraries[1], "B")
        c = joined(b, libraries[2], "C")
        for library in (a, b, c):
            library.close()
        relay.start(lab)
        for device in (1, 2, 3):
            verb = "signup" if device == 1 else "login"
            argv = [*P2PSYNC, "account", verb, "--relay", cluster.relay_url, "--email", EMAIL, "--password-stdin"]
            argv += ["--yes", "--no-backup", "--library", str(libraries[device - 1])]
            out = subprocess.run(
                ["ip", "netns", "exec", lab.namespace(device), *argv],
                input=PASSWORD + "\n",
                capture_output=True,
                text=True,
                timeout=120,
                cwd=REPO,
                env=envs[device - 1],
                check=False,
            )
            if out.returncode != 0:
                raise SetupError(f"account {verb} on device {device}: {out.stderr.strip()}")
        for daemon in daemons:
            daemon.start(lab)
    except BaseException:
        cluster.close()
        raise
    return cluster


def fill(disk: Path) -> int:
    """Fill the tmpfs with a filler file until it is full; the bytes written."""
    written = 0
    block = b"\0" * (1 << 20)
    with contextlib.suppress(OSError), open(disk / "filler", "wb") as out:
        for _ in range(1024):  # bounded: the tmpfs is far smaller than 1 GiB
            written += out.write(block)
            out.flush()
    with contextlib.suppress(OSError), open(disk / "filler", "ab") as out:
        for _ in range(1024):  # then the last scraps
            written += out.write(block[:1024])
            out.flush()
    return written


def free(disk: Path) -> None:
    (disk / "filler").unlink(missing_ok=True)
