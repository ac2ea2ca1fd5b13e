"""Pairing by code on 127.0.0.1 (mDNS off, --address given): the real `p2psync pair` commands as
processes, and hostile clients against a real offer in process."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from p2psync.crypto.pairing import Pairing, parse_code
from p2psync.errors import PeerRefused
from p2psync.net import tls
from p2psync.net.pair_join import join
from p2psync.net.pair_offer import STARTS_PER_MINUTE, Offer
from p2psync.net.protocol import PREFIX, PROTOCOL_VERSION, VERSION_HEADER
from p2psync.net.worker import LibraryWorker
from p2psync.node import Node
from p2psync.store import rebase
from p2psync.store.library import Library
from tests.sync_support import digest

P2PSYNC = [sys.executable, "-m", "p2psync"]


class Offering:
    """`p2psync pair` (the offering side) as a process; knows its code and port."""

    def __init__(self, library: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [*P2PSYNC, "pair", "--library", str(library), "--listen", "127.0.0.1:0", "--no-mdns", "--json", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()  # the code comes first, so scripts can read it
        if not first:
            self.proc.kill()
            raise AssertionError(self.proc.stderr.read() if self.proc.stderr else "no output")
        head = json.loads(first)
        self.code: str = head["code"]
        self.port = int(head["listening"].rsplit(":", 1)[1])

    def result(self, timeout: float = 60) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return self.proc.returncode, out, err


def join_cli(library: Path, code: str, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*P2PSYNC, "pair", code, "--library", str(library), "--address", f"127.0.0.1:{port}", "--no-mdns", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def library_state(path: Path) -> tuple[str, str, int]:
    with Library.open(path) as library:
        return library.library_id, digest(library), len(library.devices())


def test_an_absent_library_pairs_by_code_and_becomes_a_copy(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    with Library.create(home, "Home") as library:
        ref = library.add_reference({"title": "On the Electrodynamics of Moving Bodies", "year": "1905"})
        pdf = tmp_path / "paper.pdf"
        pdf.write_bytes(b"%PDF-1.4 relativity")
        library.attach(ref, pdf)
    offer = Offering(home)
    joined = join_cli(work, offer.code, offer.port, "--json")
    assert joined.returncode == 0, joined.stderr
    code, out, err = offer.result()
    assert code == 0, err
    outcome = json.loads(out)  # (the first line, the code, was read already)
    assert outcome["mode"] == "replica" and outcome["complete"] is True
    report = json.loads(joined.stdout)
    assert report["mode"] == "replica" and report["library_name"] == "Home"
    with Library.open(home) as h, Library.open(work) as w:
        assert w.library_id == h.library_id
        assert digest(w) == digest(h)
        assert {d["device_id"] for d in h.devices()} == {h.device_id, w.device_id}
        assert outcome["device"] == w.device_id
        [attachment] = w.list_attachments(ref, scan=False)
        assert attachment["name"] == "paper.pdf"  # the manifest; the bytes move with attachment sync


def test_two_full_libraries_merge_after_confirmation_with_a_backup(tmp_path: Path) -> None:
    home, work, backups = tmp_path / "home", tmp_path / "work", tmp_path / "backups"
    with Library.create(home, "Home") as library:
        library.add_reference({"title": "Shared paper", "doi": "10.1000/xyz", "year": "2020"})
        library.add_reference({"title": "Home only", "year": "2001"})
    with Library.create(work, "Work") as library:
        library.add_reference({"title": "Shared paper", "doi": "10.1000/XYZ", "year": "2020", "pages": "1-2"})
        library.add_reference({"title": "Work only", "year": "2002"})

    # Without --yes and without a terminal, the joining side cannot ask: it stops, and so does
    # the offering side, with nothing changed on either.
    before = library_state(home), library_state(work)
    offer = Offering(home)
    refused = join_cli(work, offer.code, offer.port)
    assert refused.returncode == 3, refused.stderr
    assert "Both libraries hold references: this one 2" in refused.stderr and "Home' on" in refused.stderr
    code, _, err = offer.result()
    assert code == 1 and "declined" in err
    assert (library_state(home), library_state(work)) == before

    offer = Offering(home, "--backup-dir", str(backups))
    joined = join_cli(work, offer.code, offer.port, "--yes", "--backup-dir", str(backups))
    assert joined.returncode == 0, joined.stderr
    assert "1 plainly identical ones merged" in joined.stdout
    code, _, err = offer.result()
    assert code == 0, err
    assert len(list(backups.glob("*-p2psync-*.zip"))) == 2  # one on each side, before the merge
    with Library.open(home) as h, Library.open(work) as w:
        titles = sorted(r["title"] for r in h.list_references())
        assert titles == ["Home only", "Shared paper", "Work only"]
        assert digest(h) == digest(w)
        shared = next(r for r in w.list_references() if r["title"] == "Shared paper")
        assert shared["pages"] == "1-2"


def test_a_wrong_code_fails_on_both_sides_burns_the_code_and_changes_nothing(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    with Library.create(home, "Home") as library:
        library.add_reference({"title": "Private", "year": "2000"})
    Library.create(work, "Work").close()
    before = library_state(home), library_state(work)
    offer = Offering(home)
    nameplate, words = offer.code.split("-", 1)
    wrong = f"{nameplate}-{'-'.join(reversed(words.split('-')))}"
    if wrong == offer.code:
        wrong = f"{nameplate}-acorn-acorn" if words != "acorn-acorn" else f"{nameplate}-zebra-zebra"
    failed = join_cli(work, wrong, offer.port)
    assert failed.returncode == 1
    assert "code was wrong, or someone interfered" in failed.stderr
    code, _, err = offer.result()
    assert code == 1 and "code was wrong, or someone interfered" in err
    assert (library_state(home), library_state(work)) == before


def test_a_code_expires(tmp_path: Path) -> None:
    Library.create(tmp_path / "home", "Home").close()
    offer = Offering(tmp_path / "home", "--timeout", "1s")
    code, _, err = offer.result(timeout=30)
    assert code == 1 and "expired" in err


# --- hostile clients against a real offer, in process -----------------------------------------


async def _offering(path: Path) -> tuple[Node, Offer]:
    node = Node(path)
    offer = Offer(node.worker, "7-acorn-zebra")
    await node.serve("127.0.0.1", 0, setup=offer.install)
    return node, offer


def _client_context(path: Path) -> Any:
    with Library.open(path) as library:
        cert, key = tls.certificate_files(library.identity(), path / "device.key", library.path)
    return tls.client_context(cert, key, lambda key: True)


async def _post(session: aiohttp.ClientSession, port: int, step: str, body: Any) -> tuple[int, Any]:
    async with session.post(
        f"https://127.0.0.1:{port}{PREFIX}/pair/{step}",
        data=body if isinstance(body, bytes) else json.dumps(body),
        headers={VERSION_HEADER: str(PROTOCOL_VERSION), "Content-Type": "application/json"},
    ) as response:
        return response.status, await response.json(content_type=None)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_hostile_pairing_requests_are_refused_and_change_nothing(tmp_path: Path) -> None:
    Library.create(tmp_path / "home", "Home").close()
    Library.create(tmp_path / "mallory", "M").close()
    before = library_state(tmp_path / "home")

    async def scenario() -> dict[str, Any]:
        node, offer = await _offering(tmp_path / "home")
        port = node.port or 0
        seen: dict[str, Any] = {}
        try:
            # No client certificate at all: TLS lets it in, the offer does not.
            anonymous = _anonymous_context()
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=anonymous)) as session:
                seen["no_certificate"] = await _post(session, port, "start", {"nameplate": 7, "message": _b64(b"x")})
            context = _client_context(tmp_path / "mallory")
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
                seen["malformed"] = await _post(session, port, "start", b"{not json")
                seen["oversized"] = await _post(session, port, "start", b'{"a":"' + b"x" * (3 * 1024 * 1024) + b'"}')
                seen["confirm_first"] = await _post(session, port, "confirm", {"confirmation": _b64(bytes(32))})
                seen["wrong_nameplate"] = await _post(session, port, "start", {"nameplate": 8, "message": _b64(b"x")})
                for _ in range(STARTS_PER_MINUTE):
                    last = await _post(session, port, "start", {"nameplate": 9, "message": _b64(b"x")})
                seen["rate_limited"] = last
            seen["state_after"] = offer.done.done()
        finally:
            await node.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen["malformed"][0] == 400
    assert seen["oversized"][0] == 413
    assert seen["confirm_first"][0] == 409 and seen["confirm_first"][1]["error"] == "out_of_order"
    assert seen["wrong_nameplate"][0] == 404
    assert seen["rate_limited"][0] == 429
    assert seen["no_certificate"][0] == 403 and seen["no_certificate"][1]["error"] == "certificate"
    assert seen["state_after"] is False  # none of that used up the code
    assert library_state(tmp_path / "home") == before


def _anonymous_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_a_replayed_or_reflected_pairing_message_burns_the_code(tmp_path: Path) -> None:
    """Mallory replays an honest joiner's first message (she cannot finish it without the code),
    then tries the confirmation step again: the code is used up, nothing is added."""
    Library.create(tmp_path / "home", "Home").close()
    Library.create(tmp_path / "mallory", "M").close()
    before = library_state(tmp_path / "home")

    async def scenario() -> tuple[Any, ...]:
        node, offer = await _offering(tmp_path / "home")
        port = node.port or 0
        try:
            with Library.open(tmp_path / "mallory") as m:
                own = m.identity().public_bytes
            honest = Pairing(parse_code("7-acorn-zebra"), "join", own)
            message = honest.start()
            context = _client_context(tmp_path / "mallory")
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
                first = await _post(session, port, "start", {"nameplate": 7, "message": _b64(message)})
                replay = await _post(session, port, "start", {"nameplate": 7, "message": _b64(message)})
                guess = await _post(session, port, "confirm", {"confirmation": _b64(bytes(32))})
                again = await _post(session, port, "start", {"nameplate": 7, "message": _b64(message)})
            with pytest.raises(PeerRefused):
                await offer.done
            return first, replay, guess, again
        finally:
            await node.close()

    first, replay, guess, again = asyncio.run(scenario())
    assert first[0] == 200
    assert replay[0] == 409  # an attempt is under way: a second start is refused...
    assert guess[0] == 403 and guess[1]["error"] == "pairing_failed"  # ...and the code burns at the first wrong proof
    assert again[0] == 410 and again[1]["error"] == "used"
    assert library_state(tmp_path / "home") == before


def test_join_in_process_reports_the_mode(tmp_path: Path) -> None:
    """The joining side as a library function (what the CLI wraps), with the merge question."""
    with Library.create(tmp_path / "home", "Home") as library:
        library.add_reference({"title": "A", "year": "2000"})
    with Library.create(tmp_path / "work", "Work") as library:
        library.add_reference({"title": "B", "year": "2001"})
    asked: list[tuple[int, int]] = []

    async def scenario() -> Any:
        node, offer = await _offering(tmp_path / "home")
        worker = LibraryWorker(tmp_path / "work")
        try:
            result = await join(
                worker,
                "7-acorn-zebra",
                "127.0.0.1",
                node.port or 0,
                lambda ours, theirs: asked.append((ours.references, theirs.references)) is None,
            )
            outcome = await asyncio.wait_for(offer.done, 10)
            return result, outcome
        finally:
            await worker.close()
            await node.close()

    result, outcome = asyncio.run(scenario())
    assert asked == [(1, 1)]
    assert result.mode == "merge" and outcome.mode == "merge" and outcome.complete
    assert result.sync.merge is not None and result.sync.merge.added == 1
    with Library.open(tmp_path / "home") as h, Library.open(tmp_path / "work") as w:
        assert digest(h) == digest(w)
        assert not rebase.merge_pending(w)


def test_pairing_while_daemons_run_on_both_sides(tmp_path: Path) -> None:
    """The daemons keep their databases open while `pair` rebases one of them; afterwards they
    sync with each other without a restart."""
    from tests.test_daemon_loopback import start_daemon, stop, wait_for

    home, work = tmp_path / "home", tmp_path / "work"
    with Library.create(home, "Home") as library:
        library.add_reference({"title": "Before pairing", "year": "2000"})
    Library.create(work, "Work").close()
    home_daemon, home_port = start_daemon(home)
    work_daemon, _ = start_daemon(work, "--address", f"127.0.0.1:{home_port}")
    try:
        offer = Offering(home)
        joined = join_cli(work, offer.code, offer.port)
        assert joined.returncode == 0, joined.stderr
        assert offer.result()[0] == 0
        with Library.open(work) as w:
            w.add_reference({"title": "Added at work after pairing", "year": "2026"})
        wait_for(home, "Added at work after pairing")  # work's daemon pushed it to home's
    finally:
        codes = [stop(home_daemon)[0], stop(work_daemon)[0]]
    assert codes == [0, 0]
    with Library.open(home) as h, Library.open(work) as w:
        assert digest(h) == digest(w)


def test_odd_requests_get_json_refusals(tmp_path: Path) -> None:
    """No offer running, a version header that is a digit only in Unicode, an unknown path and a
    wrong method: each a JSON refusal with a code, never a crash or a plain-text page."""
    Library.create(tmp_path / "home", "Home").close()
    Library.create(tmp_path / "mallory", "M").close()

    async def scenario() -> list[tuple[int, Any]]:
        node = Node(tmp_path / "home")
        await node.serve("127.0.0.1", 0)  # serving, but not offering pairing
        out = []
        try:
            context = _client_context(tmp_path / "mallory")
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
                out.append(await _post(session, node.port or 0, "start", {"nameplate": 7, "message": _b64(b"x")}))
                for headers, method, path in (
                    ({VERSION_HEADER: "\u00b2"}, "POST", f"{PREFIX}/vv"),
                    ({VERSION_HEADER: "1"}, "POST", "/p2psync/hello"),
                ):
                    async with session.request(
                        method, f"https://127.0.0.1:{node.port}{path}", headers=headers
                    ) as response:
                        out.append((response.status, await response.json(content_type=None)))
        finally:
            await node.close()
        return out

    no_offer, odd_version, wrong_method = asyncio.run(scenario())
    assert no_offer[0] == 404 and no_offer[1]["error"] == "no_offer"
    assert odd_version[0] == 400 and odd_version[1]["error"] == "protocol"
    assert wrong_method[0] == 405 and wrong_method[1]["error"] == "method"


def test_a_failed_backup_stops_the_merge_before_anything_changes(tmp_path: Path) -> None:
    with Library.create(tmp_path / "home", "Home") as library:
        library.add_reference({"title": "A", "year": "2000"})
    with Library.create(tmp_path / "work", "Work") as library:
        library.add_reference({"title": "B", "year": "2001"})
    before = library_state(tmp_path / "home"), library_state(tmp_path / "work")

    def broken_backup(library: Library) -> None:
        raise PermissionError(13, "Permission denied", "/backups")

    async def scenario() -> tuple[BaseException | None, BaseException | None]:
        node = Node(tmp_path / "home")
        offer = Offer(node.worker, "7-acorn-zebra", broken_backup)
        await node.serve("127.0.0.1", 0, setup=offer.install)
        worker = LibraryWorker(tmp_path / "work")
        try:
            try:
                await join(worker, "7-acorn-zebra", "127.0.0.1", node.port or 0, lambda ours, theirs: True)
                joined = None
            except Exception as exc:
                joined = exc
            try:
                await asyncio.wait_for(offer.done, 10)
                offered = None
            except Exception as exc:
                offered = exc
            return joined, offered
        finally:
            await worker.close()
            await node.close()

    joined, offered = asyncio.run(scenario())
    assert joined is not None and "Pairing stopped before anything changed here" in str(joined)
    assert offered is not None and "Permission denied" in str(offered)
    assert (library_state(tmp_path / "home"), library_state(tmp_path / "work")) == before
