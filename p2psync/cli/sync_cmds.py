"""sync and daemon (status, which reads only local records, is in status_cmd.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from p2psync.cli.account_cmds import echo_sync
from p2psync.cli.common import (
    TransferProgress,
    json_option,
    library_option,
    library_path,
    mdns_options,
    open_library,
    print_json,
    progress,
)
from p2psync.engine import backup_schedule
from p2psync.errors import InvalidValue, LibraryError, NetworkError, P2PSyncError, RelayError, RelayNotLinked
from p2psync.folder_warnings import folder_warnings
from p2psync.meeting import WAIT_SECONDS, sync_and_wait
from p2psync.model.sizes import human_size
from p2psync.net.discovery import DiscoveryError, check_interfaces
from p2psync.net.protocol import DEFAULT_PORT
from p2psync.node import DISCOVER_SECONDS, Address, Node, SyncResult, SyncRound, parse_address
from p2psync.regular_backups import RegularBackups
from p2psync.relay import link as relay_link
from p2psync.store.transfers import Missing

T = TypeVar("T")
ENV_WAIT = "P2PSYNC_SYNC_WAIT"  # the default of `sync --wait` (the test suite sets 0: tests/conftest.py)

if TYPE_CHECKING:
    from p2psync.net.chunks import FetchReport
    from p2psync.relay.report import RelaySyncReport


def _addresses(texts: tuple[str, ...], peer: str | None) -> list[Address]:
    return [Address(a.host, a.port, peer) for a in (parse_address(t, DEFAULT_PORT) for t in texts)]


@click.command(short_help="Sync now with every reachable member.")
@click.option("--peer", "peer", metavar="DEVICE", help="Sync only with this member (an id or its first letters).")
@click.option("--address", "addresses", multiple=True, metavar="HOST:PORT", help="Where a peer listens (repeatable).")
@click.option("--lan-only", is_flag=True, help="Sync only with peers on the network, not through the relay.")
@click.option("--relay-only", is_flag=True, help="Sync only through the relay (online account).")
@click.option(
    "--wait",
    default=str(int(WAIT_SECONDS)) + "s",
    show_default=True,
    envvar=ENV_WAIT,
    show_envvar=True,
    metavar="DURATION",
    help="Also accept the other devices meanwhile, and wait this long for those not met yet (0: no wait).",
)
@click.option(
    "--listen",
    default=f"0.0.0.0:{DEFAULT_PORT}",
    show_default=True,
    metavar="HOST:PORT",
    help="Where to accept the other devices while waiting (taken: any free port).",
)
@mdns_options
@library_option
@json_option
def sync(
    peer: str | None,
    addresses: tuple[str, ...],
    lan_only: bool,
    relay_only: bool,
    wait: str,
    listen: str,
    no_mdns: bool,
    mdns_interfaces: tuple[str, ...],
    as_json: bool,
) -> None:
    """Sync now with every reachable member of this library (one shot).

    Peers are reached at the addresses given with --address and where members were last reached;
    without --address (and unless --no-mdns) members are also looked for on the LAN, for about two
    seconds at most.

    Run by hand on two machines with no daemon, the two meet: while it runs, and for up to --wait
    (30 s by default) until every other member was synced with once, this sync also accepts
    them, as a daemon does (at --listen, mutual TLS, announced on the LAN unless --no-mdns or
    --address), and dials again those not met yet. So running `p2psync sync` on both machines
    within the wait syncs both ways, attachments too. It ends as soon as all are met; --wait 0
    dials out once and ends. Each change set is applied whole or not at all, so an interrupted sync loses
    nothing: run it again and it resumes. Attachments the change sets name are fetched next, from
    every peer reached (only what this machine lacks; an interrupted file resumes). A library
    linked to an online account (p2psync account) then syncs through the relay too, change sets
    and attachments both ways; --lan-only skips that, --relay-only skips the LAN. Exit code 1 if
    neither a peer nor the relay could be synced (with --relay-only: if the relay sync had an
    error), or if an attachment was cut off or came damaged (sync again).
    """
    with open_library() as library:
        device = library.members.find(peer).device_id if peer else None
        linked = relay_link.is_linked(library)
    if relay_only and lan_only:
        raise InvalidValue("--lan-only and --relay-only exclude each other; give one of them.")
    if relay_only and not linked:
        raise RelayNotLinked(
            "This library is not linked to a relay account; sign up or log in with 'p2psync account signup' "
            "or 'p2psync account login'."
        )
    interfaces = check_interfaces(list(mdns_interfaces)) if mdns_interfaces else None
    look = not relay_only and not no_mdns and not addresses
    given = [] if relay_only else _addresses(addresses, device)
    seconds = 0.0 if relay_only else parse_wait(wait)
    where = parse_address(listen, DEFAULT_PORT, allow_any_port=True)
    done = _run_round(
        given, look, interfaces, device, lan=not relay_only, relay=linked and not lan_only, wait=seconds, where=where
    )
    if not done.targets and not relay_only and not linked:
        raise NetworkError(
            "No peer to sync with: no member was found on the LAN or reached before; pair a device "
            "first (p2psync pair), or give --address HOST:PORT."
        )
    if relay_only and done.relay_error is not None:
        raise done.relay_error  # nothing moved: the reason alone
    with open_library() as library:
        backlog = library.search_backlog()
        with progress(backlog, "Indexing for search") as advance:
            for done_now in library.catch_up_search():
                advance(done_now)
    relay = done.relay if done.relay_error is None else None  # the report of a relay sync that ran
    relay_error = done.relay_error.message if done.relay_error is not None else relay.error if relay else None
    unique = list({id(r): r for r in done.peers}.values())  # a device reached at two addresses once
    if as_json:
        relay_json: dict[str, Any] | None = relay.as_dict() if relay is not None else None
        if done.relay_error is not None:
            with open_library() as library:
                relay_json = {"relay": relay_link.read_link(library).url, "error": relay_error}
        peers_json = [r.as_dict() if not isinstance(r, P2PSyncError) else {"error": r.message} for r in unique]
        print_json(
            {
                "peers": peers_json,
                "attachments": done.attachments.as_dict(),
                "relay": relay_json,
                "arrivals": [a.as_dict() for a in done.arrivals],
            }
        )
    else:
        _echo_arrivals(done)
        _echo_round(unique, done.attachments, relay, relay_error, relay_only)
    relay_ok = relay is not None and relay_error is None
    if relay_only and relay_error:
        raise RelayError(relay_error)
    if not done.lan_ok and not relay_ok:
        if relay_error and not done.peers:
            raise RelayError(relay_error)
        raise NetworkError("No peer could be synced; see the reasons above and 'p2psync status'.")
    if done.named_failed:  # an address the user gave failed: that is what was asked, whatever else worked
        raise NetworkError(f"Could not sync with {', '.join(done.named_failed)}; see the reason above.")
    if done.attachments.disk_full:
        raise LibraryError(done.attachments.disk_full)
    if done.attachments.interrupted:
        raise NetworkError("Some attachments did not arrive whole (see above); sync again to resume where it stopped.")


def _echo_arrivals(done: SyncRound) -> None:
    """The members that synced with this device while it waited (sync --wait)."""
    names = {r.device: r.name for r in done.peers if not isinstance(r, P2PSyncError) and r.device}
    for arrival in done.arrivals:
        click.echo(
            f"{names.get(arrival.device) or 'A member'} ({arrival.device[:7]}) synced with this device "
            f"from {arrival.address}: {arrival.applied} change sets in"
        )


def _echo_round(
    peers: list[SyncResult],
    attachments: FetchReport,
    relay: RelaySyncReport | None,
    relay_error: str | None,
    relay_only: bool,
) -> None:
    for item in peers:
        if isinstance(item, P2PSyncError) or not item.device:
            click.echo(f"Not synced: {item.message if isinstance(item, P2PSyncError) else item.error}", err=True)
            continue
        received = item.received
        click.echo(
            f"{item.name} ({item.device[:7]}) at {item.address}: "
            f"{received.applied} change sets in ({received.entries} changes), {item.sent_applied} out"
            + (f"; {len(received.rejected)} refused, see 'p2psync status'" if received.rejected else "")
        )
    if attachments.files or attachments.wanted_files:
        click.echo(
            f"Attachments: {attachments.files} of {attachments.wanted_files} files in "
            f"({human_size(attachments.bytes_fetched)} fetched, "
            f"{human_size(attachments.bytes_local + attachments.bytes_resumed)} already on this disk)"
        )
    for missing in attachments.missing:
        if missing.reason != Missing.DISK_FULL:  # (that one is said once, as the error below)
            click.echo(f"Still missing: {missing.name} of {missing.ref}: {missing.detail}", err=True)
    if relay is not None:
        echo_sync(relay, show_error=not relay_only)  # with --relay-only it is the error raised below
    elif relay_error:
        click.echo(f"Relay: {relay_error}", err=True)


def _run_round(
    given: list[Address],
    look: bool,
    interfaces: list[str] | None,
    device: str | None,
    lan: bool,
    relay: bool,
    wait: float = 0.0,
    where: Address | None = None,
) -> SyncRound:
    """One round through the node's orchestrator (Node.sync_once), with the LAN looked at first
    (about two seconds at most) when no address was given, and a progress bar for attachments.
    With a `wait`, the node also serves at `where` (announced on the LAN with `look`) and waits
    for the members not met yet (meeting.py)."""
    path = library_path()

    async def run() -> SyncRound:
        node = Node(path)
        try:
            if wait > 0 and where is not None:
                await _serve_while_waiting(node, where, look, interfaces, wait)
            found: list[Address] = []
            if lan and look:
                try:
                    found = await node.find_members(interfaces, DISCOVER_SECONDS, device)
                except DiscoveryError as exc:
                    click.echo(f"Not looking on the LAN: {exc.message}", err=True)
            groups = [given, found] if lan else []
            bar = TransferProgress("Fetching attachments")
            try:
                if wait > 0:
                    return await sync_and_wait(
                        node, given, found, wait, device, relay, on_plan=bar.plan, on_bytes=bar.advance
                    )
                return await node.sync_once(
                    *groups, named=given, device=device, relay=relay, lan=lan, on_plan=bar.plan, on_bytes=bar.advance
                )
            finally:
                bar.close()
        finally:
            await node.stop_lan()
            await node.close()

    try:
        return run_interruptibly(run())
    except KeyboardInterrupt:
        raise NetworkError(
            "The sync was interrupted; every change set that arrived whole is kept, so sync again to resume."
        ) from None


async def _serve_while_waiting(
    node: Node, where: Address, announce: bool, interfaces: list[str] | None, wait: float
) -> None:
    """Accept the other devices as a daemon would, at `where` (or any free port if it is taken:
    a daemon of this machine may hold it), announced on the LAN with `announce`."""
    try:
        port = await node.serve(where.host, where.port)
    except NetworkError:
        port = await node.serve(where.host, 0)
    if announce:
        await node.start_lan(interfaces)
    click.echo(
        f"Accepting this library's other devices on {where.host}:{port} for up to {wait:g} s "
        "(run 'p2psync sync' on them too; --wait 0 to not wait).",
        err=True,
    )


RECANCEL_SECONDS = 0.5


def run_interruptibly(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, with a Ctrl-C (or SIGTERM) that always stops: the round is cancelled, and
    cancelled again every half second until it has stopped, since a library deep in the network
    path may absorb one cancellation (a sync once went on waiting for a cut cable's read timeout);
    then KeyboardInterrupt, even if the round had ended by itself meanwhile."""
    interrupted = False
    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        task = loop.create_task(main)

        def cancel_until_done() -> None:
            if not task.done():
                task.cancel()
                loop.call_later(RECANCEL_SECONDS, cancel_until_done)

        def on_signal() -> None:
            nonlocal interrupted
            if not interrupted:
                interrupted = True
                cancel_until_done()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            result = runner.run(_wait(task))
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
        if interrupted:
            raise KeyboardInterrupt
        return result


