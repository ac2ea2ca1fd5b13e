"""Importing parsed records (from formats/) into a library: all or nothing, without doubles.

One write transaction holds the whole import, so a failure part-way leaves the library as it
was. Records that are plainly the same as a reference already in the library, or as an earlier
record of the same file (model/duplicates.py), are reported and skipped unless the caller allows
duplicates.

Files that a record names (RIS L1/L4, BibTeX file/pdf, EndNote pdf-urls and internal-pdf://,
a CSL-JSON file:// URL) come from an imported file that may be hostile, so one function,
open_named_file, decides for every format whether a named file may be attached. It is attached
only from one folder (the imported file's, or the one the user names): never through a link
out of it, never from /proc, /sys, /dev or the library's own folder (nor a hard link to one of
the library's files), never a hidden file, and only a regular file. The path is resolved and
checked, then opened one component at a time below the folder without following links, and the
opened descriptor (not the path again) is checked and copied, so a folder swapped for a link
meanwhile is caught. Every name not attached is reported with the reason.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, urlparse

from p2psync.engine import clock, ops
from p2psync.engine.canonical import dumps
from p2psync.errors import InvalidInput, InvalidValue
from p2psync.model.attachments import validate_name
from p2psync.model.chunking import manifest_of
from p2psync.model.ids import new_id
from p2psync.store import logtext, schema
from p2psync.store.apply import SEARCH_COLUMNS, insert_new_refs, new_ref_row, search_text
from p2psync.store.files import CHUNK, atomic_writer
from p2psync.store.import_reader import CheckedRecord, checked, key_digests
from p2psync.store.library import Library, Writer

# Kernel and device trees: no document lives there, and reading some of them leaks secrets
# (/proc/self/environ) or never ends (/dev/zero).
SYSTEM_ROOTS = ("/proc", "/sys", "/dev")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in must not block the open
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class Record(Protocol):
    """What formats.ParsedRecord provides."""

    fields: dict[str, Any]
    attachments: list[str]
    position: int


class Ids:
    """The ids of the imported references, compactly (16 ASCII bytes each, not a str object
    each: a million ids take 16 MB, not 80). Reads like a list of str."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._others: list[str] = []  # (ids not of 16 ASCII characters, in case; never mixed)

    def append(self, ref_id: str) -> None:
        if len(ref_id) == 16 and ref_id.isascii() and not self._others:
            self._data += ref_id.encode("ascii")
        else:
            if not self._others:
                self._others = list(self)
                self._data = bytearray()
            self._others.append(ref_id)

    def __len__(self) -> int:
        return len(self._others) or len(self._data) // 16

    def __iter__(self) -> Iterator[str]:
        if self._others:
            yield from self._others
            return
        data = self._data
        for start in range(0, len(data), 16):
            yield data[start : start + 16].decode("ascii")

    def __getitem__(self, index: slice) -> list[str]:
        return list(itertools.islice(self, *index.indices(len(self))))

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, Ids) else other)


@dataclass
class ImportReport:
    imported: Ids = field(default_factory=Ids)
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # position, title, existing
    attached: list[dict[str, Any]] = field(default_factory=list)  # position, ref, name
    skipped_attachments: list[dict[str, Any]] = field(default_factory=list)  # position, path, reason
    missing_attachments: list[dict[str, Any]] = field(default_factory=list)  # those of them not found

    def skip(self, position: int, named: str, refused: Refused) -> None:
        entry = {"position": position, "path": named, "reason": refused.reason}
        self.skipped_attachments.append(entry)
        if refused.missing:
            self.missing_attachments.append(entry)

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": len(self.imported),
            "ids": list(self.imported),
            "duplicates": self.duplicates,
            "attached": self.attached,
            "skipped_attachments": self.skipped_attachments,
            "missing_attachments": self.missing_attachments,
        }


