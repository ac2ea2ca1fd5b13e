"""status: what sync is doing, from this machine's records only (no network, so no aiohttp)."""

from __future__ import annotations

import click

from p2psync.cli.common import json_option, library_option, open_library, print_json
from p2psync.relay import state as relay_link
from p2psync.store import peers as peer_store
from p2psync.store import transfers
from p2psync.store.sync import recent_problems, unsealed_count


@click.command()
@library_option
@json_option
def status(as_json: bool) -> None:
    """What sync is doing: each peer (last seen, address, last sync, what moved, last error), the
    relay if the library is linked to an account (last sync, what moved, last error), local
    changes not yet sent, conflicts, and recent problems with what peers (or the relay) sent."""
    with open_library() as library:
        peers = peer_store.peer_status(library)
        data = {
            "device_id": library.device_id,
            "peers": [p.as_dict() for p in peers],
            "pending_local_changes": unsealed_count(library),
            "conflicts": library.info()["conflicts"],
            "search_backlog": library.search_backlog(),
            "problems": recent_problems(library, limit=5),
            "missing_attachments": transfers.missing(library),
            "relay": relay_link.summary(library),
        }
    if as_json:
        print_json(data)
        return
    relay = data["relay"]
    account_device = relay.get("account_device") if relay else None
    peers = [p for p in peers if p.device_id != account_device]  # the account's key: the relay line
    if not peers and not relay:
        click.echo("No other devices yet; pair one with 'p2psync pair'.")
    for p in peers:
        state = "removed" if p.revoked else (f"last sync {p.last_sync}" if p.last_sync else "never synced")
        click.echo(f"{p.short_id}  {p.name:<20} {state}")
        if p.address:
            click.echo(f"    at {p.address}, last seen {p.last_seen or 'never'}")
        if p.last_sync:
            click.echo(f"    last sync: {p.received} change sets in, {p.sent} out")
        if p.last_error:
            click.echo(f"    last error ({p.last_error_at}): {p.last_error}")
    if relay:
        state = f"last sync {relay['last_sync']}" if relay["last_sync"] else "never synced"
        click.echo(f"Relay {relay['relay']} ({relay['email']}{'' if relay['logged_in'] else ', logged out'}): {state}")
        moved = relay["moved"]
        if relay["last_sync"] and moved:
            click.echo(
                f"    last sync: {moved.get('received', 0)} change sets in, {moved.get('sent', 0)} out, "
                f"{moved.get('files_in', 0)} attachment files in, {moved.get('chunks_out', 0)} chunks out"
            )
        if relay["last_error"]:
            click.echo(f"    last error ({relay['last_error_at']}): {relay['last_error']}")
    click.echo(f"Local changes not yet sent: {data['pending_local_changes']}")
    click.echo(f"Conflicts: {data['conflicts']}" + (" (see 'p2psync conflicts list')" if data["conflicts"] else ""))
    missing = data["missing_attachments"]
    if missing:
        click.echo(f"Attachments not on this machine yet: {len(missing)}")
        for item in missing[:20]:
            click.echo(f"    {item['ref']}  {item['name']} ({item['size'] / 1e6:.1f} MB): {item['detail']}")
        if len(missing) > 20:
            click.echo(f"    ... and {len(missing) - 20} more (status --json lists all)")
    for problem in data["problems"]:
        click.echo(f"Problem from {problem['peer'][:7]} ({problem['reason']}): {problem['message']}")
