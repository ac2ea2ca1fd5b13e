"""The Account page (p2psync/web/account_pages.py) against a real `p2psync relay serve` on
127.0.0.1: sign-up, usage against the quota, logout, login, purge and reset, with the words of
`p2psync account`; passwords never come back in a page nor land in the app's output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from p2psync.relay import account_words as words
from p2psync.relay import link_rules
from p2psync.web.auth import CSRF_FIELD
from tests.support import cli
from tests.test_relay_accounts import Relay, cli_env
from tests.web_support import WebApp, csrf_of, log_in, request, web_app

FORM = "application/x-www-form-urlencoded"
SECRET = "correct horse battery staple 7"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    server = Relay(tmp_path_factory.mktemp("relay") / "data", "--quota", "50MB")
    yield server
    server.stop()


@pytest.fixture
def library(tmp_path: Path) -> Path:
    path = tmp_path / "lib"
    assert cli("--library", str(path), "init", "--name", "Lab").returncode == 0
    assert cli("--library", str(path), "ref", "add", "--title", "Synaptic tagging", "--year", "1997").returncode == 0
    return path


def post(app: WebApp, session: dict[str, str], path: str, **fields: str) -> Any:
    body = urlencode({CSRF_FIELD: csrf_of(app, session), **fields})
    return request(app.base + path, "POST", {**session, "Content-Type": FORM}, body)


def test_bad_logins_are_refused_in_one_sentence_and_never_echo_the_password(
    relay: Relay, library: Path, tmp_path: Path
) -> None:
    with web_app(library, env=cli_env(tmp_path)) as app:
        session = log_in(app)
        page = request(app.base + "/account", headers=session)
        assert page.status == 200 and words.NOT_LINKED.replace("'", "&#39;") in page.text
        assert 'type="password"' in page.text
        cases = [
            ({"email": "ada@example.org", "password": ""}, words.EMPTY_PASSWORD.replace("'", "&#39;")),
            ({"email": "not an address", "password": SECRET}, "e-mail"),
            (
                {"email": "ada@example.org", "password": SECRET, "password_again": SECRET + "x", "action": "signup"},
                "The two passwords differ",
            ),
            ({"email": "nobody@example.org", "password": SECRET}, ""),  # no such account: the relay says so
        ]
        for fields, says in cases:
            answer = post(app, session, "/account/login", relay=relay.url, **fields)
            assert answer.status == 400, fields
            assert says in answer.text, (fields, answer.text[-800:])
            assert SECRET not in answer.text
        assert cli("--library", str(library), "account", "status").stdout.strip() == words.NOT_LINKED
        forged = post(app, session, "/account/login", relay="http://10.1.2.3:9", email="a@b.org", password=SECRET)
        assert forged.status == 400 and "plain http://" in forged.text
    assert SECRET not in app.process.stderr.read() if app.process.stderr else True


def test_in_a_browser_sign_up_usage_logout_login_purge_and_reset(
    relay: Relay, library: Path, tmp_path: Path, page: Any
) -> None:
    email = "ana@example.org"
    with web_app(library, env=cli_env(tmp_path)) as app:
        page.goto(app.login)
        page.get_by_role("link", name="Account").click()
        assert page.get_by_text(words.NOT_LINKED).is_visible()
        page.get_by_label("Relay address").fill(relay.url)
        page.get_by_label("E-mail").fill(email)
        page.get_by_label("Password", exact=True).fill(SECRET)
        page.get_by_label("Password again").fill(SECRET)
        page.get_by_role("button", name="Sign up").click()
        assert page.get_by_text(f"Signed up as {email} on {relay.url}").is_visible()
        status = page.locator("#account-status").inner_text()
        assert "this library" in status and "of 50.0 MB" in status
        assert page.locator("meter#usage").count() == 1
        assert SECRET not in page.content()

        page.get_by_role("button", name="Log out").nth(1).click()  # the first is the app's own
        assert page.get_by_text(f"Logged out of {email} on {relay.url}.").is_visible()
        assert "(logged out)" in page.locator("#account-status").inner_text()

        page.get_by_label("Password", exact=True).fill(SECRET)
        page.get_by_role("button", name="Log in").click()
        assert page.get_by_text(f"Logged in as {email} on {relay.url}: the account holds this library.").is_visible()

        page.get_by_role("link", name="Delete everything the account stores on the relay").click()
        assert page.get_by_text(f"Delete everything the account {email} stores on the relay").is_visible()
        page.get_by_role("button", name="Delete everything on the relay").click()
        assert page.get_by_text(f"The account {email} on {relay.url} is empty and holds no library now").is_visible()

        page.get_by_role("button", name="Reset this library's sync state").click()
        assert page.get_by_text(link_rules.RESET_MESSAGE).is_visible()
        assert page.get_by_text(words.NOT_LINKED).is_visible()

        # The e-mail with #!resetLocalSync resets instead of logging in, as on the command line.
        page.get_by_label("Relay address").fill(relay.url)
        page.get_by_label("E-mail").fill(email + "#!resetLocalSync")
        page.get_by_role("button", name="Log in").click()
        assert page.get_by_text(link_rules.RESET_MESSAGE).is_visible()
        refs = cli("--library", str(library), "ref", "list")
        assert "Synaptic tagging" in refs.stdout  # every reference stays


def test_the_app_keeps_answering_while_a_login_brings_a_big_library(relay: Relay, tmp_path: Path) -> None:
    """Logging in to an account that holds 20,000 references pulls and applies them all; meanwhile
    every other page of the app must still answer (the login's library work must not run on the
    app's event loop)."""
    import threading
    import time

    from p2psync.store.library import Library
    from tests.test_relay_accounts import account

    big = tmp_path / "big"
    with Library.create(big, "Big") as made:
        made.add_references(
            {"title": f"Reference number {i} on synaptic plasticity", "year": str(1950 + i % 70)} for i in range(20_000)
        )
    done = account(tmp_path, big, "signup", relay.url, "big@example.org", SECRET)
    assert done.returncode == 0, done.stderr
    empty = tmp_path / "empty"
    assert cli("--library", str(empty), "init", "--name", "Empty").returncode == 0
    with web_app(empty, env=cli_env(tmp_path)) as app:
        session = log_in(app)
        body = urlencode(
            {CSRF_FIELD: csrf_of(app, session), "relay": relay.url, "email": "big@example.org", "password": SECRET}
        )
        answers: list[Any] = []
        headers = {**session, "Content-Type": FORM}
        logging_in = threading.Thread(
            target=lambda: answers.append(request(app.base + "/account/login", "POST", headers, body))
        )
        logging_in.start()
        slowest = 0.0
        deadline = time.monotonic() + 120
        while logging_in.is_alive() and time.monotonic() < deadline:
            start = time.monotonic()
            assert request(app.base + "/devices", headers=session).status == 200
            slowest = max(slowest, time.monotonic() - start)
            time.sleep(0.05)
        logging_in.join(timeout=120)
        assert answers and answers[0].status == 303, answers[0].text[-600:] if answers else "no answer"
        assert "20000" in cli("--library", str(empty), "info", "--json").stdout.replace(" ", "")
        assert slowest < 1.0, f"a page waited {slowest:.1f} s behind the login"
