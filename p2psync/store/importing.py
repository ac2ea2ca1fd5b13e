"""Importing parsed records (from formats/) into a library: all or nothing, without doubles.

One write transaction holds the whole import, so a failure part-way leaves the library as it
was. Records that are plainly the same as a reference already in the library, or as an earlier
record of the same file (model/duplicates.py), are reported and skipped unless the caller allows
duplicates. Files that a record names (RIS L1/L4, EndNote pdf-urls, BibTeX file) are attached when
they exist, relative paths being taken from the imported file's folder; missing ones are listed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from p2psync.engine import clock, ops
from p2psync.errors import InvalidInput
from p2psync.model.attachments import validate_name
from p2psync.model.chunking import manifest_of
from p2psync.model.duplicates import duplicate_keys, identical_key
from p2psync.model.ids import new_id
from p2psync.store.files import copy_atomic
from p2psync.store.library import Library


class Record(Protocol):
    """What formats.ParsedRecord provides."""

    fields: dict[str, Any]
    attachments: list[str]
    position: int


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # position, title, existing
    attached: list[dict[str, Any]] = field(default_factory=list)  # position, ref, name
    missing_attachments: list[dict[str, Any]] = field(default_factory=list)  # position, path

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": len(self.imported),
            "ids": self.imported,
            "duplicates": self.duplicates,
            "attached": self.attached,
            "missing_attachments": self.missing_attachments,
        }


def existing_keys(library: Library) -> dict[str, str]:
    """Duplicate key -> id of a reference in the library (trash included: EndNote does too)."""
    index: dict[str, str] = {}
    cursor = library.db.conn.cursor()
    cursor.execute("SELECT id, data FROM refs WHERE deleted = 0 ORDER BY added, id")
    for ref_id, data in cursor:
        fields = json.loads(data)
        for key in [*duplicate_keys(fields), identical_key(fields)]:
            index.setdefault(key, ref_id)
    return index


def import_records(
    library: Library,
    records: Sequence[Record],
    base_dir: Path,
    allow_duplicates: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    report = ImportReport()
    index = existing_keys(library)
    prepared: list[tuple[Record, dict[str, Any], list[Path]]] = []
    for record in records:
        try:
            values = Library._new_reference_values(record.fields)
        except InvalidInput as exc:
            raise InvalidInput(f"Record {record.position} cannot be imported: {exc}") from None
        keys = [*duplicate_keys(values), identical_key(values)]
        same = next((index[k] for k in keys if k in index), None)
        if same is not None and not allow_duplicates:
            report.duplicates.append({"position": record.position, "title": values.get("title"), "existing": same})
            continue
        files: list[Path] = []
        for named in record.attachments:
            path = _local_path(named, base_dir)
            if path is not None and path.is_file():
                files.append(path)
            else:
                report.missing_attachments.append({"position": record.position, "path": named})
        prepared.append((record, values, files))
        ref_placeholder = f"record {record.position} of this file"
        for key in keys:
            index.setdefault(key, ref_placeholder)  # a later record of this file is a duplicate too

    placed: list[Path] = []
    try:
        with library.writing() as writer:
            for record, values, files in prepared:
                ref_id = new_id()
                added = clock.tick(writer.ts)
                writer.log(
                    {"op": ops.REF_PUT, "ref": ref_id, "fields": {**values, "added": added}, "seen": {}}, checked=True
                )
                report.imported.append(ref_id)
                used: set[str] = set()
                for source in files:
                    name = _unique_name(source.name, used)
                    target = library.attachment_file(ref_id, name)
                    copy_atomic(source, target)
                    placed.append(target)
                    manifest = manifest_of(target)
                    writer.log({"op": ops.ATTACHMENT_PUT, "ref": ref_id, "name": name, "value": manifest, "seen": []})
                    library._record_file(ref_id, name, target, manifest)
                    report.attached.append({"position": record.position, "ref": ref_id, "name": name})
                if progress:
                    progress(1)
    except BaseException:
        for path in placed:  # the transaction rolled back: leave no orphan files
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()
        raise
    return report


def _local_path(named: str, base_dir: Path) -> Path | None:
    """A local file a record names: a path (absolute or relative to the file) or a file:// URI."""
    text = named.strip()
    if text.lower().startswith("file:"):
        parsed = urlparse(text)
        text = unquote(parsed.path)
        if os.name == "nt" and text.startswith("/") and len(text) > 2 and text[2] == ":":
            text = text[1:]
    elif "://" in text:
        return None  # a web link, or EndNote's internal-pdf:// (the PDF is not in the export)
    if not text:
        return None
    path = Path(text).expanduser()
    return path if path.is_absolute() else base_dir / path


def _unique_name(name: str, used: set[str]) -> str:
    validate_name(name)
    candidate, n = name, 1
    stem, dot, ext = name.rpartition(".")
    while candidate in used:
        n += 1
        candidate = f"{stem} ({n}).{ext}" if dot else f"{name} ({n})"
    used.add(candidate)
    return candidate
