"""peers, peers remove."""

from __future__ import annotations

import click

from p2psync.cli.common import confirm, json_option, library_option, open_library, print_json, yes_option
from p2psync.relay import link as relay_link

# What `peers remove` adds for a library linked to an online account (docs/security.md, the relay).
RELAY_ADVICE = (
    "At this library's next sync with the relay, the removed device is cut off there and the library key "
    "changes, so it reads nothing written afterwards; sync now ('p2psync sync'). If that device knew the "
    "account's password, change the password too ('p2psync account password'): with it, any machine can "
    "log in again as a new device."
)


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
        confirm(f"Remove device {target.short_id} ({target.name}) from this library on every machine?", yes)
        removed = library.members.revoke(device)
        linked = relay_link.is_linked(library)
    relay = RELAY_ADVICE if linked else None
    if as_json:
        print_json({"removed": removed.as_dict(), "relay": relay})
    else:
        click.echo(f"Removed {removed.short_id} ({removed.name}); the removal reaches the others with the next sync.")
        if relay:
            click.echo(relay)