async def _wait(task: asyncio.Task[T]) -> T:
    return await task


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


def parse_wait(text: str) -> float:
    """A --wait: a duration, or 0 for none. A bad one is a usage error (exit 2)."""
    if re.fullmatch(r"\s*0+(\.0*)?\s*[smh]?\s*", text):
        return 0.0
    try:
        return parse_duration(text)
    except InvalidValue as exc:
        raise click.BadParameter(exc.message, param_hint="'--wait'") from None


def duration_option(text: str, option: str) -> float:
    """An option's duration; a bad one is a usage error (exit 2), as docs/cli.md says."""
    try:
        return parse_duration(text)
    except InvalidValue as exc:
        raise click.BadParameter(exc.message, param_hint=f"'{option}'") from None


def parse_duration(text: str) -> float:
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise InvalidValue(f"{text!r} is not a duration; write e.g. 30s, 15m or 1h.")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


# `daemon` runs it; `daemon install|uninstall` start it at login
@click.group(invoke_without_command=True, short_help="Serve this library and keep it in sync.")
@click.option(
    "--listen",
    default=f"0.0.0.0:{DEFAULT_PORT}",
    show_default=True,
    metavar="HOST:PORT",
    help="Where to accept other devices (port 0: any free port).",
)
@click.option(
    "--interval",
    default="15m",
    show_default=True,
    help="Sync with every known peer (and the relay, if linked) this often.",
)
@click.option(
    "--no-auto",
    is_flag=True,
    help="Sync only at start, stop and the interval (not on local changes, arriving peers or forwarded changes).",
)
@click.option("--address", "addresses", multiple=True, metavar="HOST:PORT", help="A peer to sync with (repeatable).")
@click.option(
    "--backup-every",
    default=backup_schedule.DEFAULT_EVERY,
    show_default=True,
    metavar="DURATION",
    help="Back up the library this often (e.g. 1d, 7d; 0: never), counted from the last backup on disk.",
)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=backup_schedule.DEFAULT_KEEP,
    show_default=True,
    help="Regular backups kept; the oldest beyond go (only those the daemon made).",
)
@click.option(
    "--backup-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where regular backups go (default: the folder that holds the library).",
)
@click.option("--web", "with_web", is_flag=True, help="Also serve the web app on 127.0.0.1 (see `p2psync web`).")
@click.option(
    "--web-port", type=click.IntRange(0, 65535), default=0, help="The web app's port (default: any free one)."
)
@mdns_options
@library_option
@json_option
def daemon(
    listen: str,
    interval: str,
    no_auto: bool,
    addresses: tuple[str, ...],
    backup_every: str,
    keep: int,
    backup_dir: Path | None,
    with_web: bool,
    web_port: int,
    no_mdns: bool,
    mdns_interfaces: tuple[str, ...],
    as_json: bool,
) -> None:
    """Serve this library to its other devices and keep it in sync automatically.

    Syncs at start, within about a second of any change to the library (made by any p2psync
    command), when another device of the library appears on the LAN (mDNS), soon after a peer
    sent changes (so they travel on to the others), on the interval, and once more on a clean stop
    (Ctrl-C or SIGTERM). Peers that sync with this device are remembered and synced with in turn.
    A library linked to a relay account (p2psync account login) syncs with it at start, on the
    interval and on a clean stop.

    It also backs up the library every --backup-every (7d) into --backup-dir, keeping the newest
    --keep (5) of its regular backups; a backup is due that long after the last one on disk.

    With --web the daemon also serves the web app and prints its login link; `p2psync web` then
    prints a new link to this same app whenever you want one.

    `p2psync daemon install` starts it at every login (`daemon uninstall` stops that).
    """
    if click.get_current_context().invoked_subcommand:
        return  # install or uninstall: they take their own options
    where = parse_address(listen, DEFAULT_PORT, allow_any_port=True)
    every = duration_option(interval, "--interval")
    backups = _regular_backups(backup_every, keep, backup_dir)
    static = _addresses(addresses, None)
    interfaces = check_interfaces(list(mdns_interfaces)) if mdns_interfaces else None
    path = library_path()
    with open_library():
        pass  # fail early, in words, if there is no library
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("zeroconf").setLevel(logging.WARNING)  # its INFO lines are about packets, not peers
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # its INFO lines count raw file events
    warnings = folder_warnings(path)
    for warning in warnings:  # into the daemon's log (stderr), where a service manager keeps it
        logging.getLogger("p2psync.daemon").warning("%s", warning.message)

    async def run() -> None:
        node = Node(path)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        web_server = None
        try:
            port = await node.serve(where.host, where.port)
            if with_web:
                from p2psync.web.server import start_web

                web_server = await start_web(node, web_port)
            if as_json:  # one document, at once, so that a script learns the port (with --listen ...:0)
                device = await node.worker.call(lambda library: library.device_id)
                document: dict[str, Any] = {"listening": f"{where.host}:{port}", "device_id": device}
                document["warnings"] = [warning.as_dict() for warning in warnings]
                if web_server is not None:
                    document["web"] = web_server.login_url()
                click.echo(json.dumps(document))
                sys.stdout.flush()
            click.echo(f"Serving on {where.host}:{port}; stop with Ctrl-C.", err=True)
            if web_server is not None and not as_json:
                click.echo(f"Web app: {web_server.login_url()}", err=True)
            await node.run_daemon(
                stop,
                static,
                every,
                auto=not no_auto,
                mdns=not no_mdns,
                mdns_interfaces=interfaces,
                backups=backups,
            )
        finally:
            if web_server is not None:
                await web_server.close()
            await node.close()
        click.echo("Stopped cleanly.", err=True)

    asyncio.run(run())


def _regular_backups(every: str, keep: int, folder: Path | None) -> RegularBackups | None:
    """daemon --backup-every/--keep/--backup-dir as a schedule (None: --backup-every 0)."""
    try:
        seconds = backup_schedule.parse_every(every)
    except InvalidValue as exc:
        raise click.BadParameter(exc.message, param_hint="'--backup-every'") from None
    return RegularBackups(backup_schedule.Schedule(seconds, keep), folder) if seconds else None


from p2psync.cli.daemon_install import install, uninstall  # noqa: E402  (after daemon: it is their group)

daemon.add_command(install)
daemon.add_command(uninstall)
