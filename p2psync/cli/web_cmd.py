"""p2psync web: the library in a browser (p2psync/web/)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import webbrowser

import click

from p2psync.cli.common import json_option, library_option, library_path, open_library


@click.command(short_help="Open the library in your browser.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port on 127.0.0.1 (default: any free one).")
@click.option("--no-open", is_flag=True, help="Do not open the browser; only print the link.")
@library_option
@json_option
def web(port: int, no_open: bool, as_json: bool) -> None:
    """Open the library in your browser: references, Sync Status, Sync Conflicts, devices, account.

    The app listens on 127.0.0.1 only. The first line printed is the link to open: it logs this
    browser in and works once (run `p2psync web` again for another). If a daemon started with
    --web (or another `p2psync web`) already serves this library, this prints a new link to it
    and exits. Stop with Ctrl-C.
    """
    from p2psync.web.server import find_running, login_url_for

    path = library_path()
    with open_library():
        pass  # fail early, in words, if there is no library
    running = find_running(path)
    if running is not None and port in (0, running.port):
        url = login_url_for(path, running)
        _announce(url, as_json, no_open, running=True)
        return
    asyncio.run(_serve(port, no_open, as_json))


def _announce(url: str, as_json: bool, no_open: bool, running: bool = False) -> None:
    click.echo(json.dumps({"url": url, "already_running": running}) if as_json else url)
    sys.stdout.flush()
    if not running:
        click.echo("Serving the library on 127.0.0.1 only; stop with Ctrl-C.", err=True)
    if not no_open:
        webbrowser.open(url)


async def _serve(port: int, no_open: bool, as_json: bool) -> None:
    from p2psync.node import Node
    from p2psync.web.server import start_web

    node = Node(library_path())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        server = await start_web(node, port)
        try:
            _announce(server.login_url(), as_json, no_open)
            await stop.wait()
        finally:
            await server.close()
    finally:
        await node.close()
    click.echo("Stopped.", err=True)
