"""Reading a file for import without holding it whole: its format and its records.

An RIS file is read line by line (ris.read_lines reads it twice: to count and check its records,
then record by record as they are imported), so a file of hundreds of megabytes takes a few
megabytes of memory. Its lines are exactly those read_file's text would give (text_lines: CRLF,
LF or CR; a first BOM removed); a byte that does not decode, or anything else read_file would
refuse, is refused with read_file's own message. The other formats are parsed whole, as before.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from pathlib import Path

from p2psync.errors import FileProblem
from p2psync.formats import ris
from p2psync.formats.common import FormatError, RecordStream, strip_bom
from p2psync.formats.detect import _SURROGATE, format_name, guess_format, guess_from_start, read, read_file

START_CHARS = 1 << 20  # how much of a file decides its format before it is read whole
_CHUNK = 1 << 20


def read_path(path: Path, fmt: str | None, encoding: str | None, skip_invalid: bool) -> tuple[str, RecordStream]:
    """The format of a file (`fmt`, or guessed from its content and name) and its records."""
    fmt = format_name(fmt) if fmt else _guess_streaming(path, encoding)
    if fmt == "ris" and _streamable(encoding):
        stream = ris.read_lines(lambda: file_lines(path, encoding), skip_invalid=skip_invalid)
        stream.source = (path, encoding, stream.stray)  # (so that another process can read it too)
        return fmt, stream
    text = read_file(path, encoding=encoding)
    if fmt is None:
        fmt = guess_format(text, path.name)
    return fmt, RecordStream.of(read(text, fmt, skip_invalid=skip_invalid))


def _guess_streaming(path: Path, encoding: str | None) -> str | None:
    """The format when the file's start decides it as RIS; None when the whole text must decide."""
    if not _streamable(encoding):
        return None
    start = _start_of(path, encoding)
    return guess_from_start(start, path.name) if start is not None else None


def _streamable(encoding: str | None) -> bool:
    """Whether the file can be decoded as it is read (a text encoding that Python knows)."""
    if encoding is None:
        return True
    try:
        return codecs.lookup(encoding)._is_text_encoding
    except LookupError:
        return False  # (read_file says so)


def _start_of(path: Path, encoding: str | None) -> str | None:
    """The file's first START_CHARS characters, up to the last line end in them; None if it has
    none there or cannot be decoded (then read_file, reading it whole, decides or says why)."""
    try:
        with _open_text(path, encoding) as text:
            start = text.read(START_CHARS)
    except (OSError, UnicodeError, FormatError):
        return None
    end = start.rfind("\n")
    return start[: end + 1] if end >= 0 else None


def _open_text(path: Path, encoding: str | None) -> io.TextIOWrapper:
    """The file as text, line ends untranslated; UTF-8 unless it starts with a UTF-16 BOM."""
    raw = open(path, "rb")  # noqa: SIM115 (the wrapper owns and closes it)
    if encoding is None:
        encoding = "utf-16" if raw.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8"
        raw.seek(0)
    return io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")


def file_lines(path: Path, encoding: str | None) -> Iterator[str]:
    """The lines of a file's text as text_lines gives them (without line ends; a last empty line
    after a final line end), read a chunk at a time."""
    try:
        with _open_text(path, encoding) as text:
            check = encoding is not None  # (strict UTF-8 and UTF-16 never give lone surrogates)
            first = True
            line = ""
            for line in text:
                if first:
                    line = strip_bom(line)
                    first = False
                if check and _SURROGATE.search(line):
                    raise FormatError(
                        "The text holds lone surrogates, which are not characters; read the file as UTF-8 text."
                    )
                if line.endswith("\r\n"):
                    yield line[:-2]
                elif line.endswith(("\n", "\r")):
                    yield line[:-1]
                else:
                    yield line
                    return  # the last line, without a line end
            yield ""  # after a final line end, or of an empty file
    except UnicodeError:
        read_file(path, encoding)  # raises its own message, naming the byte and its line
        raise FormatError(f"{path.name} cannot be read as text.") from None
    except OSError as exc:
        raise FileProblem(f"Cannot read {path}: {exc.strerror or exc}.") from None