class Refused(Exception):
    """A named file that is not attached, and why (a phrase: "it is outside ...")."""

    def __init__(self, reason: str, missing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing


@dataclass(frozen=True)
class FileRules:
    """Where named files may come from: below `folder`, never the library's own files."""

    folder: str  # real path, no links
    library: str  # real path of the library folder
    library_files: frozenset[tuple[int, int]]  # (device, inode) of the files at its top

    @classmethod
    def make(cls, folder: Path, library_dir: Path) -> FileRules:
        library = os.path.realpath(library_dir)
        inodes: set[tuple[int, int]] = set()
        with contextlib.suppress(OSError), os.scandir(library) as entries:
            for entry in entries:  # device.key, library.sqlite3 and its -wal/-shm, backups
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        inodes.add((st.st_dev, st.st_ino))
        return cls(os.path.realpath(folder), library, frozenset(inodes))


class SeenKeys:
    """Duplicate key -> the reference (or earlier record of the file) that has it: the library's
    references (trash included: EndNote does too), the earliest added first, then the file's
    records as they are imported. Kept in a temporary table of this connection, not in memory:
    a million records have three million keys. Asked for a batch of records at a time."""

    def __init__(self, library: Library) -> None:
        self.db = library.db
        self.db.execute(f"PRAGMA temp.cache_size = {-KEYS_CACHE_KB}")
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS import_keys (key BLOB PRIMARY KEY, ref) WITHOUT ROWID")
        self.db.execute("DELETE FROM temp.import_keys")
        cursor = library.db.conn.cursor()
        cursor.execute("SELECT id, data FROM refs WHERE deleted = 0 ORDER BY added, id")
        while rows := cursor.fetchmany(KEY_BATCH):
            self.add([(key, ref_id) for ref_id, data in rows for key in key_digests(json.loads(data))])

    def find(self, keys: Iterable[bytes]) -> dict[bytes, str]:
        """Those of the keys (digests) already seen, with who has each."""
        wanted = list(set(keys))
        found: dict[bytes, str] = {}
        for start in range(0, len(wanted), 900):
            part = wanted[start : start + 900]
            marks = ", ".join("?" * len(part))
            for digest, ref in self.db.execute(f"SELECT key, ref FROM temp.import_keys WHERE key IN ({marks})", part):
                found[digest] = ref if isinstance(ref, str) else f"record {ref} of this file"
        return found

    def add(self, pairs: list[tuple[bytes, str | int]]) -> None:
        """Remember keys not seen yet (a key seen keeps its first holder): a reference's id, or
        the position of a record of this file."""
        self.db.conn.executemany("INSERT OR IGNORE INTO temp.import_keys (key, ref) VALUES (?, ?)", pairs)

    def close(self) -> None:
        self.db.execute("DROP TABLE IF EXISTS temp.import_keys")


KEY_BATCH = 2_000  # records whose keys are looked up at once
KEYS_CACHE_KB = 32_000  # page cache of the temporary key table
IMPORT_CACHE_KB = 48_000  # the library's page cache during an import (fewer spills of its indexes)


def import_records(
    library: Library,
    records: Iterable[Record],
    base_dir: Path,
    allow_duplicates: bool = False,
    progress: Callable[[int], None] | None = None,
    expected: int = 0,
) -> ImportReport:
    """Import records, streamed: read, checked and written KEY_BATCH at a time, all in one write
    transaction (a failure, or a killed process, leaves the library as it was). Files they name
    are attached from base_dir only (see open_named_file). `expected`: how many records there
    are, if known (a large import builds the list's sort indexes once, at its end)."""
    report = ImportReport()
    rules = FileRules.make(base_dir, library.path)
    placed: list[Path] = []
    cache = int(library.db.execute("PRAGMA cache_size").fetchone()[0])
    library.db.execute(f"PRAGMA cache_size = {min(cache, -IMPORT_CACHE_KB)}")
    try:
        with library.writing() as writer:
            deferred = _defer_sort_indexes(library, expected)
            seen = SeenKeys(library)
            for batch in _batches(records, KEY_BATCH):
                new = _new_ones(batch, seen, report, allow_duplicates)
                plain = [(record, values) for record, values in new if not record.attachments]
                if len(plain) == len(new):
                    _write_new_refs(library, writer, plain, report)
                else:  # (in file order: a record's files are logged after it)
                    for record, values in new:
                        _import_one(library, writer, record, values, rules, report, placed)
                if progress:
                    progress(len(batch))
            seen.close()
            for name in deferred:
                library.db.execute(schema.DEFERRABLE_INDEXES[name])
    except BaseException:
        for path in placed:  # the transaction rolled back: leave no orphan files
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()
        raise
    finally:
        library.db.execute(f"PRAGMA cache_size = {cache}")
    return report


# An import at least this large, and larger than the library, drops the sort indexes of the
# library list in its transaction and builds them at its end, in one sorted pass each: inserted
# at random places, they made every spill of the page cache rewrite most of their pages (as in
# a first sync, store/bulk.py). In the same transaction: a failure or a kill leaves them as
# they were, with the rest.
BULK_IMPORT = 20_000


def _defer_sort_indexes(library: Library, expected: int) -> list[str]:
    if expected < BULK_IMPORT or expected <= library.refs.count():
        return []
    present = [n for n in schema.DEFERRABLE_INDEXES if n not in schema.missing_indexes(library.db)]
    for name in present:
        library.db.execute(f"DROP INDEX {name}")
    return present


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _new_ones(
    batch: list[Record], seen: SeenKeys, report: ImportReport, allow_duplicates: bool
) -> list[tuple[Record, dict[str, Any]]]:
    """The batch's records to import, with their checked values; the duplicates are reported.
    A record is a duplicate of the first reference, or earlier record, that has one of its keys."""
    done = [record if isinstance(record, CheckedRecord) else checked(record) for record in batch]
    known = seen.find(key for record in done for key in record.keys)
    new: list[tuple[Record, dict[str, Any]]] = []
    added: list[tuple[bytes, str | int]] = []
    for record, values, keys in ((r, r.values, r.keys) for r in done):
        same = next((known[k] for k in keys if k in known), None)
        if same is not None and not allow_duplicates:
            report.duplicates.append({"position": record.position, "title": values.get("title"), "existing": same})
            continue
        new.append((record, values))
        holder = f"record {record.position} of this file"
        for key in keys:
            if key not in known:  # a later record of this file is a duplicate too
                known[key] = holder
                added.append((key, record.position))
    seen.add(added)
    return new


_OP_AROUND = len(logtext.HEAD) + len(logtext.TAIL_BEFORE_ID) + len(logtext.TAIL_AFTER_ID)  # (op text = fields + these)


def _write_new_refs(
    library: Library, writer: Writer, new: list[tuple[Record, dict[str, Any]]], report: ImportReport
) -> None:
    """Log and write references that name no files, together: what Writer.log of each one's
    ref.put does, the way a first sync writes the references it creates (store/sync.py). The
    entry's text is kept once, in the reference's row (store/logtext.py), each row is written by
    apply.new_ref_row (equal to what applying the entry writes; tests/test_bulk_receive.py), and
    its search index row with them."""
    if not new:
        return
    db = library.db
    base = int(db.execute("SELECT coalesce(max(num), 0) + 1 FROM changelog").fetchone()[0])
    device = library.device_id
    log_rows: list[tuple[int, str, int, int, str, str]] = []
    ref_rows: list[list[Any]] = []
    for index, (_record, values) in enumerate(new):
        ref_id = new_id()
        fields = {**values, "added": clock.tick(writer.ts)}
        text = dumps(fields).encode("utf-8")
        if len(text) + len(ref_id) + _OP_AROUND > ops.MAX_OP_BYTES:  # (Writer.log's limit, on the whole op)
            raise InvalidValue("This change is too large to sync (over 3 MB of text in one reference); shorten it.")
        writer.seq += 1
        writer.ts = clock.tick(writer.ts)
        op = ops.ref_put(ref_id, fields)
        log_rows.append((base + index, device, writer.seq, writer.ts, "", ref_id))
        ref_rows.append(new_ref_row(device, writer.seq, writer.ts, op, text, base + index))
        report.imported.append(ref_id)
    db.conn.executemany("INSERT INTO changelog (num, device, seq, ts, op, ref) VALUES (?, ?, ?, ?, ?, ?)", log_rows)
    insert_new_refs(db, ref_rows)
    # Indexed for search now, from the values at hand (reading them back from the backlog after
    # the import cost a third as much again): the rows just written hold the last numbers.
    last = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
    first = last - len(ref_rows) + 1
    db.execute("DELETE FROM search_backlog WHERE num >= ?", [first])
    db.conn.executemany(
        "INSERT INTO refs_fts (rowid, title, authors, abstract, keywords, notes) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (first + index, *(search_text(name, values.get(name)) for name in SEARCH_COLUMNS))
            for index, (_record, values) in enumerate(new)
        ],
    )


