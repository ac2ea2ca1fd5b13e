"""Whole files in and out of a library, as `p2psync import` / `p2psync export` and the web app's
Files page do them: one implementation of each, the two faces only say it differently.

Reading a file for import (decoding, guessing the format, parsing) happens before the library is
touched, so a file in no known format changes nothing; `import_parsed` then imports all or nothing
(store/importing.py). What an import did is an `ImportOutcome`: its `--json` form and the lines the
command line prints, which the web page shows too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2psync import formats
from p2psync.formats.common import ReadResult
from p2psync.store.importing import ImportReport, Refused, import_records
from p2psync.store.library import Library
from p2psync.store.library.records import ReferenceRow

# A browser sends a file's bytes but never the folder it came from, so the files its records
# name (PDF paths) have no folder they may safely be attached from (store/importing.py).
NO_FOLDER = "files are attached only by 'p2psync import' (an upload does not say which folder they are in)"


@dataclass(frozen=True)
class ParsedFile:
    """A file read for import: its format and what the reader found in it."""

    format: str
    result: ReadResult


def read_for_import(path: Path, fmt: str | None, encoding: str | None, skip_invalid: bool) -> ParsedFile:
    """Decode, recognise (unless `fmt` is given) and parse a file (its name is a hint to the
    format and names it in errors)."""
    text = formats.read_file(path, encoding=encoding)
    fmt = formats.format_name(fmt) if fmt else formats.guess_format(text, path.name)
    return ParsedFile(fmt, formats.read(text, fmt, skip_invalid=skip_invalid))


@dataclass(frozen=True)
class ImportOutcome:
    format: str
    report: ImportReport
    result: ReadResult

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            **self.report.as_dict(),
            "invalid": [{"position": i.position, "line": i.line, "message": i.message} for i in self.result.invalid],
            "warnings": [{"position": r.position, "message": w} for r in self.result.records for w in r.warnings],
        }

    def summary(self, file_name: str) -> list[str]:
        """What the command line prints after an import (the web page shows the same lines)."""
        out = self.as_dict()
        lines = [f"Imported {out['imported']} reference(s) from {file_name} ({formats.LABELS[self.format]})."]
        if out["duplicates"]:
            lines.append(f"Skipped {len(out['duplicates'])} already in the library (--allow-duplicates imports them):")
            lines += [f"  record {d['position']}: {d['title']!r} is {d['existing']}" for d in out["duplicates"][:20]]
        if self.report.attached:
            lines.append(f"Attached {len(self.report.attached)} file(s).")
        if out["skipped_attachments"]:
            lines.append(f"Skipped {len(out['skipped_attachments'])} file(s) that the records name:")
            lines += [f"  record {m['position']}: {m['path']}: {m['reason']}" for m in out["skipped_attachments"][:20]]
        if out["invalid"]:
            lines.append(f"Skipped {len(out['invalid'])} invalid record(s):")
            lines += [
                f"  record {i['position']}" + (f" (line {i['line']})" if i["line"] else "") + f": {i['message']}"
                for i in out["invalid"][:20]
            ]
        return lines


def import_parsed(
    library: Library,
    parsed: ParsedFile,
    files_from: Path | None,
    allow_duplicates: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportOutcome:
    """Import what `read_for_import` found, all or nothing. Files the records name are attached
    from `files_from` only; with None (an upload) none is, and each is listed as skipped."""
    records = parsed.result.records
    refused: list[tuple[int, str]] = []
    if files_from is None:
        for record in records:
            refused += [(record.position, named) for named in record.attachments]
            record.attachments = []
    report = import_records(
        library, records, files_from or library.path, allow_duplicates=allow_duplicates, progress=progress
    )
    for position, named in refused:
        report.skip(position, named, Refused(NO_FOLDER))
    return ImportOutcome(parsed.format, report, parsed.result)


@dataclass(frozen=True)
class Exported:
    format: str
    text: str
    references: int


def export_text(library: Library, fmt: str, group: str | None = None, ids: Sequence[str] | None = None) -> Exported:
    """The library (or one group, or the references `ids` names, in that order) written in a
    format, with each reference's attachment paths."""
    fmt = formats.format_name(fmt)
    if ids is not None:  # (a row's own --json form: without the groups and attachments of `ref show`)
        records = [ReferenceRow.as_dict(library.refs.get(ref_id)) for ref_id in ids]
    else:
        records = list(library.list_references(group=group))
    for record in records:
        record["attachments"] = [a["path"] for a in library.list_attachments(record["id"], scan=False)]
    return Exported(fmt, formats.write(records, fmt), len(records))
