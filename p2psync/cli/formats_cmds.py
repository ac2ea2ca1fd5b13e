"""import, export."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import click

from p2psync import formats
from p2psync.cli.common import json_option, library_option, open_library, print_json, progress
from p2psync.errors import InvalidValue
from p2psync.store import exchange

FORMAT_CHOICES = click.Choice(sorted(formats.FORMATS), case_sensitive=False)


@click.command("import", short_help="Import a RIS, BibTeX, EndNote XML or CSL-JSON file.")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--format", "fmt", type=FORMAT_CHOICES, help="The file's format (default: guessed from its content).")
@click.option("--encoding", help="The file's text encoding if not UTF-8 (e.g. cp1252, latin-1).")
@click.option("--skip-invalid", is_flag=True, help="Import the good records and list the bad ones.")
@click.option("--allow-duplicates", is_flag=True, help="Import records even if the library already has them.")
@click.option(
    "--files-from",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="The folder the files that records name are attached from (default: the imported file's folder).",
)
@library_option
@json_option
def import_(
    file: Path,
    fmt: str | None,
    encoding: str | None,
    skip_invalid: bool,
    allow_duplicates: bool,
    files_from: Path | None,
    as_json: bool,
) -> None:
    """Import references from a RIS, BibTeX, EndNote XML or CSL-JSON file.

    All or nothing: a malformed record stops the import with its number and line, and nothing is
    imported (unless --skip-invalid). References the library already has (same DOI, or same
    title, year and first author) are skipped and listed. Files the records name (PDF paths)
    are attached when they are regular files inside the imported file's folder (or --files-from);
    any other is skipped and listed with the reason.
    """
    parsed = exchange.read_for_import(file, fmt, encoding, skip_invalid)
    folder = files_from.resolve() if files_from else file.resolve().parent
    with open_library() as library, _progress(as_json, parsed.result.count, f"Importing {file.name}") as advance:
        outcome = exchange.import_parsed(library, parsed, folder, allow_duplicates=allow_duplicates, progress=advance)
    if as_json:
        print_json(outcome.as_dict())
        return
    for line in outcome.summary(file.name):
        click.echo(line)


@click.command(short_help="Export to RIS, BibTeX, EndNote XML or CSL-JSON.")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--format", "fmt", type=FORMAT_CHOICES, help="Format to write (default: from the file's extension).")
@click.option("--group", help="Only the references in this group.")
@library_option
@json_option
def export(file: Path, fmt: str | None, group: str | None, as_json: bool) -> None:
    """Write the library (or one group) to a RIS, BibTeX, EndNote XML or CSL-JSON file."""
    if fmt is None:
        by_extension = {ext: name for name, ext in formats.DEFAULT_EXTENSIONS.items()}
        fmt = by_extension.get(file.suffix.lower())
        if fmt is None:
            raise InvalidValue(f"Say which format to write with --format ({', '.join(sorted(formats.FORMATS))}).")
    fmt = formats.format_name(fmt)
    with open_library() as library:
        total = exchange.export_count(library, group)
        with _progress(as_json, total, f"Exporting to {file.name}") as advance:
            written = exchange.export_file(library, fmt, file, group, progress=advance)
    if as_json:
        print_json({"format": fmt, "path": str(file), "references": written})
    else:
        click.echo(f"Wrote {written} reference(s) to {file} ({formats.LABELS[fmt]}).")


def _progress(as_json: bool, total: int, label: str) -> contextlib.AbstractContextManager[Callable[[int], None]]:
    """A progress bar on a terminal (stderr), but nothing beside --json's output."""
    return contextlib.nullcontext(lambda n: None) if as_json else progress(total, label)
