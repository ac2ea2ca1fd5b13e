"""The web app's door (p2psync/web/auth.py): only the user who got the printed link gets in, and
no other site, page or local user can make it change anything. Real `p2psync web` processes on
127.0.0.1, plain HTTP, and one real browser."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.support import cli
from tests.web_support import csrf_of, log_in, read_first_line, request, stop, web_app


@pytest.fixture
def library(tmp_path: Path) -> Path:
    path = tmp_path / "lib"
    assert cli("--library", str(path), "init", "--name", "Door test").returncode == 0
    assert (
        cli(
            "--library", str(path), "ref", "add", "--title", "Plasticity of <b>neurons</b>", "--year", "1999"
        ).returncode
        == 0
    )
    return path


def test_without_the_cookie_every_page_is_refused_in_words(library: Path) -> None:
    with web_app(library) as app:
        for path in ("/", "/sync", "/conflicts", "/devices", "/account", "/events"):
            answer = request(app.base + path)
            assert answer.status == 401, path
            assert "Not logged in" in answer.text
            assert "Plasticity" not in answer.text
        assert request(app.base + "/", headers={"Accept": "application/json"}).status == 401


def test_the_login_link_works_once_and_sets_a_strict_http_only_cookie(library: Path) -> None:
    with web_app(library) as app:
        first = request(app.login)
        assert first.status == 303 and first.headers["Location"] == "/"
        cookie = first.headers["Set-Cookie"]
        assert f"p2psync-{app.port}=" in cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        session = {"Cookie": f"p2psync-{app.port}={first.cookies[f'p2psync-{app.port}']}"}
        assert "Plasticity of &lt;b&gt;neurons&lt;/b&gt;" in request(app.base + "/", headers=session).text
        again = request(app.login)
        assert again.status == 401 and "already used or has expired" in again.text
        assert not again.cookies


def test_a_forged_or_altered_token_is_refused(library: Path) -> None:
    with web_app(library) as app:
        token = app.login.split("token=", 1)[1]
        nonce, expires, mac = token.split(".")
        for bad in (f"{nonce}.{int(expires) + 3600}.{mac}", f"{nonce}.{expires}.{'A' * len(mac)}", "x", ""):
            assert request(f"{app.base}/login?token={bad}").status == 401
        assert request(app.login).status == 303  # the real one was not spent by the tries


def test_a_foreign_host_header_is_refused_even_with_a_session(library: Path) -> None:
    """DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends Host: evil.example."""
    with web_app(library) as app:
        session = log_in(app, app.login)
        for host in (f"evil.example:{app.port}", "evil.example", f"127.0.0.1:{app.port + 1}"):
            answer = request(app.base + "/", headers={**session, "Host": host})
            assert answer.status == 421, host
            assert "Plasticity" not in answer.text
        for host in (f"localhost:{app.port}", f"127.0.0.1:{app.port}"):
            assert request(app.base + "/", headers={**session, "Host": host}).status == 200


def test_a_change_needs_the_session_csrf_token_and_our_origin(library: Path) -> None:
    """/logout changes state (it ends the session): refused without the token or from another
    origin, and then nothing changed (the session still works)."""
    with web_app(library) as app:
        session = log_in(app, app.login)
        csrf = csrf_of(app, session)
        form = {**session, "Content-Type": "application/x-www-form-urlencoded"}
        refused = [
            request(app.base + "/logout", "POST", form, ""),
            request(app.base + "/logout", "POST", form, "csrf=wrong"),
            request(app.base + "/logout", "POST", {**form, "Origin": "http://evil.example"}, f"csrf={csrf}"),
            request(app.base + "/logout", "POST", {**session, "X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}),
        ]
        for answer in refused:
            assert answer.status == 403
            assert "did not come from a page of this app" in answer.text
        assert request(app.base + "/", headers=session).status == 200
        done = request(app.base + "/logout", "POST", {**form, "Origin": app.base}, f"csrf={csrf}")
        assert done.status == 303
        assert request(app.base + "/", headers=session).status == 401


def test_the_secret_and_the_running_record_are_for_the_owner_only(library: Path) -> None:
    with web_app(library) as app:
        for name in ("web-secret", "web.json"):
            mode = stat.S_IMODE(os.stat(library / name).st_mode)
            assert mode & 0o077 == 0, (name, oct(mode))
        login = app.new_login()  # a second `p2psync web` mints a link to this app, starts none
        assert login.startswith(app.base + "/login?token=")
        assert request(login).status == 303
    assert not (library / "web.json").exists()  # a clean stop says the app is gone


def test_daemon_with_web_serves_the_app_and_prints_its_link(library: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "p2psync", "--library", str(library), "daemon", "--listen", "127.0.0.1:0",
         "--no-mdns", "--web", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        document = json.loads(read_first_line(daemon))
        login = document["web"]
        assert login.startswith("http://127.0.0.1:")
        answer = request(login)
        assert answer.status == 303
        port = login.split(":")[2].split("/")[0]
        session = {"Cookie": f"p2psync-{port}={answer.cookies[f'p2psync-{port}']}"}
        assert "Plasticity" in request(f"http://127.0.0.1:{port}/", headers=session).text
        again = cli("--library", str(library), "web", "--no-open", "--json")
        assert json.loads(again.stdout)["already_running"] is True
    finally:
        stop(daemon)


def test_in_a_browser_the_printed_link_logs_in_and_a_stranger_is_refused(
    library: Path, page: Any, browser: Any
) -> None:
    with web_app(library) as app:
        page.goto(app.login)
        assert page.url == app.base + "/"
        assert page.get_by_text("Plasticity of <b>neurons</b>").is_visible()
        stranger = browser.new_context()
        try:
            other = stranger.new_page()
            other.goto(app.base + "/")
            assert "Not logged in" in other.inner_text("h1")
            other.goto(app.login)  # the link was spent by the first browser
            assert "already used" in other.inner_text("main")
        finally:
            stranger.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another local user needs root (runuser)")
def test_another_local_user_cannot_get_in(library: Path, tmp_path: Path) -> None:
    """Another user of this machine can reach 127.0.0.1 too: without the library folder's secret
    (0600 in a 0700 folder) it can neither read a login link nor mint one, and is refused."""
    import subprocess

    for folder in (tmp_path, *tmp_path.parents):  # only the library's own protections remain
        if folder == Path("/"):
            break
        os.chmod(folder, os.stat(folder).st_mode | 0o055)
    with web_app(library) as app:
        as_nobody = ["runuser", "-u", "nobody", "--"]
        steal = subprocess.run(
            [*as_nobody, "cat", str(library / "web-secret"), str(library / "web.json")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert steal.returncode != 0 and "Permission denied" in steal.stderr
        knock = subprocess.run(
            [*as_nobody, "python3", "-c", f"import urllib.request as u\ntry: u.urlopen('{app.base}/')\n"
             "except Exception as e: print(getattr(e, 'code', e))"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert knock.stdout.strip() == "401", knock


def test_an_open_page_does_not_hold_the_app_when_it_stops(library: Path) -> None:
    """A page keeps an event stream open; stopping the app ends it at once, not at its next
    keepalive (15 s)."""
    import http.client
    import signal
    import time

    with web_app(library) as app:
        session = log_in(app, app.login)
        stream = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
        stream.request("GET", "/events", headers=session)
        assert stream.getresponse().status == 200
        start = time.monotonic()
        app.process.send_signal(signal.SIGTERM)
        app.process.wait(timeout=30)
        assert time.monotonic() - start < 5
        stream.close()
