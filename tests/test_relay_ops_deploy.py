"""deploy/: the systemd unit is what `systemd-analyze verify` accepts and starts a relay the CLI
understands; nginx-relay.conf runs (Debian's nginx) in front of two relay processes sharing one
PostgreSQL database, and devices sync through it, on through one process stopping; a pg_dump of
that database restores into a relay the devices go on with."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from p2psync.cli.relay_cmds import serve
from tests.relay_ops_support import (
    UNIT,
    Device,
    Nginx,
    nginx_binary,
    relay_as_unit,
    relay_requests,
    scrape,
    self_signed,
    unit_command,
    unit_environment_keys,
)


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here: the unit file is not verified")
    # verify wants the program to exist and an instance of a template: this interpreter's p2psync
    p2psync = shutil.which("p2psync") or str(Path(__import__("sys").executable).parent / "p2psync")
    assert Path(p2psync).is_file(), "p2psync's console script is not installed next to this interpreter"
    unit = tmp_path / "p2psync-relay@1.service"
    unit.write_text(UNIT.read_text().replace("/opt/p2psync/bin/p2psync", p2psync))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr  # unknown keys are only warned of


def test_the_units_command_line_is_one_relay_serve_understands() -> None:
    argv = unit_command(2)
    options = {option for param in serve.params for option in getattr(param, "opts", [])}
    given = [arg for arg in argv if arg.startswith("--")]
    assert given and set(given) <= options, set(given) - options
    assert argv[argv.index("--port") + 1] == "8742" and argv[argv.index("--metrics-listen") + 1] == "127.0.0.1:9742"
    envvars = {param.envvar for param in serve.params if getattr(param, "envvar", None)}
    assert set(unit_environment_keys()) - {"PGPASSFILE"} <= envvars, unit_environment_keys()


def _get(url: str, ca: Path) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(url, timeout=30, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_two_relays_behind_nginx_sync_devices_and_survive_one_stopping(pg_url: str, tmp_path: Path) -> None:
    if nginx_binary() is None:
        pytest.skip("nginx tests skipped: no nginx here (apt-get install nginx; make test does it as root)")
    cert, key = self_signed(tmp_path)
    relays = [relay_as_unit(pg_url, tmp_path, n) for n in (1, 2)]
    proxy: Nginx | None = None
    try:
        (tmp_path / "nginx").mkdir()
        proxy = Nginx(tmp_path / "nginx", [relay.port for relay in relays], cert, key)
        url = f"https://localhost:{proxy.port}"
        assert _get(url + "/healthz", cert)[1].startswith("ok: the database answered")
        assert _get(url + "/metrics", cert)[0] == 404  # never through the proxy
        assert _get(url + "/relay/v1/health", cert)[0] == 200

        home, work = Device.make(tmp_path / "home", cert).init(), Device.make(tmp_path / "work", cert)
        titles = {f"Paper {n} of the home machine" for n in range(3)}
        for title in titles:
            home.add(title)
        assert home.account("signup", url, "ada@example.org")["sync"]["error"] is None
        assert work.account("login", url, "ada@example.org")["mode"] == "joined"
        assert work.titles() == titles
        work.add("Written at work")
        assert work.sync()["relay"]["error"] is None
        assert home.sync()["relay"]["error"] is None and "Written at work" in home.titles()

        # nginx spread the devices' requests over both processes
        served = [relay_requests(scrape(relay.metrics_url or "")) for relay in relays]
        assert all(count > 0 for count in served), served

        # one process stops (a deploy, a crash): the devices go on through the other
        assert relays[0].stop() == 0
        home.add("Written while process 1 was down")
        for device in (home, work, home):
            assert device.sync()["relay"]["error"] is None
        assert work.titles() == home.titles() == titles | {"Written at work", "Written while process 1 was down"}
    finally:
        if proxy is not None:
            assert proxy.stop() == 0
        for relay in relays:
            if relay.proc.poll() is None:
                assert relay.stop() == 0


def test_pg_dump_and_restore_into_a_new_database_that_devices_go_on_with(
    pg_cluster: Any, pg_url: str, tmp_path: Path
) -> None:
    """The backup and restore of docs/relay-operations.md, as written there: pg_dump --format=custom
    while the relay runs, pg_restore into a new database, a relay on it; nothing lost, and the
    devices sync on (and a new device joins) without noticing."""
    from tests import pg_support

    binaries = pg_support.server_bin()
    assert binaries is not None
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.7\n" + os.urandom(300_000))
    relay = relay_as_unit(pg_url, tmp_path, 1)
    restored_name = "restored_" + pg_url.rsplit("/", 1)[1]
    try:
        home, work = Device.make(tmp_path / "home").init(), Device.make(tmp_path / "work")
        ref = home.add("Backed up")
        home.json("attach", ref, str(pdf))
        assert home.account("signup", relay.url, "grace@example.org")["sync"]["error"] is None
        assert work.account("login", relay.url, "grace@example.org")["sync"]["attachments"]["files"] == 1

        dump = tmp_path / "relay.dump"
        done = subprocess.run([str(binaries / "pg_dump"), "--format=custom", f"--file={dump}", pg_url],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert relay.stop() == 0

        restored = pg_cluster.create_database(restored_name)
        done = subprocess.run([str(binaries / "pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={restored}",
                               str(dump)], capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        relay = relay_as_unit(restored, tmp_path, 2, port=relay.port)  # the address the devices know
        home.add("Written after the restore")
        for device in (home, work):
            report = device.sync()["relay"]
            assert report["error"] is None and not report["received"]["rejected"], report
        assert work.titles() == home.titles() == {"Backed up", "Written after the restore"}
        laptop = Device.make(tmp_path / "laptop")
        joined = laptop.account("login", relay.url, "grace@example.org")
        assert joined["mode"] == "joined" and joined["sync"]["attachments"]["files"] == 1
        assert laptop.titles() == home.titles()
    finally:
        if relay.proc.poll() is None:
            assert relay.stop() == 0
        pg_cluster.drop_database(restored_name)
