"""Which format a text is in, reading and writing by format name, and decoding files.

Detection goes by content; a file name's extension only breaks a tie (a text that looks like
both RIS and BibTeX) and makes the error clearer when nothing matches.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from p2psync.errors import FileProblem
from p2psync.formats import bibtex, csl_json, endnote_xml, ris
from p2psync.formats.common import FormatError, ReadResult, strip_bom

FORMATS: dict[str, ModuleType] = {
    "ris": ris,
    "bibtex": bibtex,
    "endnote-xml": endnote_xml,
    "csl-json": csl_json,
}
LABELS = {name: module.LABEL for name, module in FORMATS.items()}
# The extension a writer's output should get.
DEFAULT_EXTENSIONS = {"ris": ".ris", "bibtex": ".bib", "endnote-xml": ".xml", "csl-json": ".json"}
ALIASES = {
    "bib": "bibtex", "biblatex": "bibtex", "endnote": "endnote-xml", "xml": "endnote-xml",
    "endnote_xml": "endnote-xml", "enw-xml": "endnote-xml", "csl": "csl-json", "json": "csl-json",
    "csljson": "csl-json", "csl_json": "csl-json",
}  # fmt: skip
SUPPORTED = "RIS (.ris), BibTeX/BibLaTeX (.bib), EndNote XML (.xml) and CSL-JSON (.json)"

_RIS = re.compile(r"^[ \t\ufeff]*TY {1,2}- ?", re.MULTILINE)
_RIS_TAG = re.compile(r"^[A-Z][A-Z0-9]  - ", re.MULTILINE)
_BIBTEX = re.compile(r"^[ \t]*@[ \t]*[A-Za-z_][\w:-]*[ \t]*[({]", re.MULTILINE)
_WOS = re.compile(r"^(FN |PT [A-Z]\s*$)", re.MULTILINE)
_MEDLINE = re.compile(r"^PMID- ", re.MULTILINE)
_SURROGATE = re.compile("[\ud800-\udfff]")  # only an odd decoding (e.g. surrogateescape) makes these


def format_name(name: str) -> str:
    """The canonical name for a format name or alias ('bib' -> 'bibtex')."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in FORMATS:
        raise FormatError(f"Unknown format {name!r}; choose one of: {', '.join(FORMATS)}.")
    return key


def _from_extension(filename: str | None) -> str | None:
    if not filename:
        return None
    lower = filename.lower()
    if lower.endswith((".csl.json", ".json")):
        return "csl-json"
    for name, module in FORMATS.items():
        if lower.endswith(tuple(module.EXTENSIONS)) and name != "ris":
            return name
    return "ris" if lower.endswith(".ris") else None


def _looks_like_ris(body: str) -> bool:
    """RIS tag lines and an ER line but no TY line: RIS with a broken record; let the reader say so."""
    return len(_RIS_TAG.findall(body)) >= 2 and bool(re.search(r"^ER  -", body, re.MULTILINE))


def guess_format(text: str, filename: str | None = None) -> str:
    """One of 'ris', 'bibtex', 'endnote-xml', 'csl-json', from the text (filename as a hint).

    Rules: first non-blank character '[' or '{' -> CSL-JSON; '<' with a <records> or <record>
    element -> EndNote XML; otherwise RIS if a line starts 'TY  - ' and BibTeX if a line starts
    '@type{' or '@type(' - the earlier of the two wins unless the extension names one of them.
    """
    body = strip_bom(text).lstrip()
    named = f"{Path(filename).name} " if filename else "The text "
    if not body:
        raise FormatError(f"{named}is empty; there is nothing to import.")
    if body[0] in "[{":
        return "csl-json"
    if body[0] == "<":
        if re.search(r"<records?[\s>/]", body):
            return "endnote-xml"
        raise FormatError(
            f"{named}is XML but not EndNote XML (it has no <records> element). Supported formats are {SUPPORTED}."
        )
    ris_match = _RIS.search(body)
    bib_match = _BIBTEX.search(body)
    hint = _from_extension(filename)
    if ris_match and bib_match:
        if hint in ("ris", "bibtex"):
            return hint
        return "ris" if ris_match.start() < bib_match.start() else "bibtex"
    if ris_match or _looks_like_ris(body):
        return "ris"
    if bib_match:
        return "bibtex"
    if _WOS.search(body):
        raise FormatError(
            f"{named}looks like Web of Science tagged text ('FN'/'PT' lines), which p2psync does "
            "not read; export from Web of Science as RIS ('Other file formats' > RIS) or BibTeX."
        )
    if _MEDLINE.search(body):
        raise FormatError(
            f"{named}looks like PubMed/MEDLINE text ('PMID- ' lines), which p2psync does not read; "
            "in PubMed use 'Send to: Citation manager' to get RIS."
        )
    expected = f" although its name suggests {LABELS[hint]}" if hint else ""
    raise FormatError(
        f"{named}is in no format p2psync reads{expected}: no 'TY  - ' line (RIS), no '@article{{' "
        f"line (BibTeX), no <records> (EndNote XML), no '[' at the start (CSL-JSON). Supported "
        f"formats are {SUPPORTED}."
    )