def _import_one(
    library: Library,
    writer: Writer,
    record: Record,
    values: dict[str, Any],
    rules: FileRules,
    report: ImportReport,
    placed: list[Path],
) -> None:
    ref_id = new_id()
    added = clock.tick(writer.ts)
    writer.log(ops.ref_put(ref_id, {**values, "added": added}), checked=True)
    report.imported.append(ref_id)
    used: set[str] = set()
    for named in record.attachments:
        try:
            source, name = open_named_file(named, rules)
            with source:
                name = _unique_name(name, used)
                target = library.attachment_file(ref_id, name)
                placed.append(target)
                copy_atomic(source, target)
        except Refused as refused:
            report.skip(record.position, named, refused)
            continue
        manifest = manifest_of(target)
        writer.log(ops.attachment_put(ref_id, name, manifest))
        library.attachments.record_file(ref_id, name, target, manifest)
        report.attached.append({"position": record.position, "ref": ref_id, "name": name})


def copy_atomic(source: BinaryIO, target: Path) -> None:
    """Copy an opened file to target whole (temporary file, fsync, rename).

    It reads the descriptor that passed open_named_file's checks, never the path again.
    """
    with atomic_writer(target) as writer:
        shutil.copyfileobj(source, writer, CHUNK)


def open_named_file(named: str, rules: FileRules) -> tuple[BinaryIO, str]:
    """The opened file a record names and its name, if it may be attached; else raise Refused.

    The one place that decides, for every format. Order: what the name means (a path, a
    file:// URI, EndNote's internal-pdf:// taken from the folder), the system trees, the
    library, the folder (a link out of it is named as such), hidden names, then the file itself.
    """
    written = _path_written(named)
    candidate = os.path.join(rules.folder, written)  # an absolute path replaces the folder
    lexical = os.path.normpath(candidate)
    try:
        real = os.path.realpath(candidate)
    except OSError:  # a link in the path changed while it was being resolved
        raise Refused("it changed while it was being imported; import again") from None
    for root in SYSTEM_ROOTS:
        if _inside(lexical, root) or _inside(real, root):
            raise Refused(f"it is in {root}, which holds no documents")
    if _inside(real, rules.library) or _inside(lexical, rules.library):
        raise Refused("it is inside the p2psync library's own folder")
    if not _inside(real, rules.folder):
        if _inside(lexical, rules.folder):
            raise Refused(f"it is a link to {real}, outside {rules.folder}")
        raise Refused(f"it is outside {rules.folder}, the folder files are attached from (--files-from names another)")
    parts = [p for p in os.path.relpath(real, rules.folder).split(os.sep) if p not in ("", ".")]
    if not parts:
        raise Refused("it is a folder, not a file")
    if any(p.startswith(".") for p in parts):
        raise Refused("it is a hidden file or in a hidden folder")
    fd = _open_below(rules.folder, parts)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) in rules.library_files:
        os.close(fd)
        raise Refused("it is one of the p2psync library's own files (a hard link to it)")
    return os.fdopen(fd, "rb"), os.path.basename(lexical)


