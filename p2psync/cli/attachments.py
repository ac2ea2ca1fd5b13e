"""attach, attachment list / path / export / rm."""

from __future__ import annotations

from pathlib import Path

import click

from p2psync.cli.common import json_option, library_option, open_library, print_json, progress
from p2psync.opener import open_file


@click.command(short_help="Copy a file into the library for a reference.")
@click.argument("ref_id", metavar="ID")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--name", help="Store under this file name (default: the file's own name).")
@library_option
@json_option
def attach(ref_id: str, file: Path, name: str | None, as_json: bool) -> None:
    """Copy a file (a PDF, say) into the library as an attachment of reference ID.

    A file of the same name already attached is replaced by this one (a new version).
    """
    with open_library() as library:
        size = file.stat().st_size if file.is_file() else None
        with progress(size, f"Attaching {file.name}") as advance:
            result = library.attach(ref_id, file, name=name, progress=advance)
    if as_json:
        print_json(result)
    else:
        click.echo(f"Attached {result['name']} ({result['size']} bytes) to {result['ref']}.")


@click.group()
def attachment() -> None:
    """List, open, export and remove attachments."""


@attachment.command("list", short_help="List a reference's attachments.")
@click.argument("ref_id", metavar="ID")
@library_option
@json_option
def list_(ref_id: str, as_json: bool) -> None:
    """List a reference's attachments (files changed in place are noticed and recorded)."""
    with open_library() as library:
        items = library.list_attachments(ref_id)
    if as_json:
        print_json(items)
        return
    for item in items:
        state = "" if item["present"] else "  (not on this machine yet)"
        conflict = "  (sync conflict)" if item["conflict"] else ""
        problem = f"  ({item['problem']})" if "problem" in item else ""
        click.echo(f"{item['name']}  {item['size']} bytes  sha256:{item['sha256'][:12]}{state}{conflict}{problem}")


@attachment.command("path")
@click.argument("ref_id", metavar="ID")
@click.argument("name")
@library_option
@json_option
def path(ref_id: str, name: str, as_json: bool) -> None:
    """Print where the file is, to open (and annotate) it in place."""
    with open_library() as library:
        where = library.attachment_path(ref_id, name)
    if as_json:
        print_json({"path": str(where)})
    else:
        click.echo(str(where))


@attachment.command("open", short_help="Open an attachment in its default app.")
@click.argument("ref_id", metavar="ID")
@click.argument("name")
@library_option
@json_option
def open_(ref_id: str, name: str, as_json: bool) -> None:
    """Open the file with the desktop's default application (xdg-open on Linux, open on macOS,
    the file's association on Windows; $P2PSYNC_OPENER names another command).

    Annotations saved in place are noticed and synced as a new version of the file.
    """
    with open_library() as library:
        where = library.attachment_path(ref_id, name)  # one sentence if missing or not fetched yet
    command = open_file(where)
    if as_json:
        print_json({"path": str(where), "opener": command})
    else:
        click.echo(f"Opened {where} with {command}.")


@attachment.command("export")
@click.argument("ref_id", metavar="ID")
@click.argument("name")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="File or folder to write to.")
@library_option
@json_option
def export(ref_id: str, name: str, out: Path, as_json: bool) -> None:
    """Write a byte-identical copy of an attachment."""
    with open_library() as library:
        result = library.export_attachment(ref_id, name, out)
    if as_json:
        print_json(result)
    else:
        click.echo(f"Wrote {result['path']} ({result['size']} bytes).")


@attachment.command("rm", short_help="Remove an attachment, here and everywhere.")
@click.argument("ref_id", metavar="ID")
@click.argument("name")
@library_option
@json_option
def rm(ref_id: str, name: str, as_json: bool) -> None:
    """Remove an attachment from a reference (here and, after sync, everywhere)."""
    with open_library() as library:
        library.remove_attachment(ref_id, name)
    if as_json:
        print_json({"removed": name})
    else:
        click.echo(f"Removed {name}.")
