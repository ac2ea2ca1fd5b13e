"""peers, peers remove."""

from __future__ import annotations

import click

from p2psync.cli.common import confirm, json_option, library_option, open_library, print_json, yes_option
from p2psync.relay import state as relay_state
from p2psync.store.library import members


@click.group(invoke_without_command=True)
@library_option
@json_option
@click.pass_context
def peers(ctx: click.Context, as_json: bool) -> None:
    """List the devices that belong to this library (its members).

    Every member may sign changes; a device paired with any member is trusted by all of them,
    because the membership itself is replicated and signed.
    """
    if ctx.invoked_subcommand is not None:
        return
    with open_library() as library:
        devices = library.members.listing()
    if as_json:
        print_json([d.as_dict() for d in devices])
        return
    for d in devices:
        notes = [n for n, on in (("this device", d.this_device), ("removed", d.revoked)) if on]
        introduced = f"introduced by {d.introducer[:7]}" if d.introducer else "founded the library"
        suffix = f"  ({', '.join(notes)})" if notes else ""
        click.echo(f"{d.short_id}  {d.name:<24} {introduced}{suffix}")


@peers.command("remove")
@click.argument("device")
@library_option
@yes_option
@json_option
def remove(device: str, yes: bool, as_json: bool) -> None:
    """Remove a device from the library (say, a lost laptop).

    Its changes made after what this machine has seen from it are refused by every member that
    receives the removal. It cannot be undone; pair the device again to bring it back as new.
    A library linked to an online account also cuts the device off the relay and changes the
    library key at its next sync with it; change the account's password if the device knew it.
    """
    with open_library() as library:
        target = library.members.find(device)
        confirm(members.removal_question(target), yes)
        removed = library.members.revoke(device)
        linked = relay_state.is_linked(library)
    relay = relay_state.REMOVAL_ADVICE if linked else None
    if as_json:
        print_json({"removed": removed.as_dict(), "relay": relay})
    else:
        click.echo(members.removed_sentence(removed))
        if relay:
            click.echo(relay)
