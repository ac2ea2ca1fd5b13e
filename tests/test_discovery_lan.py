"""mDNS discovery between real machines: python-zeroconf in network namespaces on a private bridge.

Every zeroconf instance here runs in an agent process inside a namespace the test made (see
tests/netns.py) and binds that machine's lab address only, so nothing multicasts on the host's
real interfaces. Agents speak JSON lines: commands on stdin, events on stdout; every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from zeroconf import ServiceInfo

from p2psync.net.discovery import SERVICE_TYPE, Announcer, Browser, Peer, peer_from_info
from tests import netns
from tests.netns import JsonLines, Lab, netns_available
from tests.support import process_alive

lab = netns.lab  # the fixture: `lab(n)` makes a Lab that is closed after the test

REPO = Path(__file__).resolve().parent.parent
WAIT = 10.0  # seconds: the bound on any one wait for the network
DEVICE_1 = "ABCDEFGH" + "2" * 24
DEVICE_3 = "QRSTUVWX" + "7" * 24

AGENT = r"""
import asyncio, json, sys
from dataclasses import asdict

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from p2psync.errors import P2PSyncError
from p2psync.net.discovery import SERVICE_TYPE, Announcer, Browser, find_pairing_offer


def emit(**message):
    print(json.dumps(message), flush=True)


async def commands():
    # stdin through the event loop (a thread blocked in readline would hold up the exit)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        if command["cmd"] == "stop":
            return
        yield command


async def main(cfg):
    here = [cfg["address"]]
    role = cfg["role"]
    if role == "announce":
        announcer = Announcer(cfg["device_id"], cfg["port"], here, cfg.get("interfaces", here))
        await announcer.start()
        emit(event="started", name=announcer.name)
        async for command in commands():
            await announcer.set_pairing(command["nameplate"])
            emit(event="paired", nameplate=command["nameplate"])
        await announcer.stop()
        emit(event="stopped")
    elif role == "browse":
        browser = None

        def changed():
            emit(event="peers", peers={key: asdict(peer) for key, peer in browser.peers.items()})

        browser = Browser(here, on_change=changed)
        await browser.start()
        emit(event="started")
        async for _ in commands():
            pass
        await browser.stop()
        emit(event="stopped")
    elif role == "find":
        peer = await find_pairing_offer(cfg["nameplate"], here, cfg["timeout"])
        emit(event="found", peer=asdict(peer) if peer else None)
    elif role == "txt":
        # What a stranger on the LAN reads: the raw records of one service.
        async with AsyncZeroconf(interfaces=here, ip_version=IPVersion.V4Only) as zc:
            info = AsyncServiceInfo(SERVICE_TYPE, cfg["name"])
            ok = await info.async_request(zc.zeroconf, 5000)
            txt = {k.decode(): None if v is None else v.decode("latin-1") for k, v in info.properties.items()}
            emit(event="txt", ok=ok, server=info.server, port=info.port, addresses=info.parsed_addresses(),
                 properties=txt)
    elif role == "raw":
        # Hand-made registrations, TXT as given: how a broken or hostile announcer looks.
        async with AsyncZeroconf(interfaces=here, ip_version=IPVersion.V4Only) as zc:
            async def register(i, service):
                info = AsyncServiceInfo(SERVICE_TYPE, f"{service['instance']}.{SERVICE_TYPE}", port=4000 + i,
                                        properties=service["txt"], server=f"raw-{i}.local.", parsed_addresses=here)
                await (await zc.async_register_service(info))

            await asyncio.gather(*(register(i, service) for i, service in enumerate(cfg["services"])))
            emit(event="started")
            async for _ in commands():
                pass
    else:
        raise SystemExit(f"unknown role {role}")


try:
    asyncio.run(main(json.loads(sys.argv[1])))
except P2PSyncError as exc:
    emit(event="error", kind=type(exc).__name__, message=str(exc))
    sys.exit(1)