def _path_written(named: str) -> str:
    """The path a name means: a plain path, a file:// URI, or internal-pdf:// (relative)."""
    text = named.strip()
    lower = text.lower()
    if lower.startswith("internal-pdf://"):
        # EndNote's PDF folder (NAME.Data/PDF): relative to the folder, which --files-from can name.
        text = unquote(text[len("internal-pdf://") :]).lstrip("/")
    elif lower.startswith("file:"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise Refused(f"it is on another machine ({parsed.netloc})")
        text = unquote(parsed.path)
    elif _SCHEME.match(text):
        raise Refused("it is a link, not a local file")
    if not text:
        raise Refused("it names no file")
    if "\x00" in text:
        raise Refused("its name holds a NUL character")
    return os.path.expanduser(text)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _open_below(folder: str, parts: list[str]) -> int:
    """Open folder/parts for reading, refusing a link or a non-regular file at every step."""
    if not (_O_NOFOLLOW and os.open in os.supports_dir_fd):  # no openat: check the opened file instead
        return _open_checked(os.path.join(folder, *parts))
    step = ""
    try:
        dir_fd = os.open(folder, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        try:
            for step in parts[:-1]:
                inner = os.open(step, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=dir_fd)
                os.close(dir_fd)
                dir_fd = inner
            step = parts[-1]
            before = os.stat(step, dir_fd=dir_fd, follow_symlinks=False)
            _must_be_regular(before.st_mode)
            fd = os.open(step, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_NOCTTY | _O_CLOEXEC, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise _refusal(exc) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise Refused("it changed while it was being imported; import again")
    os.set_blocking(fd, True)
    return fd


def _open_checked(path: str) -> int:
    try:
        before = os.stat(path, follow_symlinks=False)
        _must_be_regular(before.st_mode)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise _refusal(exc) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise Refused("it changed while it was being imported; import again")
    return fd


def _must_be_regular(mode: int) -> None:
    kinds = {
        stat.S_ISDIR: "a folder",
        stat.S_ISFIFO: "a named pipe (FIFO)",
        stat.S_ISCHR: "a device",
        stat.S_ISBLK: "a device",
        stat.S_ISSOCK: "a socket",
        stat.S_ISLNK: "a link that leads nowhere or in a loop",
    }
    for test, kind in kinds.items():
        if test(mode):
            raise Refused(f"it is {kind}, not a file")
    if not stat.S_ISREG(mode):
        raise Refused("it is not a regular file")


def _refusal(exc: OSError) -> Refused:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return Refused("not found", missing=True)
    if exc.errno == errno.ELOOP:  # a link where the resolved path had a folder or the file
        return Refused("it changed while it was being imported (a link appeared in its path); import again")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Refused("it cannot be read (permission denied)")
    return Refused(f"it cannot be read ({exc.strerror or exc})")


def _unique_name(name: str, used: set[str]) -> str:
    try:
        validate_name(name)
    except InvalidInput as exc:
        raise Refused(f"its name cannot be an attachment name: {exc.message}") from None
    candidate, n = name, 1
    stem, dot, ext = name.rpartition(".")
    while candidate in used:
        n += 1
        candidate = f"{stem} ({n}).{ext}" if dot else f"{name} ({n})"
    used.add(candidate)
    return candidate
