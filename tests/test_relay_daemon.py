"""The daemon and the relay: a linked library's daemon syncs with its account at start, on the
interval and on a clean stop (DESIGN.md section 1), with a real relay and a real daemon process."""

from __future__ import annotations

from pathlib import Path

from p2psync.store.library import Library
from tests import relay_link as link
from tests.test_daemon_loopback import start_daemon, stop, wait_for
from tests.test_relay_sync import PASSWORD, start_relay, stop_relay


def test_a_linked_daemon_syncs_with_the_relay_on_start_interval_and_stop(tmp_path: Path) -> None:
    relay = start_relay(tmp_path / "relay-data")
    try:
        home = Library.create(tmp_path / "home", "home")
        home.add_reference({"title": "Written at home"})
        link.login(home, relay.url, "daemon@example.org", PASSWORD, signup=True, ask=lambda question: True)
        home.close()
        work = Library.create(tmp_path / "work", "work")
        link.login(work, relay.url, "daemon@example.org", PASSWORD, ask=lambda question: True)
        work.add_reference({"title": "Written at work, before the daemon started"})
        link.sync_with_relay(work)
        work.close()
        daemon, _port = start_daemon(tmp_path / "home", "--interval", "2s")
        try:
            wait_for(tmp_path / "home", "Written at work, before the daemon started")  # at start
            with Library.open(tmp_path / "work") as work:
                work.add_reference({"title": "Written at work, later"})
                link.sync_with_relay(work)
            wait_for(tmp_path / "home", "Written at work, later")  # on the interval
            with Library.open(tmp_path / "home") as home:
                home.add_reference({"title": "Written at home just before the stop"})
        finally:
            code, err = stop(daemon)
        assert code == 0, err
        assert "synced with the relay" in err, err
        with Library.open(tmp_path / "work") as work:
            link.sync_with_relay(work)  # the clean stop pushed it
            assert "Written at home just before the stop" in {r["title"] for r in work.list_references()}
    finally:
        stop_relay(relay)
