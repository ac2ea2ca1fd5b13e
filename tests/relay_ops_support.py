"""Parts the operations and multi-process tests share: relay processes started the way
deploy/p2psync-relay@.service starts them (on a PostgreSQL database), nginx running
deploy/nginx-relay.conf in front of them, a self-signed certificate, devices driven through the
CLI, and a scrape of a relay's /metrics read with prometheus_client's parser.

Every process here is started by the test and stopped by its PID; every wait is bounded."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "p2psync-relay@.service"
NGINX_SITE = DEPLOY / "nginx-relay.conf"
P2PSYNC = [sys.executable, "-m", "p2psync"]
PASSWORD = "correct horse battery staple"
START_SECONDS = 30.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- relay processes ---------------------------------------------------------------------------


class ServedRelay:
    """One `p2psync relay serve` process; its ready line gives the URL, its log the metrics URL."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._terminated = False
        self._log = open(log_path, "wb")  # noqa: SIM115 (a file, not a pipe: the log can grow)
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            self._log.close()
            raise AssertionError(f"relay did not start: {log_path.read_text()[-3000:]}")
        self.url: str = json.loads(line)["listening"]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.metrics_url: str | None = None
        for record in map(json.loads, log_path.read_text().splitlines()):
            if record.get("event") == "listening":
                self.metrics_url = record.get("metrics")

    def terminate(self) -> None:
        """SIGTERM by PID, once (a second one is the operator's "stop now"); stop() waits for it."""
        if self.proc.poll() is None and not self._terminated:
            os.kill(self.proc.pid, signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM by PID (the relay finishes what is in flight); the exit code."""
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise
        finally:
            self._log.close()

    def kill(self) -> int:
        """SIGKILL by PID: no goodbye, as a crash or the OOM killer would."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        try:
            return self.proc.wait(10)
        finally:
            self._log.close()

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]


def unit_command(instance: int) -> list[str]:
    """ExecStart of deploy/p2psync-relay@.service for an instance, as systemd would run it."""
    text = UNIT.read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart=").replace("%i", str(instance)))


def unit_environment_keys() -> list[str]:
    """The variables the unit's comment tells the operator to put in relay.env."""
    return re.findall(r"^#\s+([A-Z0-9_]+)=", UNIT.read_text(), flags=re.MULTILINE)


def relay_as_unit(database_url: str, folder: Path, instance: int, *extra: str, port: int = 0) -> ServedRelay:
    """A relay started with the unit's own command line and environment file, with two changes
    for a test: this interpreter instead of /opt/p2psync/bin/p2psync, and free ports (or `port`)."""
    argv = unit_command(instance)
    assert argv[:3] == ["/opt/p2psync/bin/p2psync", "relay", "serve"], argv
    argv = [*P2PSYNC, *argv[1:]]
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--metrics-listen") + 1] = "127.0.0.1:0"
    env_file = folder / "relay.env"
    env_file.write_text(f"P2PSYNC_RELAY_DATABASE={database_url}\n")
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line)
    return ServedRelay([*argv, "--json", *extra], folder / f"relay-{instance}.log", env)


# --- metrics -----------------------------------------------------------------------------------


def scrape(metrics_url: str) -> Samples:
    with urllib.request.urlopen(metrics_url, timeout=30) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def relay_requests(samples: Samples) -> float:
    """Requests this process answered on the devices' API (/relay/v1/...)."""
    return sum(
        count
        for (name, labels), count in samples.items()
        if name == "p2psync_relay_requests_total" and dict(labels).get("route", "").startswith("/relay/v1/")
    )


# --- TLS ---------------------------------------------------------------------------------------


def self_signed(folder: Path, host: str = "localhost") -> tuple[Path, Path]:
    """A certificate for `host` (its own CA, which devices are told to trust) and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


# --- nginx -------------------------------------------------------------------------------------


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Nginx:
    """nginx (Debian's) in the foreground, running deploy/nginx-relay.conf with its upstreams,
    its listening address and its certificate swapped for the test's, and every file it writes
    inside `folder`. Stopped by its master's PID."""

    def __init__(self, folder: Path, upstreams: list[int], cert: Path, key: Path) -> None:
        binary = nginx_binary()
        assert binary is not None
        self.folder = folder
        self.port = free_port()
        site = NGINX_SITE.read_text()
        for n, port in enumerate(upstreams, start=1):
            site = _swap(site, f"127.0.0.1:874{n} ", f"127.0.0.1:{port} ")
        site = _swap(site, "    listen 443 ssl http2;\n", f"    listen 127.0.0.1:{self.port} ssl http2;\n")
        site = _swap(site, "    listen [::]:443 ssl http2;\n", "")
        site = _swap(site, "/etc/letsencrypt/live/relay.example.org/fullchain.pem", str(cert))
        site = _swap(site, "/etc/letsencrypt/live/relay.example.org/privkey.pem", str(key))
        (folder / "site.conf").write_text(site)
        temp = "\n".join(
            f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root root;\n" if os.geteuid() == 0 else ""  # workers may then read the test's files
        (folder / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
            f"error_log {folder / 'error.log'} info;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n    access_log {folder / 'access.log'};\n{temp}\n    include {folder / 'site.conf'};\n}}\n"
        )
        command = [binary, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(folder / "error.log")]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while not _listening(self.port):
            assert self.proc.poll() is None, (folder / "error.log").read_text()
            assert time.monotonic() < deadline, "nginx did not start listening"
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGQUIT by the master's PID: a graceful stop (the workers finish their requests)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGQUIT)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)

    def access_log(self) -> str:
        return (self.folder / "access.log").read_text()


def _swap(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, f"{old!r} is not in {NGINX_SITE.name}"
    return text.replace(old, new)


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# --- devices through the CLI -------------------------------------------------------------------


@dataclass
class Device:
    """A library in its own folder, driven by `python -m p2psync` processes; trusts `ca` for TLS."""

    library: Path
    env: dict[str, str]

    @classmethod
    def make(cls, folder: Path, ca: Path | None = None) -> Device:
        env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(HOME=str(folder / "home"), XDG_DATA_HOME=str(folder / "xdg"))
        env["PYTHONPYCACHEPREFIX"] = str(folder.parent / "pycache")
        if ca is not None:
            env["SSL_CERT_FILE"] = str(ca)
        return cls(folder / "library", env)

    def run(self, *args: str, stdin: str = "", timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*P2PSYNC, "--library", str(self.library), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )

    def json(self, *args: str, stdin: str = "") -> Any:
        done = self.run(*args, "--json", stdin=stdin)
        assert done.returncode == 0, (args, done.returncode, done.stderr)
        return json.loads(done.stdout)

    def account(self, verb: str, url: str, email: str) -> Any:
        return self.json("account", verb, "--relay", url, "--email", email, "--password-stdin", "--yes",
                         stdin=PASSWORD + "\n")  # fmt: skip

    def init(self) -> Device:
        self.json("init")
        return self

    def add(self, title: str) -> str:
        return str(self.json("ref", "add", "--type", "journal_article", "--title", title, "--year", "2024")["id"])

    def sync(self) -> Any:
        return self.json("sync", "--relay-only")

    def titles(self) -> set[str]:
        return {ref["title"] for ref in self.json("ref", "list")}
