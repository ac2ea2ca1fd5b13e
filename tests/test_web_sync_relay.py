"""Sync Status for a library linked to a relay account: a real `p2psync relay serve` on 127.0.0.1,
"Home laptop" signed up, "Work laptop" logged in to the same account. The page shows the relay's
last sync and what moved, "Sync now" goes through the relay (the laptops never met on a LAN) and
shows the account's usage, and a relay that is down is the last error, in words, as `p2psync
status` says it."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from p2psync.store.library import Library
from tests import relay_link as link
from tests.sync_support import founded
from tests.test_relay_sync import PASSWORD, start_relay, stop_relay
from tests.web_support import web_app
from tests.web_sync_support import HOME, WORK, ok, until

EMAIL = "m.curie@example.org"


def test_the_relay_on_the_page_and_sync_now_through_it(tmp_path: Path, page: Any) -> None:
    relay = start_relay(tmp_path / "relay-data", "--signups-per-hour", "1000")
    stopped = False
    try:
        outside_the_browser_loop(lambda: two_laptops_on_one_account(tmp_path, relay.url))
        with web_app(tmp_path / "home") as app:
            page.goto(app.login)
            page.goto(app.base + "/sync")
            section = page.locator("#sync-relay")
            assert EMAIL in section.inner_text() and relay.url in section.inner_text()
            assert "never synced" not in section.inner_text()  # the sign-up synced
            page.evaluate("window.notReloaded = true")
            page.get_by_role("button", name="Sync now").click()
            page.wait_for_selector("#sync-state[data-state=done]", timeout=30_000)
            state = page.locator("#sync-state").inner_text()
            assert state.startswith("Done: no device to reach on the network, the relay synced"), state
            log = page.locator("#sync-log").inner_text()
            assert f"Relay {relay.url}: " in log and "change sets in" in log, log
            until(page, lambda: "MB used" in section.inner_text())
            moved = section.inner_text()
            assert "change sets in" in moved and "chunks out" in moved, moved
            assert page.evaluate("window.notReloaded") is True
            assert "Made on the work laptop" in ok("--library", str(tmp_path / "home"), "ref", "list")

            stop_relay(relay)  # the relay goes away
            stopped = True
            page.get_by_role("button", name="Sync now").click()
            until(page, lambda: "Relay: " in page.locator("#sync-log").inner_text(), 60)
            page.wait_for_selector("#sync-state[data-state=done]")
            assert page.locator("#sync-state").inner_text().startswith("Finished, nothing synced")
            recorded = json.loads(ok("--library", str(tmp_path / "home"), "status", "--json"))["relay"]
            assert recorded["last_error"], recorded
            until(page, lambda: recorded["last_error"] in section.inner_text())
    finally:
        if not stopped:
            stop_relay(relay)


def two_laptops_on_one_account(tmp_path: Path, url: str) -> None:
    """Home signs up (binding its library), work logs in (receiving it) and adds a paper."""
    with founded(tmp_path / "home", "Neuroscience") as home:
        home.members.rename(HOME)
        home.refs.add({"title": "The organization of behavior", "year": "1949"})
        link.signup(home, url, EMAIL, PASSWORD)
    with Library.create(tmp_path / "work", "Neuroscience", found=False) as work:
        link.login(work, url, EMAIL, PASSWORD)
        work.members.rename(WORK)
        work.refs.add({"title": "Made on the work laptop", "year": "2026"})
        link.sync_with_relay(work)


def outside_the_browser_loop(work: Callable[[], None]) -> None:
    """The relay client's blocking face runs its own event loop; Playwright's runs in this thread."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(work).result()
