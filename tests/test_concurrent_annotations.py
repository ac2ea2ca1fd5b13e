"""A PDF annotated in place on two machines between syncs is a Sync Conflict with both files
kept, whichever way the other machine's version arrives (issue 18, item 1).

The bug these tests pin down: a device applied a peer's new version of an attachment before it
had noticed its own in-place edit, then recorded the edit *on top of* the peer's version (as if
it had seen it), so the peer's annotation vanished from both machines without a conflict. Each
entry point that applies incoming change sets is driven here as a user drives it: a one-shot
`p2psync sync`, a daemon starting, a running daemon receiving a push, a relay pull, and pairing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from pathlib import Path
from typing import Any

from p2psync.node import Address, Node
from p2psync.store.library import Library
from tests.support import cli
from tests.sync_support import founded, joined
from tests.test_daemon_loopback import start_daemon, stop

NAME = "paper.pdf"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def annotate(path: Path, rng: random.Random) -> str:
    """Append an 'annotation' the way a PDF viewer's incremental save does; returns the new hash."""
    with path.open("ab") as handle:
        handle.write(b"\n% annotation " + rng.randbytes(40_000))
    return sha(path.read_bytes())


def shared_paper(tmp_path: Path) -> tuple[Path, Path, str]:
    """A and B, members of one library, both holding the same PDF on disk."""
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    ref = a.add_reference({"title": "Annotated on two machines"})
    source = tmp_path / "source.pdf"
    source.write_bytes(b"%PDF-1.7\n" + random.Random(5).randbytes(600_000))
    a.attach(ref, source, name=NAME)
    a.close()
    b.close()

    async def pull() -> None:
        server, client = Node(tmp_path / "a"), Node(tmp_path / "b")
        port = await server.serve("127.0.0.1", 0)
        try:
            await client.fetch(await client.sync([Address("127.0.0.1", port)]))
        finally:
            await client.close()
            await server.close()

    asyncio.run(pull())
    assert sha((tmp_path / "b" / "attachments" / ref / NAME).read_bytes()) == sha(source.read_bytes())
    return tmp_path / "a", tmp_path / "b", ref


def both_edits(pa: Path, pb: Path, ref: str) -> tuple[str, str]:
    """The two concurrent annotations, A's and B's, made while nothing syncs."""
    rng = random.Random(9)
    return annotate(pa / "attachments" / ref / NAME, rng), annotate(pb / "attachments" / ref / NAME, rng)


def versions(path: Path, ref: str) -> dict[str, Any]:
    """What the library records of the attachment, without looking at the disk first."""
    with Library.open(path) as library:
        [item] = library.list_attachments(ref, scan=False)
        kept = {v["sha256"]: v for v in item.get("versions", [])}
        return {"conflict": bool(item["conflict"]), "kept": kept, "conflicts": library.list_conflicts()}


def assert_conflict_with_both_files(path: Path, ref: str, digests: set[str]) -> None:
    seen = versions(path, ref)
    assert seen["conflict"], f"no conflict at {path.name}: {seen}"
    assert set(seen["kept"]) == digests
    for digest, version in seen["kept"].items():
        assert version["present"], f"{digest[:12]} is not on {path.name}'s disk"
        assert sha(Path(version["path"]).read_bytes()) == digest
    assert [c["id"] for c in seen["conflicts"]] == [ref]


def assert_conflict_recorded(path: Path, ref: str, digests: set[str]) -> None:
    seen = versions(path, ref)
    assert seen["conflict"] and set(seen["kept"]) == digests, seen


def wait_until(check: Any, limit: float = 30.0) -> None:
    start = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - start < limit:
        try:
            check()
            return
        except AssertionError as exc:
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"not within {limit} s: {last}")


def test_one_shot_sync_keeps_both_annotations(tmp_path: Path) -> None:
    pa, pb, ref = shared_paper(tmp_path)
    mine, theirs = both_edits(pa, pb, ref)
    daemon_a, port_a = start_daemon(pa)
    try:
        out = cli("sync", "--library", str(pb), "--address", f"127.0.0.1:{port_a}")
        assert out.returncode == 0, out.stderr
        assert_conflict_with_both_files(pb, ref, {mine, theirs})
        # B's annotation travelled in the same sync: A's daemon fetches it from B when B serves.
    finally:
        stop(daemon_a)
    assert_conflict_recorded(pa, ref, {mine, theirs})