"""


@pytest.fixture
def net() -> Iterator[Lab]:
    """Three machines; skipped (only) when network namespaces cannot be made here."""
    reason = netns_available()
    if reason is not None:
        pytest.skip(reason)
    with Lab(3) as lab:
        yield lab


def agent(lab: Lab, i: int, role: str, **cfg: Any) -> JsonLines:
    """Start an agent on machine i, bound to that machine's lab address."""
    config = json.dumps({"role": role, "address": lab.address(i), **cfg})
    return JsonLines(lab.popen(i, [sys.executable, "-c", AGENT, config], cwd=REPO))


def started(proc: JsonLines) -> None:
    message = proc.expect(lambda m: m["event"] in ("started", "error"), WAIT, "started")
    assert message["event"] == "started", message


def peers_where(test: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["event"] == "peers" and test(m["peers"])


def test_browser_sees_announcer_with_address_port_version_and_no_library_info(net: Lab) -> None:
    announcer = agent(net, 1, "announce", device_id=DEVICE_1, port=48123)
    browser = agent(net, 2, "browse")
    started(announcer)
    started(browser)
    seen = browser.expect(peers_where(lambda peers: "ABCDEFGH" in peers), WAIT, "the announced peer")
    assert seen["peers"]["ABCDEFGH"] == {
        "short_id": "ABCDEFGH",
        "addresses": ["198.18.0.1"],
        "port": 48123,
        "version": 1,
        "pairing": None,
    }
    # The raw records a stranger reads carry the version and the short id, nothing else.
    raw = agent(net, 3, "txt", name=f"p2psync-ABCDEFGH.{SERVICE_TYPE}")
    txt = raw.expect(lambda m: m["event"] == "txt", WAIT, "the raw TXT")
    assert txt["ok"], txt
    assert txt["properties"] == {"v": "1", "id": "ABCDEFGH"}
    assert txt["server"] == "p2psync-ABCDEFGH.local."
    assert (txt["port"], txt["addresses"]) == (48123, ["198.18.0.1"])
    assert DEVICE_1 not in json.dumps(txt)  # only the short id, never the whole device id


def test_pairing_offer_appears_is_found_and_withdrawn(net: Lab) -> None:
    announcer = agent(net, 1, "announce", device_id=DEVICE_1, port=48123)
    browser = agent(net, 2, "browse")
    started(announcer)
    started(browser)
    browser.expect(peers_where(lambda p: p.get("ABCDEFGH", {}).get("pairing") is None), WAIT, "the peer")

    announcer.send({"cmd": "pair", "nameplate": 7})
    announcer.expect(lambda m: m["event"] == "paired", WAIT, "paired")
    browser.expect(peers_where(lambda p: p.get("ABCDEFGH", {}).get("pairing") == 7), WAIT, "the pairing offer")

    right = agent(net, 3, "find", nameplate=7, timeout=WAIT)
    wrong = agent(net, 2, "find", nameplate=8, timeout=2.0)
    found = right.expect(lambda m: m["event"] == "found", WAIT + 2, "find 7")["peer"]
    assert found is not None
    assert Peer(**{**found, "addresses": tuple(found["addresses"])}) == Peer("ABCDEFGH", ("198.18.0.1",), 48123, 1, 7)
    assert wrong.expect(lambda m: m["event"] == "found", WAIT, "find 8")["peer"] is None

    announcer.send({"cmd": "pair", "nameplate": None})
    announcer.expect(lambda m: m["event"] == "paired", WAIT, "unpaired")
    browser.expect(peers_where(lambda p: p.get("ABCDEFGH", {}).get("pairing", 0) is None), WAIT, "the offer withdrawn")


def test_stopped_announcer_is_removed_from_peers(net: Lab) -> None:
    announcer = agent(net, 1, "announce", device_id=DEVICE_1, port=48123)
    other = agent(net, 3, "announce", device_id=DEVICE_3, port=48124)
    browser = agent(net, 2, "browse")
    for proc in (announcer, other, browser):
        started(proc)
    browser.expect(peers_where(lambda p: {"ABCDEFGH", "QRSTUVWX"} <= set(p)), WAIT, "both peers")

    announcer.send({"cmd": "stop"})
    announcer.expect(lambda m: m["event"] == "stopped", WAIT, "stopped")
    assert announcer.wait(WAIT) == 0
    left = browser.expect(peers_where(lambda p: "ABCDEFGH" not in p), WAIT, "the peer removed")
    assert set(left["peers"]) == {"QRSTUVWX"}


def test_cable_cut_does_not_crash_the_browser(net: Lab) -> None:
    announcer = agent(net, 1, "announce", device_id=DEVICE_1, port=48123)
    browser = agent(net, 2, "browse")
    started(announcer)
    started(browser)
    browser.expect(peers_where(lambda p: "ABCDEFGH" in p), WAIT, "the peer")

    net.cut(1)
    announcer.send({"cmd": "pair", "nameplate": 3})  # announced into a dead cable: lost
    announcer.expect(lambda m: m["event"] == "paired", WAIT, "paired while cut")
    net.cut(2)  # and the browser's own cable: its queries now go nowhere
    with pytest.raises(AssertionError, match="within"):
        browser.expect(lambda m: True, 2.0)
    assert browser.proc.poll() is None and announcer.proc.poll() is None, browser.stderr_text()

    net.heal(1)
    net.heal(2)
    announcer.send({"cmd": "pair", "nameplate": 4})
    announcer.expect(lambda m: m["event"] == "paired", WAIT, "paired after healing")
    browser.expect(peers_where(lambda p: p.get("ABCDEFGH", {}).get("pairing") == 4), WAIT, "the update after healing")
    assert "Traceback" not in browser.stderr_text()


def test_malformed_txt_is_ignored(net: Lab) -> None:
    raw = agent(
        net,
        1,
        "raw",
        services=[
            {"instance": "p2psync-BADVERSN", "txt": {"v": "x", "id": "BADVERSN"}},
            {"instance": "p2psync-NOVERSIO", "txt": {"id": "NOVERSIO"}},
            {"instance": "p2psync-ZEROVERS", "txt": {"v": "0", "id": "ZEROVERS"}},
            {"instance": "p2psync-badid", "txt": {"v": "1", "id": "bad!id"}},
            {"instance": "p2psync-noid", "txt": {"v": "1"}},
            {"instance": "p2psync-BADPAIRX", "txt": {"v": "1", "id": "BADPAIRX", "pair": "-1"}},
        ],
    )
    browser = agent(net, 2, "browse")
    started(raw)
    started(browser)
    announcer = agent(net, 3, "announce", device_id=DEVICE_3, port=48124)
    started(announcer)
    # The good peer shows up; of the hand-made ones only the one with a bad `pair` (a peer, no offer).
    browser.expect(peers_where(lambda p: "QRSTUVWX" in p and "BADPAIRX" in p), WAIT, "the well-formed peers")
    with pytest.raises(AssertionError, match="within"):
        browser.expect(lambda m: True, 1.0)  # give the rest a moment to (not) arrive
    everyone = set().union(*(set(m["peers"]) for m in browser.seen if m["event"] == "peers"))
    assert everyone == {"QRSTUVWX", "BADPAIRX"}
    last = next(m for m in reversed(browser.seen) if m["event"] == "peers")
    assert last["peers"]["BADPAIRX"]["pairing"] is None
    assert browser.proc.poll() is None and "Traceback" not in browser.stderr_text()


def test_unusable_interface_is_one_clear_discovery_error(net: Lab) -> None:
    announcer = agent(net, 1, "announce", device_id=DEVICE_1, port=48123, interfaces=["198.18.0.99"])
    error = announcer.expect(lambda m: m["event"] in ("error", "started"), WAIT, "the error")
    assert error["event"] == "error" and error["kind"] == "DiscoveryError", error
    assert error["message"].startswith("mDNS discovery could not start on 198.18.0.99 (")
    assert error["message"].endswith("; use --address HOST:PORT or --no-mdns.")
    assert announcer.wait(WAIT) == 1


# --- no network: parsing untrusted records -----------------------------------------------------


def _info(txt: dict[str, str], port: int = 4000, addresses: list[str] | None = None) -> ServiceInfo:
    return ServiceInfo(
        SERVICE_TYPE,
        f"p2psync-X.{SERVICE_TYPE}",
        port=port,
        properties=txt,
        server="x.local.",
        parsed_addresses=["198.18.0.9"] if addresses is None else addresses,
    )


@pytest.mark.parametrize(
    "txt",
    [
        {},
        {"v": "x", "id": "ABCDEFGH"},
        {"v": "", "id": "ABCDEFGH"},
        {"v": "+1", "id": "ABCDEFGH"},
        {"v": "1e3", "id": "ABCDEFGH"},
        {"v": "99999999999", "id": "ABCDEFGH"},
        {"v": "1"},
        {"v": "1", "id": "abcdefgh"},
        {"v": "1", "id": "ABCDEFGHI"},
        {"v": "1", "id": "ABC"},
    ],
)
def test_malformed_txt_gives_no_peer(txt: dict[str, str]) -> None:
    assert peer_from_info(_info(txt)) is None


def test_peer_from_info_reads_a_good_record_and_ignores_ipv6_and_bad_pair() -> None:
    info = _info({"v": "2", "id": "ABCDEFGH", "pair": "x9"}, addresses=["198.18.0.9", "fe80::1"])
    assert peer_from_info(info) == Peer("ABCDEFGH", ("198.18.0.9",), 4000, 2, None)
    assert peer_from_info(_info({"v": "1", "id": "ABCDEFGH", "pair": "12"})) == Peer(
        "ABCDEFGH", ("198.18.0.9",), 4000, 1, 12
    )
    assert peer_from_info(_info({"v": "1", "id": "ABCDEFGH"}, addresses=["fe80::1"])) is None


def test_announced_version_is_the_peer_protocol_version() -> None:
    from p2psync.net import discovery, protocol

    assert discovery.PROTOCOL_VERSION == protocol.PROTOCOL_VERSION


def test_bad_arguments_are_refused_before_any_socket_opens() -> None:
    from p2psync.errors import InvalidValue

    with pytest.raises(InvalidValue):
        Announcer("short", 1, ["198.18.0.1"], ["198.18.0.1"])
    with pytest.raises(InvalidValue):
        Announcer(DEVICE_1, 0, ["198.18.0.1"], ["198.18.0.1"])
    with pytest.raises(InvalidValue):
        Announcer(DEVICE_1, 1, ["not-an-ip"], ["198.18.0.1"])
    with pytest.raises(InvalidValue):
        Browser(["eth0"])
    with pytest.raises(InvalidValue):
        Browser([])


# --- the lab itself (others build multi-machine tests on it) -----------------------------------

UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
print('{"event": "started"}', flush=True)
while True:
    data, peer = s.recvfrom(100)
    s.sendto(data, peer)
"""

UDP_ASK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
s.sendto(b"hi", (sys.argv[1], 9999))
try:
    print(s.recvfrom(100)[0].decode())
except TimeoutError:
    print("timeout")
"""


def test_lab_connects_cuts_heals_and_cleans_up(lab: Callable[[int], Lab]) -> None:
    net = lab(2)
    echo = JsonLines(net.popen(1, [sys.executable, "-c", UDP_ECHO, net.address(1)]))
    echo.expect(lambda m: m["event"] == "started", WAIT, "the echo server")
    # A grandchild that leaves the lab's process group still lives in its namespace: close() ends it too.
    starter = net.popen(2, ["sh", "-c", "setsid sleep 60 >/dev/null 2>&1 & echo $!"], stdin=subprocess.DEVNULL)
    escaped = int(starter.communicate(timeout=WAIT)[0])

    def ask() -> str:
        return net.run(2, [sys.executable, "-c", UDP_ASK, net.address(1)], timeout=WAIT).stdout.strip()

    assert ask() == "hi"
    net.cut(1)
    assert ask() == "timeout"
    net.heal(1)
    assert ask() == "hi"
    assert process_alive(escaped)

    namespaces = [net.bridge_namespace, net.namespace(1), net.namespace(2)]
    net.close()
    net.close()  # idempotent
    assert echo.wait(WAIT) != 0
    assert not process_alive(escaped)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=WAIT, check=True).stdout
    assert not any(ns in listed.split() for ns in namespaces), listed
    with pytest.raises(RuntimeError, match="closed"):
        net.popen(1, ["true"])
