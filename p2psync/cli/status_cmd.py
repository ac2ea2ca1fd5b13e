"""status: what sync is doing, from this machine's records only (no network, so no aiohttp)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from p2psync.cli.common import json_option, library_option, library_path, open_library, print_json
from p2psync.cli.daemon_install import Plan, installed
from p2psync.model.sizes import human_size
from p2psync.store.backup import backup_line
from p2psync.sync_status import MISSING_SHOWN, SyncProgress, SyncStatus, read_progress, sync_status


@click.command(short_help="What sync is doing, per peer and the relay.")
@click.option("--watch", is_flag=True, help="Show it live, with a running daemon's progress, until Ctrl-C.")
@click.option("--count", type=click.IntRange(min=1), help="With --watch: stop after this many refreshes.")
@click.option(
    "--every", type=click.FloatRange(min=0.1), default=1.0, show_default=True, help="With --watch: seconds between two."
)
@library_option
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool, watch: bool, count: int | None, every: float) -> None:
    """What sync is doing: each peer (last seen, address, last sync, what moved, last error), the
    relay if the library is linked to an account (last sync, what moved, last error), local
    changes not yet sent, conflicts, recent problems with what peers (or the relay) sent, and the
    last backup (when, where).

    With --watch, the same live, refreshed every second, headed by what the library's daemon is
    doing (devices synced in its round, change sets in and out, attachment bytes fetched)."""
    if watch:
        _watch(ctx, as_json, count, every)
        return
    with open_library() as library:
        data = sync_status(library)  # the same record the web app's Sync Status page shows
    service = installed(library_path())  # daemon install: where its log is
    if as_json:
        print_json(_document(data, service))
        return
    relay = data.relay
    if not data.devices and not relay:
        click.echo("No other devices yet; pair one with 'p2psync pair'.")
    for p in data.devices:
        state = "removed" if p.revoked else (f"last sync {p.last_sync}" if p.last_sync else "never synced")
        click.echo(f"{p.short_id}  {p.name:<20} {state}")
        if p.address:
            click.echo(f"    at {p.address}, last seen {p.last_seen or 'never'}")
        if p.last_sync:
            click.echo(f"    last sync: {p.received} change sets in, {p.sent} out")
        if p.last_error:
            click.echo(f"    last error ({p.last_error_at}): {p.last_error}")
    if relay:
        state = f"last sync {relay.last_sync}" if relay.last_sync else "never synced"
        click.echo(f"Relay {relay.relay} ({relay.email}{'' if relay.logged_in else ', logged out'}): {state}")
        if relay.last_sync and relay.moved:
            click.echo(
                f"    last sync: {relay.moved_count('received')} change sets in, {relay.moved_count('sent')} out, "
                f"{relay.moved_count('files_in')} attachment files in, {relay.moved_count('chunks_out')} chunks out"
            )
        if relay.last_error:
            click.echo(f"    last error ({relay.last_error_at}): {relay.last_error}")
    click.echo(f"Local changes not yet sent: {data.pending_local_changes}")
    click.echo(f"Conflicts: {data.conflicts}" + (" (see 'p2psync conflicts list')" if data.conflicts else ""))
    missing = data.missing_attachments
    if missing:
        click.echo(f"Attachments not on this machine yet: {len(missing)}")
        for item in missing[:MISSING_SHOWN]:
            click.echo(f"    {item.ref}  {item.name} ({human_size(item.size)}): {item.detail}")
        if len(missing) > MISSING_SHOWN:
            click.echo(f"    ... and {len(missing) - MISSING_SHOWN} more (status --json lists all)")
    for problem in data.problems:
        click.echo(f"Problem from {problem.peer[:7]} ({problem.reason}): {problem.message}")
    click.echo(backup_line(data.last_backup))
    if service:
        click.echo(f"Starts at login: {service.path}; its log: {service.logs}")


def _document(data: SyncStatus, service: Plan | None) -> dict[str, Any]:
    """The document `status --json` prints (`status --watch --json`: one per line)."""
    at_login = {"path": str(service.path), "logs": service.logs} if service else None
    return {**data.as_dict(), "start_at_login": at_login}


def _watch(ctx: click.Context, as_json: bool, count: int | None, every: float) -> None:
    """Refresh until Ctrl-C (or `count` times): on a terminal the screen is redrawn; --json prints
    one JSON line per refresh (the document of `status --json` plus "progress")."""
    refreshes = 0
    redraw = sys.stdout.isatty() and not as_json
    try:
        while count is None or refreshes < count:
            if refreshes:
                time.sleep(every)
            refreshes += 1
            progress = read_progress(library_path())
            if as_json:
                with open_library() as library:
                    data = sync_status(library)
                document = {**_document(data, installed(library_path())), "progress": progress and progress.as_dict()}
                click.echo(json.dumps(document, ensure_ascii=False))
                sys.stdout.flush()
                continue
            if redraw:
                click.echo("\x1b[H\x1b[2J", nl=False)  # home and clear: the view stays in place
            click.echo(progress_line(progress))
            ctx.invoke(status, as_json=False, watch=False, count=None, every=every)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return  # Ctrl-C ends a watch: that is how it is meant to stop


def progress_line(progress: SyncProgress | None) -> str:
    """What the daemon is doing, in one line."""
    if progress is None:
        return "No daemon is running for this library (start one with 'p2psync daemon')."
    moved = f"{progress.changesets_in} change sets in, {progress.changesets_out} out"
    files = ""
    if progress.files_total:
        files = (
            f"; attachments {human_size(progress.bytes_done)} of {human_size(progress.bytes_total)} "
            f"({progress.files_total} files)"
        )
    if progress.running:
        return f"Daemon syncing: {progress.peers_done} of {progress.peers_planned} devices, {moved}{files}"
    if progress.ended is None:
        return "Daemon running, no round yet."
    ended = time.strftime("%H:%M:%S", time.localtime(progress.ended / 1000))
    return f"Daemon idle; its last round ended at {ended}: {progress.peers_done} devices, {moved}{files}"
