"""Sync Status (p2psync/web/sync_pages.py) with two real libraries: "Home laptop" serves its web
app (`p2psync web`), "Work laptop" runs `p2psync daemon` on 127.0.0.1. "Sync now" runs one round
through the node and the page shows it as it goes, then shows what the sync brought without a
reload; a second press while one runs starts nothing; a peer that is down is the last error, in
words, on the page and in `p2psync status` alike."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.support import cli
from tests.web_support import csrf_of, log_in, request, web_app
from tests.web_sync_support import WORK, Daemon, Devices, ok, ref_id, two_devices, until


@pytest.fixture
def devices(tmp_path: Path) -> Devices:
    return two_devices(tmp_path)


def status_of(library: Path) -> dict[str, Any]:
    return dict(json.loads(ok("--library", str(library), "status", "--json")))


def test_sync_now_shows_progress_and_what_arrived_without_a_reload(devices: Devices, page: Any) -> None:
    work = Daemon(devices.work, "--no-auto")
    try:
        ok("--library", str(devices.home), "sync", "--address", work.address)  # home remembers where work is
        ref = ref_id(devices.home, "Long-term potentiation")
        ok("--library", str(devices.home), "ref", "edit", ref, "--year", "2003")
        ok("--library", str(devices.work), "ref", "edit", ref, "--year", "2005")  # the same field: a conflict
        ok("--library", str(devices.work), "ref", "add", "--title", "Made on the work laptop")
        pdf = devices.work / "hebb1949.pdf"
        pdf.write_bytes(b"%PDF-1.4\n" + b"h" * 300_000)
        ok("--library", str(devices.work), "attach", ref_id(devices.work, "The organization"), str(pdf))
        with web_app(devices.home) as app:
            page.goto(app.login)
            page.goto(app.base + "/sync")
            row = page.locator("#sync-devices tr.peer")
            assert WORK in row.inner_text() and "1 change sets in" not in row.inner_text()
            assert page.locator("#pending").inner_text() == "1"
            assert "Conflicts: 0" in page.locator("#sync-local").inner_text()
            page.evaluate("window.notReloaded = true")
            page.get_by_role("button", name="Sync now").click()
            page.wait_for_selector("#sync-state[data-state=done]")
            state = page.locator("#sync-state").inner_text()
            assert state.startswith("Done: 1 of 1 devices synced"), state
            log = page.locator("#sync-log").inner_text()
            assert "Sync started." in log and f"{WORK} (" in log and "change sets in" in log, log
            assert "Attachments to fetch: 1 (300.0 KB)." in log, log
            bar = page.locator("#sync-progress")
            assert bar.evaluate("b => b.value === b.max && b.max >= 1")
            # What the sync brought shows in the page's live parts, without a reload.
            until(page, lambda: page.locator("#pending").inner_text() == "0")
            until(page, lambda: "Conflicts: 1" in page.locator("#sync-local").inner_text())
            assert "1 change sets in, 1 out" in page.locator("#sync-devices tr.peer").inner_text()
            assert page.evaluate("window.notReloaded") is True
            # The same record as `p2psync status`: what the page says is what the CLI prints.
            [peer] = [p for p in status_of(devices.home)["peers"] if p["name"] == WORK]
            assert peer["received"] == 1 and peer["sent"] == 1
            assert "Made on the work laptop" in ok("--library", str(devices.home), "ref", "list")
            assert status_of(devices.home)["missing_attachments"] == []  # the file came with the round
    finally:
        work.stop()


def test_a_second_press_while_a_sync_runs_starts_nothing(devices: Devices) -> None:
    work = Daemon(devices.work, "--no-auto")
    try:
        ok("--library", str(devices.home), "sync", "--address", work.address)
        with web_app(devices.home) as app:
            session = log_in(app, app.login)
            headers = {**session, "X-CSRF-Token": csrf_of(app, session), "Accept": "application/json"}
            first = request(app.base + "/sync", "POST", headers)
            second = request(app.base + "/sync", "POST", headers)
            assert first.status == 202 and json.loads(first.text)["started"] is True
            assert second.status == 409
            assert json.loads(second.text)["message"] == "A sync is already running; its progress is shown below."
            # Without the CSRF token nothing starts (the door's rule holds here too).
            refused = request(app.base + "/sync", "POST", {**session, "Accept": "application/json"})
            assert refused.status == 403
            # Without script: the form posts, and the page says so after the redirect.
            form = {**session, "Content-Type": "application/x-www-form-urlencoded"}
            for _ in range(100):  # the first round ends within a few seconds on loopback
                answer = request(app.base + "/sync", "POST", form, f"csrf={headers['X-CSRF-Token']}")
                assert answer.status == 303 and answer.headers["Location"] == "/sync"
                text = request(app.base + "/sync", headers=session).text
                if "Sync started; the progress is shown below." in text:
                    break
                assert "A sync is already running" in text
            else:
                raise AssertionError("the first round never ended")
    finally:
        work.stop()


def test_a_peer_that_is_down_is_the_last_error_in_words(devices: Devices, page: Any) -> None:
    work = Daemon(devices.work, "--no-auto")
    ok("--library", str(devices.home), "sync", "--address", work.address)
    work.stop()  # the work laptop is switched off
    with web_app(devices.home) as app:
        page.goto(app.login)
        page.goto(app.base + "/sync")
        assert page.locator("#sync-devices tr.peer td.last-error").inner_text() == "none"
        page.get_by_role("button", name="Sync now").click()
        page.wait_for_selector("#sync-state[data-state=done]")
        assert page.locator("#sync-state").inner_text().startswith("Finished, nothing synced")
        assert f"{WORK}: not synced: Could not reach {work.address}" in page.locator("#sync-log").inner_text()
        error = page.locator("#sync-devices tr.peer td.last-error")
        until(page, lambda: "Could not reach" in error.inner_text())
        [peer] = [p for p in status_of(devices.home)["peers"] if p["name"] == WORK]
        assert peer["last_error"] in error.inner_text()  # the page and `status` say the same words
        assert peer["last_error"].startswith(f"Could not reach {work.address}")
        assert "is p2psync running there?" in peer["last_error"]
        assert peer["last_error_at"][:19].replace("T", " ") in error.inner_text()
        # The last sync that worked is still shown beside the error.
        assert "never synced" not in page.locator("#sync-devices tr.peer td.last-sync").inner_text()


def test_sync_now_in_the_app_a_daemon_serves(devices: Devices) -> None:
    """`daemon --web`: the page's round is the daemon node's own sync_once (its lock keeps the
    daemon's rounds and the page's apart)."""
    work = Daemon(devices.work, "--no-auto")
    home = None
    try:
        ok("--library", str(devices.work), "ref", "add", "--title", "Made on the work laptop")
        home = Daemon(devices.home, "--no-auto", "--web", "--address", work.address)
        assert home.web is not None
        answer = request(home.web)
        port = home.web.split(":")[2].split("/")[0]
        base, cookie = f"http://127.0.0.1:{port}", f"p2psync-{port}"
        session = {"Cookie": f"{cookie}={answer.cookies[cookie]}"}
        page = request(base + "/sync", headers=session).text
        csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        ok("--library", str(devices.work), "ref", "add", "--title", "Also made on the work laptop")
        started = request(base + "/sync", "POST", {**session, "X-CSRF-Token": csrf, "Accept": "application/json"})
        assert started.status == 202
        for _ in range(150):
            page = request(base + "/sync", headers=session).text
            if 'data-state="done"' in page:
                break
            time.sleep(0.1)
        assert "Done: 1 of 1 devices synced" in page, page
        assert "Also made on the work laptop" in ok("--library", str(devices.home), "ref", "list")
    finally:
        if home is not None:
            home.stop()
        work.stop()


def test_attachments_not_here_yet_are_listed_with_why_until_a_sync_brings_them(devices: Devices, page: Any) -> None:
    pdf = devices.work / "bliss1993.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + b"b" * 1_200_000)
    ok("--library", str(devices.work), "attach", ref_id(devices.work, "Synaptic plasticity"), str(pdf))
    with Library.open(devices.home) as home, Library.open(devices.work) as work:
        sync_libraries(home, work)  # the change set that names the file arrives; the file does not
    assert cli("--library", str(devices.home), "sync", "--address", "127.0.0.1:9").returncode == 1  # nobody there
    [missing] = status_of(devices.home)["missing_attachments"]
    assert missing["detail"] == "no device of this library could be reached (1 tried)"
    work_daemon = Daemon(devices.work, "--no-auto")
    try:
        with web_app(devices.home) as app:
            page.goto(app.login)
            page.goto(app.base + "/sync")
            row = page.locator("#sync-local tr", has_text="bliss1993.pdf")
            assert "1.2 MB" in row.inner_text() and missing["detail"] in row.inner_text()
            page.evaluate("window.notReloaded = true")
            ok("--library", str(devices.home), "sync", "--address", work_daemon.address)  # another process syncs
            until(page, lambda: "None: every attachment is here." in page.locator("#sync-local").inner_text())
            assert page.evaluate("window.notReloaded") is True
    finally:
        work_daemon.stop()


def test_the_page_shows_the_last_backup_as_status_does(devices: Devices) -> None:
    with web_app(devices.home) as app:
        session = log_in(app, app.login)
        assert "Last backup: none yet" in request(app.base + "/sync", headers=session).text
    ok("--library", str(devices.home), "backup", "--out", str(devices.home.parent))  # not into the cwd
    line = status_of(devices.home)["last_backup"]
    with web_app(devices.home) as app:
        session = log_in(app, app.login)
        text = request(app.base + "/sync", headers=session).text
        assert "Last backup: " in text and line["path"] in text
