"""trash list / restore / empty."""

from __future__ import annotations

import click

from p2psync.cli.common import confirm, json_option, library_option, open_library, print_json, progress, yes_option
from p2psync.cli.refs import print_references


@click.group()
def trash() -> None:
    """See, restore or empty the trash."""


@trash.command("list")
@library_option
@json_option
def list_(as_json: bool) -> None:
    """List the references in the trash."""
    with open_library() as library:
        print_references(library.refs.listing(trashed=True), as_json)


@trash.command("restore")
@click.argument("ref_ids", metavar="ID...", nargs=-1, required=True)
@library_option
@json_option
def restore(ref_ids: tuple[str, ...], as_json: bool) -> None:
    """Move references back from the trash into the library."""
    with open_library() as library:
        ids = library.trash.restore_many(ref_ids)
    if as_json:
        print_json({"restored": ids})
    else:
        click.echo(f"Restored {len(ids)} reference(s).")


@trash.command("empty", short_help="Delete the trash for good, everywhere.")
@library_option
@yes_option
@json_option
def empty(yes: bool, as_json: bool) -> None:
    """Delete everything in the trash for good, with its attachments, on every synced machine."""
    with open_library() as library:
        count = library.count_references(trashed=True)
        if count:
            confirm(
                f"Permanently delete {count} reference(s) in the trash, with their attachments, "
                "here and on every machine this library syncs with?",
                yes,
            )
            with progress(count, "Emptying trash") as advance:
                count = library.empty_trash(progress=advance)
    if as_json:
        print_json({"deleted": count})
    else:
        click.echo(f"Deleted {count} reference(s) for good." if count else "The trash is empty.")
