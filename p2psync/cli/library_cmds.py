"""init, info, library rename, device, device rename."""

from __future__ import annotations

import click

from p2psync.cli.common import json_option, library_option, library_path, open_library, print_json, warn_about_folder
from p2psync.model.sizes import human_size
from p2psync.store.library import Library, members


@click.command()
@click.option("--name", help="A name for the library (default: the folder's name).")
@library_option
@json_option
def init(name: str | None, as_json: bool) -> None:
    """Create a new, empty library (and this device's key for it)."""
    path = library_path()
    with Library.create(path, name) as library:
        data = library.info()
    warnings = warn_about_folder(path)
    if as_json:
        print_json({**data, "warnings": warnings})
    else:
        click.echo(f"Created library {data['name']!r} at {data['path']}")
        click.echo(f"This device: {data['device_short_id']} (full id {data['device_id']})")


@click.command()
@library_option
@json_option
def info(as_json: bool) -> None:
    """Show the library's name, location, identity and counts."""
    with open_library() as library:
        data = library.info()
    if as_json:
        print_json(data)
        return
    rows = [
        ("Library", f"{data['name']} ({data['library_id']})"),
        ("Path", data["path"]),
        ("Device", f"{data['device_short_id']} ({data['device_id']})"),
        ("Created", data["created"]),
        ("References", data["references"]),
        ("Trash", data["trash"]),
        ("Groups", data["groups"]),
        ("Attachments", f"{data['attachments']} ({_size(data['attachment_bytes'])})"),
        ("Conflicts", data["conflicts"]),
        ("Logged changes", data["changes"]),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':<16}{value}")


@click.group(invoke_without_command=True)
@library_option
@json_option
@click.pass_context
def device(ctx: click.Context, as_json: bool) -> None:
    """Show this device's id (what other machines pin when you pair)."""
    if ctx.invoked_subcommand is not None:
        return
    with open_library() as library:
        data = library.info()
    out = {"device_id": data["device_id"], "short_id": data["device_short_id"], "library_id": data["library_id"]}
    if as_json:
        print_json(out)
    else:
        click.echo(f"{out['short_id']}  {out['device_id']}")


@device.command("rename", short_help="Rename this device on every member.")
@click.argument("name")
@library_option
@json_option
def rename(name: str, as_json: bool) -> None:
    """Rename this device (by default it is named after the host) for every member of the
    library: the new name reaches the others with the next sync."""
    with open_library() as library:
        renamed = library.members.rename(name)
    if as_json:
        print_json(renamed.as_dict())
    else:
        click.echo(members.renamed_sentence(renamed))


@click.group()
def library() -> None:
    """The library as a whole (its name syncs to every device)."""


@library.command("rename")
@click.argument("name")
@library_option
@json_option
def library_rename(name: str, as_json: bool) -> None:
    """Rename the library on every device.

    The name changes here now and on the other devices with the next sync; if two devices
    rename it before they sync, the later rename wins everywhere."""
    with open_library() as opened:
        new_name = opened.rename(name)
        data = {"name": new_name, "library_id": opened.library_id}
    if as_json:
        print_json(data)
    else:
        click.echo(f"Renamed the library to {new_name!r}; other devices take the name at their next sync.")


def _size(n: int) -> str:
    return human_size(n)
