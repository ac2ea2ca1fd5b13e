"""status: what sync is doing, from this machine's records only (no network, so no aiohttp)."""

from __future__ import annotations

import click

from p2psync.cli.common import json_option, library_option, library_path, open_library, print_json
from p2psync.cli.daemon_install import installed
from p2psync.sync_status import MISSING_SHOWN, sync_status


@click.command()
@library_option
@json_option
def status(as_json: bool) -> None:
    """What sync is doing: each peer (last seen, address, last sync, what moved, last error), the
    relay if the library is linked to an account (last sync, what moved, last error), local
    changes not yet sent, conflicts, and recent problems with what peers (or the relay) sent."""
    with open_library() as library:
        data = sync_status(library)  # the same record the web app's Sync Status page shows
    service = installed(library_path())  # daemon install: where its log is
    if as_json:
        at_login = {"path": str(service.path), "logs": service.logs} if service else None
        print_json({**data.as_dict(), "start_at_login": at_login})
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
            click.echo(f"    {item.ref}  {item.name} ({item.size / 1e6:.1f} MB): {item.detail}")
        if len(missing) > MISSING_SHOWN:
            click.echo(f"    ... and {len(missing) - MISSING_SHOWN} more (status --json lists all)")
    for problem in data.problems:
        click.echo(f"Problem from {problem.peer[:7]} ({problem.reason}): {problem.message}")
    if service:
        click.echo(f"Starts at login: {service.path}; its log: {service.logs}")