def test_a_daemon_starting_keeps_both_annotations(tmp_path: Path) -> None:
    pa, pb, ref = shared_paper(tmp_path)
    mine, theirs = both_edits(pa, pb, ref)
    daemon_a, port_a = start_daemon(pa)
    daemon_b = None
    try:
        daemon_b, _ = start_daemon(pb, "--address", f"127.0.0.1:{port_a}")
        wait_until(lambda: assert_conflict_with_both_files(pb, ref, {mine, theirs}))
        wait_until(lambda: assert_conflict_with_both_files(pa, ref, {mine, theirs}))
    finally:
        if daemon_b is not None:
            stop(daemon_b)
        stop(daemon_a)


def test_a_running_daemon_that_receives_a_push_keeps_both_annotations(tmp_path: Path) -> None:
    pa, pb, ref = shared_paper(tmp_path)
    # B's daemon looks at its files only once an hour here, and has no file notifications, so
    # what records B's edit in time can only be the receive itself (with a 2 s scan or the
    # watcher the outcome would depend on timing).
    os.environ["P2PSYNC_SCAN_SECONDS"] = "3600"
    os.environ["P2PSYNC_WATCH"] = "0"
    try:
        daemon_b, port_b = start_daemon(pb)
    finally:
        del os.environ["P2PSYNC_SCAN_SECONDS"]
        del os.environ["P2PSYNC_WATCH"]
    daemon_a = None
    try:
        time.sleep(1.0)  # B's daemon has finished its start-up round and its first look
        rng = random.Random(10)
        theirs = annotate(pb / "attachments" / ref / NAME, rng)
        mine = annotate(pa / "attachments" / ref / NAME, rng)
        daemon_a, _ = start_daemon(pa, "--address", f"127.0.0.1:{port_b}")  # pushes A's version to B
        wait_until(lambda: assert_conflict_with_both_files(pb, ref, {mine, theirs}))
        wait_until(lambda: assert_conflict_with_both_files(pa, ref, {mine, theirs}))
    finally:
        if daemon_a is not None:
            stop(daemon_a)
        stop(daemon_b)


def test_a_relay_pull_keeps_both_annotations(tmp_path: Path) -> None:
    from tests.test_relay_sync import PASSWORD, start_relay, stop_relay

    relay = start_relay(tmp_path / "relay")
    try:
        env = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "home" / "xdg")}
        a_path, b_path = tmp_path / "a", tmp_path / "b"
        with Library.create(a_path, "Papers") as a:
            ref = a.add_reference({"title": "Annotated on two machines"})
            source = tmp_path / "source.pdf"
            source.write_bytes(b"%PDF-1.7\n" + random.Random(6).randbytes(300_000))
            a.attach(ref, source, name=NAME)
        account = ["--relay", relay.url, "--email", "annotations@example.org", "--password-stdin", "--no-backup"]
        for path, verb in ((a_path, "signup"), (b_path, "login")):
            out = cli("account", verb, "--library", str(path), *account, "--yes", env=env, stdin=PASSWORD + "\n")
            assert out.returncode == 0, out.stderr
        out = cli("sync", "--library", str(b_path), "--relay-only", env=env)
        assert out.returncode == 0, out.stderr
        assert (b_path / "attachments" / ref / NAME).is_file()
        mine, theirs = both_edits(a_path, b_path, ref)
        for path in (a_path, b_path, a_path):  # A's version goes up; B pulls it; A learns of B's
            out = cli("sync", "--library", str(path), "--relay-only", env=env)
            assert out.returncode == 0, out.stderr
        assert_conflict_with_both_files(b_path, ref, {mine, theirs})
        assert_conflict_with_both_files(a_path, ref, {mine, theirs})
    finally:
        stop_relay(relay)


def test_pairing_merges_the_annotated_file_not_the_last_recorded_one(tmp_path: Path) -> None:
    from tests.test_pair_loopback import Offering, join_cli

    home, work = tmp_path / "home", tmp_path / "work"
    with Library.create(home, "Home") as library:
        library.add_reference({"title": "Home only", "year": "2001"})
    with Library.create(work, "Work") as library:
        ref = library.add_reference({"title": "Work's annotated paper", "year": "2002"})
        source = tmp_path / "source.pdf"
        source.write_bytes(b"%PDF-1.7\n" + random.Random(7).randbytes(300_000))
        library.attach(ref, source, name=NAME)
    annotated = annotate(work / "attachments" / ref / NAME, random.Random(11))
    offer = Offering(home, "--no-backup")
    joined_ = join_cli(work, offer.code, offer.port, "--yes", "--no-backup")
    assert joined_.returncode == 0, joined_.stderr
    code, _, err = offer.result()
    assert code == 0, err
    for path in (work, home):  # the annotation is the version the library now holds, on both
        with Library.open(path) as library:
            [item] = library.list_attachments(ref, scan=False)
            assert item["sha256"] == annotated and not item["conflict"], (path.name, item)