def guess_from_start(start: str, filename: str | None = None) -> str | None:
    """guess_format's answer when the start of a text (ending at a line end) already decides it
    as RIS, whatever follows; else None (then the whole text decides). Only RIS is read from a
    file line by line, so only RIS needs deciding early."""
    body = strip_bom(start).lstrip()
    if not body or body[0] in "[{<":
        return None
    ris_match = _RIS.search(body)
    if ris_match is None:
        return None
    bib_match = _BIBTEX.search(body)
    hint = _from_extension(filename)
    if bib_match is None:
        # A BibTeX line further on would make it BibTeX only if the name says so.
        return None if hint == "bibtex" else "ris"
    if hint in ("ris", "bibtex"):
        return hint if hint == "ris" else None
    return "ris" if ris_match.start() < bib_match.start() else None


def read(text: str, fmt: str, skip_invalid: bool = False) -> ReadResult:
    """Read text in the named format (see FORMATS; aliases such as 'bib' work too)."""
    module = FORMATS[format_name(fmt)]
    if _SURROGATE.search(text):
        raise FormatError("The text holds lone surrogates, which are not characters; read the file as UTF-8 text.")
    result: ReadResult = module.read(text, skip_invalid=skip_invalid)
    return result


def write(records: Iterable[dict[str, Any]], fmt: str) -> str:
    """Write public reference dicts in the named format."""
    return "".join(write_chunks(records, fmt))


def write_chunks(records: Iterable[dict[str, Any]], fmt: str) -> Iterator[str]:
    """`write`'s text in pieces, a record (or a batch) at a time, for an export that streams."""
    module = FORMATS[format_name(fmt)]
    chunks: Iterator[str] = module.write_chunks(records)
    return chunks


def read_file(path: str | Path, encoding: str | None = None) -> str:
    """A file's text: UTF-8 (a BOM is removed) or UTF-16 with a BOM, else a FormatError.

    Files that are not UTF-8 are refused rather than guessed: a wrong guess (say cp1252 for a
    GBK file) would import garbled names without a word. The error names the first bad byte;
    pass `encoding` (e.g. "cp1252", "gbk") when the file's encoding is known.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileProblem(f"Cannot read {path}: {exc.strerror or exc}.") from None
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise FormatError(f"Unknown encoding {encoding!r}; use a name such as utf-8, cp1252 or gbk.") from None
        try:
            return strip_bom(data.decode(encoding))
        except UnicodeDecodeError as exc:
            raise _decode_error(path, data, exc, encoding) from None
        except (LookupError, UnicodeError):  # a codec not for text ('base64') or not for files ('idna')
            raise FormatError(
                f"{path.name} cannot be read as {encoding!r} text; use a name such as utf-8, cp1252 or gbk."
            ) from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return strip_bom(data.decode("utf-16"))
        except UnicodeDecodeError as exc:
            raise _decode_error(path, data, exc, "UTF-16") from None
    try:
        return strip_bom(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _decode_error(path, data, exc, "UTF-8") from None


def _decode_error(path: Path, data: bytes, exc: UnicodeDecodeError, encoding: str) -> FormatError:
    line = data.count(b"\n", 0, exc.start) + 1
    return FormatError(
        f"{path.name} is not {encoding} text: byte 0x{data[exc.start]:02X} at offset {exc.start} "
        f"(line {line}) cannot be decoded. Save the file as UTF-8 and import it again, or name its "
        "encoding (e.g. cp1252 for Windows files, gbk for Chinese ones)."
    )
