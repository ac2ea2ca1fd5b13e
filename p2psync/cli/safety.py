"""backup, restore."""

from __future__ import annotations

from pathlib import Path

import click

from p2psync.cli.common import json_option, library_option, library_path, open_library, print_json, progress
from p2psync.store import backup as backups


@click.command(short_help="Write one archive of the library and its files.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=True),
    help="Archive file, or a folder to put it in (default: the current folder, named by date).",
)
@library_option
@json_option
def backup(out: Path | None, as_json: bool) -> None:
    """Write one compressed archive of the library and every attachment.

    Safe while a daemon or another command is using the library. The archive holds this device's
    private key: keep it as safe as the library itself.
    """
    with open_library() as library:
        target = backups.backup_path(library, out, Path.cwd())
        with progress(backups.backup_size(library), "Backing up") as advance:
            manifest = backups.backup(library, target, progress=advance)
    if as_json:
        print_json(manifest)
    else:
        click.echo(
            f"Backed up {manifest['references']} references, {manifest['attachments']} attachments "
            f"to {manifest['path']} ({manifest['bytes']:,} bytes)."
        )


@click.command()
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Replace an existing library at --library.")
@library_option
@json_option
def restore(archive: Path, force: bool, as_json: bool) -> None:
    """Rebuild a library from a backup archive, verifying every file.

    The restored library keeps its identity and history and continues as a new device of it, so
    it can go on syncing with the machines it synced with before.
    """
    target = library_path()
    with progress(backups.restore_size(archive), "Restoring") as advance:
        result = backups.restore(archive, target, force=force, progress=advance)
    if as_json:
        print_json(result)
    else:
        click.echo(
            f"Restored {result['references']} references and {result['attachments']} attachments "
            f"to {result['path']}; this copy is device {result['device_short_id']}."
        )
