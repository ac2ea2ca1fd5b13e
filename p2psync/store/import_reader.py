"""Reading a large RIS import's records in a second process, so that the import uses both cores.

An import spends about half its time on work that needs no database: parsing each record
(formats/ris.py), checking its values (new_reference_values) and working out its duplicate
keys. For a large file, import_parsed hands that to a child process that runs exactly that code
on the file's second pass and answers with batches of (position, attachments, warnings, values,
keys), while this process writes the batches answered before. The child's records come from the
same functions this process would have called itself (tests hold the two paths equal).

If the child cannot start or dies, this process reads the rest itself: the child only saves
time. An error the child meets (a record that cannot be imported) is raised here with its own
message. Messages are marshal-encoded (plain values only) and framed by an 8-byte length.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import marshal
import queue
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from p2psync.errors import InvalidInput, P2PSyncError
from p2psync.formats import ris
from p2psync.formats.common import RecordStream
from p2psync.formats.reading import file_lines
from p2psync.model.duplicates import duplicate_keys, identical_key
from p2psync.store import child_process
from p2psync.store.library.references import new_reference_values

CHILD_FROM = 20_000  # records: below this the child's start (a few hundred ms) is not worth it
BATCH = 500
AHEAD = 16  # batches the child may run ahead (memory stays bounded)


@dataclass
class CheckedRecord:
    """A record read and checked: what the importer needs of it (fields already checked: values)."""

    position: int
    attachments: list[str]
    warnings: list[str]
    values: dict[str, Any]
    keys: list[bytes]  # key_digests
    fields: dict[str, Any] = field(default_factory=dict)  # (not sent: values are what is imported)


def key_digests(values: dict[str, Any]) -> list[bytes]:
    """A reference's duplicate keys as the importer keeps them: 16-byte digests (128 bits, as
    identical_key's own hash), a third of the text's size. The identical-content key is kept only
    when there is no other: two references equal in every field share their other keys too, so
    it finds a duplicate only then (and the same one)."""
    keys = duplicate_keys(values) or [identical_key(values)]
    return [hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest() for key in keys]


def checked(record: Any) -> CheckedRecord:
    """A parsed record's checked values and keys (raises for a record that cannot be imported)."""
    try:
        values = new_reference_values(record.fields)
    except InvalidInput as exc:
        raise InvalidInput(f"Record {record.position} cannot be imported: {exc}") from None
    return CheckedRecord(record.position, record.attachments, record.warnings, values, key_digests(values))


# --- the child's side -----------------------------------------------------------------------------


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The child: (path, encoding, stray notes), then batches of checked records, then the end."""
    gc.disable()  # millions of small containers, none in cycles
    path, encoding, stray = marshal.loads(child_process.read_frame(stdin) or b"")
    try:
        batch: list[tuple[Any, ...]] = []
        for record in ris.records_of(lambda: file_lines(Path(path), encoding), stray):
            done = checked(record)
            batch.append((done.position, done.attachments, done.warnings, done.values, done.keys))
            if len(batch) >= BATCH:
                child_process.write_frame(stdout, marshal.dumps(("batch", batch)))
                batch = []
        child_process.write_frame(stdout, marshal.dumps(("batch", batch)))
        child_process.write_frame(stdout, marshal.dumps(("end",)))
    except P2PSyncError as exc:
        kind = type(exc)
        child_process.write_frame(stdout, marshal.dumps(("error", kind.__module__, kind.__qualname__, exc.message)))


# --- the importer's side --------------------------------------------------------------------------


def checked_records(stream: RecordStream) -> Iterator[CheckedRecord]:
    """The stream's records, checked: by a child process when the file is large, else here."""
    source = stream.source
    if source is None or stream.count < CHILD_FROM:
        yield from (checked(record) for record in stream)
        return
    last = 0
    with _Child(source) as child:
        for item in child.batches():
            for position, attachments, warnings, values, keys in item:
                last = position
                yield CheckedRecord(position, attachments, warnings, values, keys)
        if child.finished:
            return
    # The child stopped without an answer: read the rest here.
    yield from (checked(record) for record in stream if record.position > last)


class _Child:
    """The child process and a thread that reads its answers (a pipe blocks; the thread lets the
    child run up to AHEAD batches ahead while this process writes)."""

    def __init__(self, source: tuple[Path, str | None, dict[int, list[str]]]) -> None:
        self.finished = False
        self._answers: queue.Queue[tuple[Any, ...] | None] = queue.Queue(AHEAD)
        path, encoding, stray = source
        try:
            self.process: subprocess.Popen[bytes] | None = child_process.start("import_reader")
            assert self.process.stdin is not None
            child_process.write_frame(self.process.stdin, marshal.dumps((str(path), encoding, stray)))  # type: ignore[arg-type]
            self.process.stdin.close()
        except OSError:
            self.process = None
            self._answers.put(None)
            return
        self._reader = threading.Thread(target=self._read, name="p2psync-import-read", daemon=True)
        self._reader.start()

    def __enter__(self) -> _Child:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()  # our own child, by its handle (an import that stopped early)
        self.process.wait()
        while self._reader.is_alive():  # let the reader thread end (it may wait to put an answer)
            with contextlib.suppress(queue.Empty):
                while True:
                    self._answers.get_nowait()
            self._reader.join(0.05)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def batches(self) -> Iterator[list[tuple[Any, ...]]]:
        while (answer := self._answers.get()) is not None:
            if answer[0] == "batch":
                yield answer[1]
            elif answer[0] == "end":
                self.finished = True
                return
            else:
                raise _error(answer[1], answer[2], answer[3])

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        try:
            while (payload := child_process.read_frame(stdout)) is not None:  # type: ignore[arg-type]
                self._answers.put(marshal.loads(payload))
        except (OSError, ValueError, EOFError):
            pass
        finally:
            self._answers.put(None)


def _error(module: str, name: str, message: str) -> P2PSyncError:
    """The child's error, as this process would have raised it."""
    with contextlib.suppress(Exception):
        kind = getattr(importlib.import_module(module), name)
        if isinstance(kind, type) and issubclass(kind, P2PSyncError):
            return kind(message)
    return InvalidInput(message)
