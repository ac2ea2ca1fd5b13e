"""import, export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from p2psync import formats
from p2psync.cli.common import json_option, library_option, open_library, print_json, progress
from p2psync.errors import InvalidValue
from p2psync.files import write_atomic
from p2psync.store.importing import import_records

FORMAT_CHOICES = click.Choice(sorted(formats.FORMATS), case_sensitive=False)


@click.command("import")
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
    text = formats.read_file(file, encoding=encoding)
    fmt = formats.format_name(fmt) if fmt else formats.guess_format(text, file.name)
    result = formats.read(text, fmt, skip_invalid=skip_invalid)
    folder = files_from.resolve() if files_from else file.resolve().parent
    with open_library() as library, progress(len(result.records), f"Importing {file.name}") as advance:
        report = import_records(library, result.records, folder, allow_duplicates=allow_duplicates, progress=advance)
    out: dict[str, Any] = {
        "format": fmt,
        **report.as_dict(),
        "invalid": [{"position": i.position, "line": i.line, "message": i.message} for i in result.invalid],
        "warnings": [{"position": r.position, "message": w} for r in result.records for w in r.warnings],
    }
    if as_json:
        print_json(out)
        return
    click.echo(f"Imported {out['imported']} reference(s) from {file.name} ({formats.LABELS[fmt]}).")
    if out["duplicates"]:
        click.echo(f"Skipped {len(out['duplicates'])} already in the library (--allow-duplicates imports them):")
        for d in out["duplicates"][:20]:
            click.echo(f"  record {d['position']}: {d['title']!r} is {d['existing']}")
    if report.attached:
        click.echo(f"Attached {len(report.attached)} file(s).")
    if out["skipped_attachments"]:
        click.echo(f"Skipped {len(out['skipped_attachments'])} file(s) that the records name:")
        for m in out["skipped_attachments"][:20]:
            click.echo(f"  record {m['position']}: {m['path']}: {m['reason']}")
    if out["invalid"]:
        click.echo(f"Skipped {len(out['invalid'])} invalid record(s):")
        for i in out["invalid"][:20]:
            click.echo(
                f"  record {i['position']}" + (f" (line {i['line']})" if i["line"] else "") + f": {i['message']}"
            )


@click.command()
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
        records = list(library.list_references(group=group))
        for record in records:
            record["attachments"] = [a["path"] for a in library.list_attachments(record["id"], scan=False)]
        text = formats.write(records, fmt)
    write_atomic(file, text.encode("utf-8"))
    if as_json:
        print_json({"format": fmt, "path": str(file), "references": len(records)})
    else:
        click.echo(f"Wrote {len(records)} reference(s) to {file} ({formats.LABELS[fmt]}).")
