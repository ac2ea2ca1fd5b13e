"""Starting the web app beside a node, and finding one already running for a library.

`start_web` binds 127.0.0.1 only, and records `web.json` (0600) in the library folder: the app's
address and process. `p2psync web` reads it, and if that app still answers, mints a login link for
it (auth.mint_token, with the library's web secret) instead of starting a second app.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from p2psync.errors import NetworkError
from p2psync.files import write_atomic
from p2psync.node import Node
from p2psync.web.app import make_web_app
from p2psync.web.auth import Door, load_secret, mint_token
from p2psync.web.events import EventHub

RUNNING_FILE = "web.json"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class RunningApp:
    """A web app serving a library: its address and the process that serves it."""

    url: str  # "http://127.0.0.1:PORT/"
    port: int
    pid: int

    def login_url(self, secret: bytes) -> str:
        return f"{self.url}login?token={mint_token(secret)}"


class WebServer:
    def __init__(self, node: Node, runner: web.AppRunner, door: Door, hub: EventHub, running: RunningApp) -> None:
        self.node = node
        self.runner = runner
        self.door = door
        self.hub = hub
        self.running = running

    @property
    def url(self) -> str:
        return self.running.url

    def login_url(self) -> str:
        return self.running.login_url(self.door.secret)

    async def close(self) -> None:
        path = self.node.path / RUNNING_FILE
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        await self.hub.stop()
        await self.runner.cleanup()


async def start_web(node: Node, port: int = 0) -> WebServer:
    """Serve the web app for `node`'s library on 127.0.0.1:`port` (0: a free port)."""
    secret = load_secret(node.path)
    assert secret is not None
    name = await node.worker.call(lambda library: library.name)
    door = Door(secret, port)
    hub = EventHub()
    app = make_web_app(node, door, hub, name)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))  # we bind, so we know the port that 0 became
    except OSError as exc:
        sock.close()
        await runner.cleanup()
        raise NetworkError(f"Cannot serve the web app on {HOST}:{port}: {exc.strerror or exc}.") from None
    door.port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    running = RunningApp(f"http://{HOST}:{door.port}/", door.port, os.getpid())
    write_atomic(node.path / RUNNING_FILE, json.dumps(running.__dict__).encode(), mode=0o600)
    hub.start(node.worker)
    return WebServer(node, runner, door, hub, running)


def find_running(folder: Path) -> RunningApp | None:
    """The web app already serving the library at `folder`, if one is (its process lives and its
    port answers)."""
    try:
        data = json.loads((folder / RUNNING_FILE).read_text())
        running = RunningApp(str(data["url"]), int(data["port"]), int(data["pid"]))
        os.kill(running.pid, 0)
        with socket.create_connection((HOST, running.port), timeout=1):
            return running
    except (OSError, ValueError, KeyError, TypeError):
        return None


def login_url_for(folder: Path, running: RunningApp) -> str:
    secret = load_secret(folder, create=False)
    if secret is None:
        raise FileNotFoundError(folder / "web-secret")
    return running.login_url(secret)
