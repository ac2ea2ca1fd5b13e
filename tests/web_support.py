"""What the web app's tests share: a real `p2psync web` process on 127.0.0.1, plain HTTP
requests that do not follow redirects, and the way to a real browser (tests/conftest.py's
`browser` and `page` fixtures: Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests.support import P2PSYNC, cli

CHROMIUM = os.environ.get("P2PSYNC_CHROMIUM", "/usr/bin/chromium")


@dataclass
class WebApp:
    """A running `p2psync web`: `login` is the link it printed (good once)."""

    login: str
    process: subprocess.Popen[str]
    library: Path

    @property
    def port(self) -> int:
        return int(urlsplit(self.login).port or 0)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def new_login(self) -> str:
        """Another one-time link, as `p2psync web` prints when the app is already running."""
        done = cli("--library", str(self.library), "web", "--no-open", "--json")
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert data["already_running"] is True
        return str(data["url"])


def read_first_line(process: subprocess.Popen[str], timeout: float = 30) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if line:
                return line
        if process.poll() is not None:
            break
    raise AssertionError(f"no first line from {process.args}: {process.stderr.read() if process.stderr else ''}")


def stop(process: subprocess.Popen[str]) -> None:
    """End a process this test started (by its PID, through Popen), politely first."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@contextlib.contextmanager
def web_app(library: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[WebApp]:
    """`p2psync web --no-open` serving `library` for the length of the block."""
    base = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
    process = subprocess.Popen(
        [*P2PSYNC, "--library", str(library), "web", "--no-open", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**base, **(env or {})},
    )
    try:
        first = json.loads(read_first_line(process))
        yield WebApp(first["url"], process, library)
    finally:
        stop(process)


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    text: str
    cookies: dict[str, str] = field(default_factory=dict)


def request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | str | None = None
) -> Answer:
    """One HTTP request, redirects not followed (so a test sees the 303 and its cookie)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target or "/", body=body, headers=headers or {})
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        cookies = {}
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            cookies[name] = rest.split(";", 1)[0]
        return Answer(response.status, response.headers, text, cookies)
    finally:
        connection.close()


def log_in(app: WebApp, login: str | None = None) -> dict[str, str]:
    """Headers that carry a session of `app` (from a fresh login link unless one is given)."""
    answer = request(login or app.new_login())
    assert answer.status == 303, answer.text
    name = f"p2psync-{app.port}"
    return {"Cookie": f"{name}={answer.cookies[name]}"}


def csrf_of(app: WebApp, session: dict[str, str]) -> str:
    """The session's CSRF token, as the pages carry it."""
    page = request(app.base + "/", headers=session).text
    marker = 'name="csrf-token" content="'
    return page.split(marker, 1)[1].split('"', 1)[0]
