"""The Devices page and pairing on the web (p2psync/web/devices_pages.py, pair_pages.py): real
`p2psync web` processes on real libraries, plain HTTP for bad input, and Debian's Chromium for
pairing two libraries by code on two pages, renaming, and removing a device."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from p2psync.crypto.pairing import FAILED
from p2psync.store.library import Library, members
from p2psync.store.sync import sync_libraries
from p2psync.web.auth import CSRF_FIELD
from tests.support import cli
from tests.sync_support import joined
from tests.web_support import WebApp, csrf_of, log_in, request, web_app

FORM = "application/x-www-form-urlencoded"


def post(app: WebApp, session: dict[str, str], path: str, **fields: str) -> Any:
    body = urlencode({CSRF_FIELD: csrf_of(app, session), **fields})
    return request(app.base + path, "POST", {**session, "Content-Type": FORM}, body)


def peers_of(path: Path) -> dict[str, dict[str, Any]]:
    done = cli("--library", str(path), "peers", "--json")
    assert done.returncode == 0, done.stderr
    return {d["short_id"]: d for d in json.loads(done.stdout)}


def this_name(path: Path) -> str:
    return next(d["name"] for d in peers_of(path).values() if d["this_device"])


@pytest.fixture
def two_members(tmp_path: Path) -> tuple[Path, str]:
    """A library with a second member (the other machine's library is left aside)."""
    home = tmp_path / "home"
    with Library.create(home, "Home") as library:
        library.add_reference({"title": "Plasticity of neurons", "year": "1999"})
        other = joined(library, tmp_path / "laptop", "old-laptop")
        device = other.device_id
        other.close()
    return home, device


def test_rename_on_the_page_and_bad_names_refused_in_one_sentence(two_members: tuple[Path, str]) -> None:
    home, _ = two_members
    with web_app(home) as app:
        session = log_in(app)
        page = request(app.base + "/devices", headers=session)
        assert page.status == 200 and "old-laptop" in page.text and "Name of this device" in page.text
        done = post(app, session, "/devices/rename", name="  Ana's laptop ")
        assert done.status == 303 and done.headers["Location"] == "/devices"
        assert this_name(home) == "Ana's laptop"
        shown = request(app.base + "/devices", headers=session).text
        assert "is now named &#34;Ana&#39;s laptop&#34;" in shown or "is now named" in shown
        for bad, says in (
            ("", "A device name cannot be empty."),
            ("x" * 101, "A device name is at most 100 characters; this one has 101."),
            ("x" * 100_000, "A device name is at most 100 characters"),
            ("lab\nlaptop", "A device name cannot contain control characters"),
        ):
            answer = post(app, session, "/devices/rename", name=bad)
            assert answer.status == 400 and says in answer.text, bad[:20]
            assert this_name(home) == "Ana's laptop"
        # No name field at all: the same sentence, nothing changed.
        answer = request(
            app.base + "/devices/rename",
            "POST",
            {**session, "Content-Type": FORM},
            urlencode({CSRF_FIELD: csrf_of(app, session)}),
        )
        assert answer.status == 400 and "cannot be empty" in answer.text


def test_remove_needs_the_confirmation_page_and_forged_ids_name_nobody(two_members: tuple[Path, str]) -> None:
    home, device = two_members
    with web_app(home) as app:
        session = log_in(app)
        assert post(app, session, "/devices/../../etc/remove").status == 404
        for forged in ("ZZZZZZZ", device[:7], device.lower(), "%2E%2E%2Fetc", "A" * 32, device + "A"):
            assert request(f"{app.base}/devices/{forged}/remove", headers=session).status == 404, forged
            answer = post(app, session, f"/devices/{forged}/remove")
            assert answer.status == 404 and "No single member device matches" in answer.text, forged
        this = next(d for d in peers_of(home).values() if d["this_device"])
        answer = post(app, session, f"/devices/{this['device_id']}/remove")
        assert answer.status == 400 and "cannot remove itself" in answer.text
        no_token = request(f"{app.base}/devices/{device}/remove", "POST", {**session, "Content-Type": FORM}, "x=1")
        assert no_token.status == 403
        assert not any(d["revoked"] for d in peers_of(home).values())
        confirm = request(f"{app.base}/devices/{device}/remove", headers=session)
        assert confirm.status == 200
        assert f"Remove device {device[:7]} (old-laptop) from this library on every machine?" in confirm.text
        assert "It cannot be undone" in confirm.text
        done = post(app, session, f"/devices/{device}/remove")
        assert done.status == 303
        assert peers_of(home)[device[:7]]["revoked"] is True
        assert "Removed " + device[:7] in request(app.base + "/devices", headers=session).text


def test_join_refuses_a_malformed_code_and_a_missing_address_before_anything_happens(tmp_path: Path) -> None:
    path = tmp_path / "lib"
    assert cli("--library", str(path), "init", "--name", "L").returncode == 0
    with web_app(path) as app:
        session = log_in(app)
        answer = post(app, session, "/pair/join", code="not a code", address="")
        assert answer.status == 400
        assert "A pairing code looks like 4-crossover-clockwork" in answer.text
        assert "Give the other device&#39;s address" in answer.text
        answer = post(app, session, "/pair/join", code="4-crossover-clockwork", address="127.0.0.1:99999")
        assert answer.status == 400 and "is not an address" in answer.text
        answer = post(app, session, "/pair/offer", listen="nowhere:port")
        assert answer.status == 400 and "is not an address" in answer.text
        answer = post(app, session, "/pair/offer", listen="127.0.0.1:0", expiry="99999999")
        assert answer.status == 400 and "Choose one of the offered times." in answer.text
        assert request(app.base + "/pair/offer/nothing", headers=session).status == 404


def wait_state(app: WebApp, session: dict[str, str], path: str, want: set[str], seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data: dict[str, Any] = json.loads(request(app.base + path, headers=session).text)
        if data["state"] in want:
            return data
        time.sleep(0.3)
    raise AssertionError(f"{path} did not reach {want}")


def test_a_wrong_code_fails_on_both_pages_and_changes_nothing(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    for path in (home, work):
        assert cli("--library", str(path), "init", "--name", path.name).returncode == 0
    with web_app(home) as offering, web_app(work) as joining:
        a, b = log_in(offering), log_in(joining)
        shown = post(offering, a, "/pair/offer", listen="127.0.0.1:0", expiry="60")
        assert shown.status == 303
        offer = shown.headers["Location"]
        text = request(offering.base + offer, headers=a).text
        code = re.search(r'id="pair-code">([^<]+)<', text).group(1)  # type: ignore[union-attr]
        address = re.search(r'id="pair-address">([^<]+)<', text).group(1)  # type: ignore[union-attr]
        number, first, second = code.split("-")
        wrong = f"{number}-{second}-{first}" if first != second else f"{number}-{first}-{first}x"
        started = post(joining, b, "/pair/join", code=wrong, address=address)
        assert started.status == 303
        failed = wait_state(joining, b, started.headers["Location"] + "/state", {"failed", "paired"})
        assert failed["state"] == "failed" and FAILED in failed["said"][0]
        over = wait_state(offering, a, offer + "/state", {"failed", "paired"})
        assert over["state"] == "failed"
        assert FAILED in request(offering.base + offer, headers=a).text
        assert len(peers_of(home)) == 1 and len(peers_of(work)) == 1


def test_in_a_browser_two_libraries_pair_by_code_rename_and_remove(tmp_path: Path, browser: Any) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    assert cli("--library", str(home), "init", "--name", "Home").returncode == 0
    assert cli("--library", str(home), "ref", "add", "--title", "Dendritic spines", "--year", "2004").returncode == 0
    assert cli("--library", str(work), "init", "--name", "Work").returncode == 0
    contexts = [browser.new_context(viewport={"width": 1280, "height": 860}) for _ in range(2)]
    for context in contexts:
        context.set_default_timeout(30_000)
    try:
        with web_app(home) as offering, web_app(work) as joining:
            shows, types = contexts[0].new_page(), contexts[1].new_page()
            shows.goto(offering.login)
            shows.get_by_role("link", name="Devices").click()
            shows.get_by_role("link", name="show a code here").click()
            shows.get_by_label("Listen on").fill("127.0.0.1:0")
            shows.get_by_role("button", name="Show a code").click()
            code = shows.locator("#pair-code").inner_text().strip()
            address = shows.locator("#pair-address").inner_text().strip()
            assert re.fullmatch(r"\d+-[a-z]+-[a-z]+", code)
            first = shows.locator("#pair-countdown").inner_text()
            shows.wait_for_timeout(1500)
            assert shows.locator("#pair-countdown").inner_text() != first  # it counts down

            types.goto(joining.login)
            types.goto(joining.base + "/devices")
            types.get_by_role("link", name="type a code shown on another device").click()
            types.get_by_label("Pairing code").fill(code)
            types.get_by_label("Address of the other device").fill(address)
            types.get_by_role("button", name="Join").click()
            types.get_by_text("Paired with").wait_for()
            shows.get_by_text("Paired with").wait_for()  # the offering page learnt it by itself
            assert "received a copy of this library" in shows.locator("#pair-outcome").inner_text()

            # Both list each other as members; the reference came across with the first sync.
            home_id, work_id = (next(d for d in peers_of(p).values() if d["this_device"]) for p in (home, work))
            for page, other in ((shows, work_id), (types, home_id)):
                page.goto(page.url.split("/pair")[0] + "/devices")
                assert page.locator("#member-table").get_by_text(other["short_id"]).is_visible()
            refs = cli("--library", str(work), "ref", "list", "--json")
            assert "Dendritic spines" in refs.stdout

            # Rename on the joining page; the offering library learns it with the next sync.
            types.get_by_label("Name of this device").fill("Ana's laptop")
            types.get_by_role("button", name="Rename").click()
            assert types.get_by_text("is now named").is_visible()
            with Library.open(home) as a, Library.open(work) as b:
                sync_libraries(a, b)
            assert peers_of(home)[work_id["short_id"]]["name"] == "Ana's laptop"
            shows.reload()
            assert shows.locator("#member-table").get_by_text("Ana's laptop").is_visible()

            # Remove it from the offering side, through the confirmation page.
            shows.get_by_role("link", name=f"Remove Ana's laptop ({work_id['short_id']})").click()
            assert shows.get_by_text(members.REMOVAL_EXPLAINED).is_visible()
            shows.get_by_role("button", name=re.compile("^Remove Ana's laptop")).click()
            assert shows.get_by_text(f"Removed {work_id['short_id']} (Ana's laptop)").is_visible()
            assert peers_of(home)[work_id["short_id"]]["revoked"] is True
    finally:
        for context in contexts:
            context.close()


def offer_code(app: WebApp, session: dict[str, str]) -> tuple[str, str, str]:
    shown = post(app, session, "/pair/offer", listen="127.0.0.1:0", expiry="300")
    assert shown.status == 303, shown.text
    text = request(app.base + shown.headers["Location"], headers=session).text
    code = re.search(r'id="pair-code">([^<]+)<', text).group(1)  # type: ignore[union-attr]
    address = re.search(r'id="pair-address">([^<]+)<', text).group(1)  # type: ignore[union-attr]
    return shown.headers["Location"], code, address


def test_joining_with_references_on_both_sides_asks_first_then_backs_up_and_merges(tmp_path: Path) -> None:
    home, work = tmp_path / "home" / "lib", tmp_path / "work" / "lib"
    for path, title in ((home, "Home paper"), (work, "Work paper")):
        assert cli("--library", str(path), "init", "--name", path.parent.name).returncode == 0
        assert cli("--library", str(path), "ref", "add", "--title", title, "--year", "2001").returncode == 0
    with web_app(home) as offering, web_app(work) as joining:
        a, b = log_in(offering), log_in(joining)
        # Declined: nothing changes on either side.
        offer, code, address = offer_code(offering, a)
        started = post(joining, b, "/pair/join", code=code, address=address, backup="yes")
        progress = started.headers["Location"]
        asked = wait_state(joining, b, progress + "/state", {"question", "failed", "paired"})
        assert asked["state"] == "question"
        assert asked["question"].startswith("Both libraries hold references: this one 1 (0 groups, 0 attachments)")
        page = request(joining.base + progress, headers=b).text
        assert "Merge the libraries" in page and "Do not merge" in page
        assert post(joining, b, progress + "/answer", merge="no").status == 303
        declined = wait_state(joining, b, progress + "/state", {"failed", "paired"})
        assert declined["said"] == ["You declined the merge; nothing changed on either device."]
        assert wait_state(offering, a, offer + "/state", {"failed", "paired"})["state"] == "failed"
        assert len(peers_of(home)) == 1 and len(peers_of(work)) == 1
        assert post(joining, b, progress + "/answer", merge="yes").status == 400  # no question waits now
        # Agreed, with a new code: a backup beside each library, then one merged library.
        offer, code, address = offer_code(offering, a)
        started = post(joining, b, "/pair/join", code=code, address=address, backup="yes")
        progress = started.headers["Location"]
        assert wait_state(joining, b, progress + "/state", {"question", "failed"})["state"] == "question"
        post(joining, b, progress + "/answer", merge="yes")
        merged = wait_state(joining, b, progress + "/state", {"failed", "paired"})
        assert merged["state"] == "paired", merged
        assert merged["said"][1].startswith("Merged: 1 references added")
        assert "merged its library into this one" in wait_state(offering, a, offer + "/state", {"paired"})["said"][0]
        assert list((tmp_path / "work").glob("*-p2psync-*.zip")) and list((tmp_path / "home").glob("*-p2psync-*.zip"))
        listed = cli("--library", str(work), "ref", "list").stdout
        assert "Home paper" in listed and "Work paper" in listed
