"""Pairing by code between machines on a private LAN (network namespaces, see tests/netns.py):
the joining side finds the offer by mDNS alone, with no address given. Then a third machine is
paired by the second, and everything converges over the LAN."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from p2psync.store.library import Library
from tests import netns
from tests.netns import JsonLines, Lab
from tests.sync_support import digest

lab = netns.lab  # the fixture: `lab(n)` makes a Lab that is closed after the test

P2PSYNC = [sys.executable, "-m", "p2psync"]
WAIT = 45.0


def offer(net: Lab, machine: int, library: Path) -> tuple[JsonLines, str]:
    proc = JsonLines(
        net.popen(
            machine,
            [*P2PSYNC, "pair", "--library", str(library), "--json", "--mdns-interface", net.address(machine)],
        )
    )
    head = proc.expect(lambda m: "code" in m, timeout=WAIT, what="the pairing code")
    return proc, str(head["code"])


def join(net: Lab, machine: int, library: Path, code: str, *extra: str) -> dict[str, object]:
    done = net.run(
        machine,
        [*P2PSYNC, "pair", code, "--library", str(library), "--json", "--mdns-interface", net.address(machine), *extra],
        timeout=WAIT + 30,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_pair_by_code_over_mdns_then_a_third_machine_through_the_second(
    lab: Callable[[int], Lab], tmp_path: Path
) -> None:
    net = lab(3)
    home, work, laptop = tmp_path / "home", tmp_path / "work", tmp_path / "laptop"
    with Library.create(home, "Home") as library:
        library.add_reference({"title": "Found over mDNS", "year": "2026"})

    offering, code = offer(net, 1, home)
    joined = join(net, 2, work, code)
    assert joined["mode"] == "replica"
    assert offering.wait(timeout=WAIT) == 0, offering.stderr_text()

    # The second machine offers in turn; the third (not paired with the first) joins through it.
    offering, code = offer(net, 2, work)
    joined = join(net, 3, laptop, code)
    assert joined["mode"] == "replica"
    assert offering.wait(timeout=WAIT) == 0, offering.stderr_text()

    with Library.open(home) as h, Library.open(work) as w, Library.open(laptop) as c:
        assert [r["title"] for r in c.list_references()] == ["Found over mDNS"]
        # The third machine knows the first as a member (the membership is signed and replicated),
        # and the first will accept it once the introduction reaches it.
        assert {d["device_id"] for d in c.devices()} == {h.device_id, w.device_id, c.device_id}
        assert digest(w) == digest(c)


def test_a_wrong_code_over_mdns_fails_on_both_sides(lab: Callable[[int], Lab], tmp_path: Path) -> None:
    net = lab(2)
    home, work = tmp_path / "home", tmp_path / "work"
    Library.create(home, "Home").close()
    offering, code = offer(net, 1, home)
    nameplate, first, second = code.split("-")
    wrong = f"{nameplate}-{second}-{first}" if first != second else f"{nameplate}-{first}-zipper"
    if wrong == code:
        wrong = f"{nameplate}-acorn-acorn"
    done = net.run(
        2,
        [*P2PSYNC, "pair", wrong, "--library", str(work), "--mdns-interface", net.address(2)],
        timeout=WAIT + 30,
    )
    assert done.returncode == 1 and "code was wrong" in done.stderr
    assert offering.wait(timeout=WAIT) == 1
    assert "code was wrong" in offering.stderr_text()
