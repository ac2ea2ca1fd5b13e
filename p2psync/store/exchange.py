"""Whole files in and out of a library, as `p2psync import` / `p2psync export` and the web app's
Files page do them: one implementation of each, the two faces only say it differently.

Reading a file for import (decoding, guessing the format, parsing) happens before the library is
touched, so a file in no known format changes nothing; `import_parsed` then imports all or nothing
(store/importing.py). What an import did is an `ImportOutcome`: its `--json` form and the lines the
command line prints, which the web page shows too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2psync import formats
from p2psync.files import atomic_writer
from p2psync.formats.common import InvalidRecord, RecordStream
from p2psync.store.import_reader import CheckedRecord, checked_records
from p2psync.store.importing import ImportReport, Refused, import_records
from p2psync.store.library import Library
from p2psync.store.library.records import ReferenceRow

# A browser sends a file's bytes but never the folder it came from, so the files its records
# name (PDF paths) have no folder they may safely be attached from (store/importing.py).
NO_FOLDER = "files are attached only by 'p2psync import' (an upload does not say which folder they are in)"


@dataclass(frozen=True)
class ParsedFile:
    """A file read for import: its format and its records (an RIS file's are read from the file
    again, one at a time, as they are imported; `result.count` says how many, `result.invalid`
    which could not be read)."""

    format: str
    result: RecordStream


def read_for_import(path: Path, fmt: str | None, encoding: str | None, skip_invalid: bool) -> ParsedFile:
    """Decode, recognise (unless `fmt` is given) and check a file (its name is a hint to the
    format and names it in errors): a file that cannot be read raises here, before the library
    is touched."""
    fmt, records = formats.read_path(path, fmt, encoding, skip_invalid)
    return ParsedFile(fmt, records)


@dataclass(frozen=True)
class ImportOutcome:
    format: str
    report: ImportReport
    invalid: list[InvalidRecord]
    warnings: list[tuple[int, str]]  # (position, message) of every record read, in file order

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            **self.report.as_dict(),
            "invalid": [{"position": i.position, "line": i.line, "message": i.message} for i in self.invalid],
            "warnings": [{"position": position, "message": w} for position, w in self.warnings],
        }

    def summary(self, file_name: str) -> list[str]:
        """What the command line prints after an import (the web page shows the same lines)."""
        report = self.report
        lines = [f"Imported {len(report.imported)} reference(s) from {file_name} ({formats.LABELS[self.format]})."]
        if report.duplicates:
            lines.append(f"Skipped {len(report.duplicates)} already in the library (--allow-duplicates imports them):")
            lines += [f"  record {d['position']}: {d['title']!r} is {d['existing']}" for d in report.duplicates[:20]]
        if report.attached:
            lines.append(f"Attached {len(report.attached)} file(s).")
        if report.skipped_attachments:
            skipped = report.skipped_attachments
            lines.append(f"Skipped {len(skipped)} file(s) that the records name:")
            lines += [f"  record {m['position']}: {m['path']}: {m['reason']}" for m in skipped[:20]]
        if self.invalid:
            lines.append(f"Skipped {len(self.invalid)} invalid record(s):")
            lines += [
                f"  record {i.position}" + (f" (line {i.line})" if i.line else "") + f": {i.message}"
                for i in self.invalid[:20]
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
    refused: list[tuple[int, str]] = []
    warnings: list[tuple[int, str]] = []

    def records() -> Iterator[CheckedRecord]:
        for record in checked_records(parsed.result):  # (a large file's are read by a second process)
            warnings.extend((record.position, w) for w in record.warnings)
            if files_from is None:
                refused.extend((record.position, named) for named in record.attachments)
                record.attachments = []
            yield record

    report = import_records(
        library,
        records(),
        files_from or library.path,
        allow_duplicates=allow_duplicates,
        progress=progress,
        expected=parsed.result.count,
    )
    for position, named in refused:
        report.skip(position, named, Refused(NO_FOLDER))
    return ImportOutcome(parsed.format, report, parsed.result.invalid, warnings)


@dataclass(frozen=True)
class Exported:
    format: str
    text: str
    references: int


EXPORT_BATCH = 500  # references whose attachments are read in one query


def export_text(library: Library, fmt: str, group: str | None = None, ids: Sequence[str] | None = None) -> Exported:
    """The library (or one group, or the references `ids` names, in that order) written in a
    format, with each reference's attachment paths."""
    fmt = formats.format_name(fmt)
    records = _Counter(export_records(library, group, ids))
    text = "".join(formats.write_chunks(records, fmt))
    return Exported(fmt, text, records.count)


def export_file(
    library: Library,
    fmt: str,
    path: Path,
    group: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the library (or one group) to `path` in a format, streamed: the file is written whole
    (temporary file, fsync, rename) without the text or the references all in memory. Returns
    how many references it holds; `progress(n)` is told of each reference written."""
    fmt = formats.format_name(fmt)
    records = _Counter(export_records(library, group), progress)
    with atomic_writer(path) as out:
        pending: list[str] = []
        size = 0
        for chunk in formats.write_chunks(records, fmt):
            pending.append(chunk)
            size += len(chunk)
            if size >= 1 << 20:  # (one write per MB of text, not per record)
                out.write("".join(pending).encode("utf-8"))
                pending, size = [], 0
        out.write("".join(pending).encode("utf-8"))
    return records.count


def export_count(library: Library, group: str | None = None) -> int:
    """How many references `export_file` will write (for a progress bar)."""
    return library.refs.count(group=group)


def export_records(
    library: Library, group: str | None = None, ids: Sequence[str] | None = None
) -> Iterator[dict[str, Any]]:
    """The references to export as the dicts the writers take, with their attachment paths,
    streamed: the attachments of EXPORT_BATCH references are read in one query (one query per
    reference was nine tenths of an export's time)."""
    if ids is not None:  # (a row's own --json form: without the groups and attachments of `ref show`)
        source: Iterable[dict[str, Any]] = (ReferenceRow.as_dict(library.refs.get(ref_id)) for ref_id in ids)
    else:
        source = library.list_references(group=group)
    batch: list[dict[str, Any]] = []
    for record in source:
        batch.append(record)
        if len(batch) >= EXPORT_BATCH:
            yield from _with_attachments(library, batch)
            batch = []
    yield from _with_attachments(library, batch)


def _with_attachments(library: Library, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The batch, each record with its attachments' paths as Attachments.listing gives them (the
    files that are here or in conflict, by name)."""
    if not batch:
        return batch
    ids = list({record["id"] for record in batch})
    marks = ", ".join("?" * len(ids))
    found: dict[str, list[str]] = {}
    for ref_id, name in library.db.execute(
        f"SELECT ref_id, name FROM attachments WHERE ref_id IN ({marks}) "
        "AND (sha256 IS NOT NULL OR conflict = 1) ORDER BY ref_id, name",
        ids,
    ):
        found.setdefault(ref_id, []).append(str(library.attachment_file(ref_id, name)))
    for record in batch:
        record["attachments"] = list(found.get(record["id"], []))
    return batch


class _Counter:
    """The records passing through to a writer, counted (and told to a progress bar)."""

    def __init__(self, records: Iterable[dict[str, Any]], progress: Callable[[int], None] | None = None) -> None:
        self.records = records
        self.progress = progress
        self.count = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for record in self.records:
            yield record
            self.count += 1
            if self.progress:
                self.progress(1)
