"""A real PostgreSQL server for the tests: its own cluster, made with initdb in a temporary folder,
listening on a free port of 127.0.0.1 only, run as an unprivileged user (PostgreSQL refuses root),
and stopped by its PID at the end. tests/conftest.py holds it for the session (`pg_cluster`) and
gives each test a fresh database (`pg_url`).

Where it cannot run (no server binaries, no psycopg, root with no unprivileged user to run it as)
`unavailable()` says why in one line, and the tests that need it are skipped with that line.
`make test` installs Debian's postgresql package where it may (scripts/test-deps.sh).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "p2psync_test"
START_SECONDS = 60.0


def server_bin() -> Path | None:
    """The newest PostgreSQL server binaries on this machine (Debian's layout first), or None."""
    configured = os.environ.get("P2PSYNC_PG_BIN")  # these binaries and no others (or none: "/nonexistent")
    candidates = [configured] if configured else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "postgres").is_file():
            return Path(folder)
    if configured:
        return None
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("postgres") else None


def run_as() -> str | None:
    """The user the server runs as: ourselves unless root; as root an unprivileged system user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise LookupError("no unprivileged user (postgres or nobody) to run the PostgreSQL server as")


def unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here (one line), or None if they can."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "PostgreSQL tests skipped: psycopg is not installed (pip install -e '.[test]')"
    if server_bin() is None:
        return "PostgreSQL tests skipped: no PostgreSQL server (apt-get install postgresql; make test does it as root)"
    try:
        run_as()
    except LookupError as exc:
        return f"PostgreSQL tests skipped: {exc}"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    """One running server; `url(db)` is a libpq URL for one of its databases."""

    folder: Path
    port: int
    process: subprocess.Popen[bytes]
    user: str | None
    made: list[str] = field(default_factory=list)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown by the postmaster's PID (it ends its own children), then the folder."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_cluster(durable: bool = False) -> Cluster:
    """initdb, then the postmaster on a free port of 127.0.0.1 (sockets in the cluster folder).
    Tests run without fsync; `durable` (bench/bench_relay.py) keeps PostgreSQL's own defaults, so
    that a commit is on disk when answered, as SQLite's synchronous=FULL is."""
    binaries = server_bin()
    assert binaries is not None
    user = run_as()
    # Another user must reach the folder: under /tmp, not a TMPDIR that may be private to us.
    folder = Path(tempfile.mkdtemp(prefix="p2psync-pg-", dir="/tmp" if user is not None else None))
    data = folder / "data"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    as_user = {"user": user, "group": pwd.getpwnam(user).pw_gid} if user is not None else {}
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    try:
        subprocess.run(
            [str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
             "--no-sync", "--locale=C"],
            check=True, capture_output=True, cwd=folder, env=environment, timeout=120, **as_user,
        )  # fmt: skip
        port = free_port()
        log = open(folder / "server.log", "wb")  # noqa: SIM115 (the server writes it until it stops)
        process = subprocess.Popen(
            [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
             "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "shared_buffers=64MB",
             *([] if durable else ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])],
            stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=environment, **as_user,
        )  # fmt: skip
        log.close()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    cluster = Cluster(folder, port, process, user)
    _wait_ready(cluster)
    return cluster


def _wait_ready(cluster: Cluster) -> None:
    import psycopg

    deadline = time.monotonic() + START_SECONDS
    while True:
        if cluster.process.poll() is not None:
            log = cluster.log()
            cluster.stop()
            raise RuntimeError(f"the test PostgreSQL server exited at start:\n{log}")
        try:
            with psycopg.connect(cluster.url(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                cluster.stop()
                raise
            time.sleep(0.1)
