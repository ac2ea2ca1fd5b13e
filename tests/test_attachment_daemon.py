"""Attachments between daemons as real processes on 127.0.0.1: a file attached on one machine
arrives whole on the other by itself, and a PDF annotated in place travels as a new version in
which only the changed chunks move. Also what `sync --json` and `status --json` say."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import time
from pathlib import Path

from p2psync.store.library import Library
from tests.sync_support import founded, joined
from tests.test_daemon_loopback import P2PSYNC, start_daemon, stop


def sha_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def wait_for_file(path: Path, digest: str, limit: float = 20.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if sha_of(path) == digest:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{path} did not arrive with sha256 {digest[:12]} within {limit} s")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    return subprocess.run([*P2PSYNC, *args], capture_output=True, text=True, timeout=60, env=env)


def test_daemons_carry_attachments_and_in_place_annotations(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    ref = a.add_reference({"title": "Annotated"})
    a.close()
    b.close()
    source = tmp_path / "paper.pdf"
    rng = random.Random(1)
    source.write_bytes(b"%PDF-1.7\n" + rng.randbytes(3_000_000))
    daemon_a, port_a = start_daemon(tmp_path / "a")
    daemon_b = None
    try:
        daemon_b, _ = start_daemon(tmp_path / "b", "--address", f"127.0.0.1:{port_a}")
        out = cli("attach", ref, str(source), "--library", str(tmp_path / "a"))
        assert out.returncode == 0, out.stderr
        at_b = tmp_path / "b" / "attachments" / ref / "paper.pdf"
        wait_for_file(at_b, hashlib.sha256(source.read_bytes()).hexdigest())
        # Annotate in place on A (as a PDF viewer saving incrementally would): append 50 KB.
        at_a = tmp_path / "a" / "attachments" / ref / "paper.pdf"
        with at_a.open("ab") as handle:
            handle.write(rng.randbytes(50_000))
        wait_for_file(at_b, hashlib.sha256(at_a.read_bytes()).hexdigest())
    finally:
        if daemon_b is not None:
            code_b, err_b = stop(daemon_b)
        code_a, err_a = stop(daemon_a)
    assert code_a == 0 and code_b == 0, (err_a, err_b)
    moved = [line for line in err_b.splitlines() if "attachments:" in line]
    assert len(moved) >= 2, err_b
    assert "0 bytes from this disk" in moved[0]  # the first version came over the network
    # The annotated version reused what B had: only about the appended bytes were fetched.
    last = moved[-1]
    number, unit = last.split("(")[1].split(" fetched")[0].split()
    assert float(number) * {"bytes": 1, "KB": 1e3, "MB": 1e6}[unit] < 500_000, last


def test_sync_json_reports_what_moved_and_status_lists_what_is_missing(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    ref = a.add_reference({"title": "Two files"})
    rng = random.Random(2)
    for name in ("one.pdf", "two.pdf"):
        (tmp_path / name).write_bytes(rng.randbytes(500_000))
        a.attach(ref, tmp_path / name)
    a.close()
    b.close()
    daemon_a, port_a = start_daemon(tmp_path / "a")
    try:
        out = cli("sync", "--library", str(tmp_path / "b"), "--address", f"127.0.0.1:{port_a}", "--json")
        assert out.returncode == 0, out.stderr
        moved = json.loads(out.stdout)["attachments"]
        assert moved["files"] == 2 and moved["bytes_fetched"] == 1_000_000 and moved["missing"] == []
    finally:
        stop(daemon_a)
    # A attaches a third file and then loses it from its disk before anyone fetched it.
    with Library.open(tmp_path / "a") as a_lib:
        (tmp_path / "three.pdf").write_bytes(rng.randbytes(10_000))
        a_lib.attach(ref, tmp_path / "three.pdf")
        a_lib.attachment_path(ref, "three.pdf").unlink()
    daemon_a, port_a = start_daemon(tmp_path / "a")
    try:
        out = cli("sync", "--library", str(tmp_path / "b"), "--address", f"127.0.0.1:{port_a}", "--json")
        assert out.returncode == 0, out.stderr
        [missing] = json.loads(out.stdout)["attachments"]["missing"]
        assert missing["name"] == "three.pdf" and missing["reason"] == "no_peer"
    finally:
        stop(daemon_a)
    status = json.loads(cli("status", "--library", str(tmp_path / "b"), "--json").stdout)
    [missing] = status["missing_attachments"]
    assert missing["name"] == "three.pdf" and missing["reason"] == "no_peer"
    assert missing["detail"] == "no device reached has it"
    # With A gone, the next sync reaches nobody, and status says that instead.
    out = cli("sync", "--library", str(tmp_path / "b"), "--address", f"127.0.0.1:{port_a}", "--json")
    assert out.returncode == 1
    text = cli("status", "--library", str(tmp_path / "b")).stdout
    assert "three.pdf" in text and "no device of this library could be reached (1 tried)" in text, text
    assert (
        json.loads(cli("status", "--library", str(tmp_path / "b"), "--json").stdout)["missing_attachments"][0]["reason"]
        == "unreachable"
    )
