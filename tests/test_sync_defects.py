"""Smaller sync defects from issue 18, item 8, each driven through real daemons and the CLI:
a named address that fails makes `sync` fail; a daemon never syncs with itself at an address
remembered for another member; `status` counts what arrived by a push."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

from p2psync.store import peers as peer_store
from p2psync.store.library import Library
from tests.support import P2PSYNC, cli
from tests.sync_support import founded, joined
from tests.test_daemon_loopback import start_daemon, stop


def pair(tmp_path: Path) -> tuple[Path, Path, str, str]:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    ids = a.device_id, b.device_id
    a.close()
    b.close()
    return tmp_path / "a", tmp_path / "b", *ids


def test_a_named_address_that_fails_makes_sync_fail_even_if_another_peer_synced(tmp_path: Path) -> None:
    pa, pb, _, _ = pair(tmp_path)
    daemon, port = start_daemon(pa)
    try:
        out = cli("sync", "--library", str(pb), "--address", f"127.0.0.1:{port}", "--address", "127.0.0.1:1")
    finally:
        stop(daemon)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Could not sync with 127.0.0.1:1" in out.stderr
    assert "change sets in" in out.stdout  # the peer that answered was synced all the same


def test_a_daemon_does_not_sync_with_itself_at_an_address_remembered_for_another(tmp_path: Path) -> None:
    _, pb, a_id, _ = pair(tmp_path)
    with socket.socket() as probe:  # a free port for B's daemon, known before it starts
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Library.open(pb) as b:  # as pairing on one machine leaves it: A "remembered" where B listens
        peer_store.record_seen(b, a_id, f"127.0.0.1:{port}")
    proc = subprocess.Popen(
        [*P2PSYNC, "daemon", "--library", str(pb), "--listen", f"127.0.0.1:{port}", "--json", "--no-mdns"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline()
        time.sleep(1.0)  # the start-up round has run
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "not a member" not in err, err
    status = json.loads(cli("status", "--library", str(pb), "--json").stdout)
    [a_status] = [p for p in status["peers"] if p["device_id"] == a_id]
    assert a_status["last_error"] is None, a_status
    assert a_status["address"] is None  # the address that led back here is forgotten


def test_status_counts_change_sets_that_arrived_by_a_push(tmp_path: Path) -> None:
    pa, pb, _, b_id = pair(tmp_path)
    with Library.open(pb) as b:
        for i in range(300):
            b.add_reference({"title": f"Pushed {i}"})
    daemon, port = start_daemon(pa)
    try:
        out = cli("sync", "--library", str(pb), "--address", f"127.0.0.1:{port}", "--json")
        assert out.returncode == 0, out.stderr
        pushed = json.loads(out.stdout)["peers"][0]["sent"]["applied"]
        assert pushed > 0
        status = json.loads(cli("status", "--library", str(pa), "--json").stdout)
    finally:
        stop(daemon)
    [b_status] = [p for p in status["peers"] if p["device_id"] == b_id]
    assert b_status["received"] == pushed and b_status["last_sync"] is not None, b_status


def test_a_failed_pair_leaves_no_library_behind(tmp_path: Path) -> None:
    nested = tmp_path / "made" / "by" / "pair"
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    for where in (nested, existing):
        out = cli("pair", "7-acorn-zebra", "--library", str(where), "--address", "127.0.0.1:1", "--no-mdns")
        assert out.returncode == 1 and "Could not reach 127.0.0.1:1" in out.stderr, out.stderr
    assert not (tmp_path / "made").exists()  # every folder the command made is gone
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]  # and only what it made
