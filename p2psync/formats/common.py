"""What every format reader and writer shares: results, errors, value clean-up, duplicate keys.

Readers turn a file's text into ParsedRecord objects whose `fields` are already valid for the
field catalogue (each value went through p2psync.model.fields.validate); what did not fit is
kept as a warning on the record, never dropped silently. Writers take the public reference
dicts that Library.list_references yields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote

from p2psync.errors import InvalidInput
from p2psync.model import fields as catalogue
from p2psync.model.duplicates import duplicate_keys, normalise  # noqa: F401 (re-exported)
from p2psync.model.people import Person


class FormatError(InvalidInput):
    """A file is not in the format it claims, or some of its records cannot be read.

    `invalid` lists every bad record found (position, line, message) so that a caller can show
    them all, not only the first.
    """

    def __init__(self, message: str, invalid: list[InvalidRecord] | None = None) -> None:
        super().__init__(message)
        self.invalid: list[InvalidRecord] = list(invalid or [])


class InvalidRecord(NamedTuple):
    """A record that could not be read: its 1-based number, its first line (if known), why."""

    position: int
    line: int | None
    message: str


@dataclass
class ParsedRecord:
    """One record read from a file, ready for Library.add_references(record.fields)."""

    fields: dict[str, Any]
    attachments: list[str] = field(default_factory=list)
    position: int = 0
    line: int | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class ReadResult:
    """Everything a reader found: the good records and the ones it had to leave out."""

    records: list[ParsedRecord]
    invalid: list[InvalidRecord] = field(default_factory=list)

    def __iter__(self) -> Iterator[ParsedRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)


class RecordStream:
    """A reader's records handed out one at a time (each pass reads the file again), after a first
    pass that counted the good ones (`count`) and found the invalid ones. A ReadResult's records
    make one too."""

    def __init__(self, count: int, invalid: list[InvalidRecord], records: Callable[[], Iterator[ParsedRecord]]) -> None:
        self.count = count
        self.invalid = invalid
        self._records = records
        self.stray: dict[int, list[str]] = {}  # (RIS) notes of lines outside records, by position
        self.source: tuple[Path, str | None, dict[int, list[str]]] | None = None  # (file, encoding, stray)

    @classmethod
    def of(cls, result: ReadResult) -> RecordStream:
        return cls(len(result.records), result.invalid, lambda: iter(result.records))

    def __iter__(self) -> Iterator[ParsedRecord]:
        return self._records()


def where(position: int, line: int | None) -> str:
    """'Record 3 (line 41)' - how every message names a record."""
    return f"Record {position} (line {line})" if line is not None else f"Record {position}"


def finish(records: list[ParsedRecord], invalid: list[InvalidRecord], label: str, skip_invalid: bool) -> ReadResult:
    """Return the result, or raise FormatError naming the first bad record when not skipping."""
    if invalid and not skip_invalid:
        first = invalid[0]
        more = len(invalid) - 1
        tail = f" ({more} more record{'s' if more != 1 else ''} also could not be read)" if more else ""
        raise FormatError(
            f"{where(first.position, first.line)} of the {label} file cannot be read: "
            f"{first.message}{tail}. Fix the file, or import with invalid records skipped.",
            invalid,
        )
    return ReadResult(records, invalid)


# --- building a record -------------------------------------------------------------------------


def shorten(value: Any, limit: int = 60) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RecordBuilder:
    """Collects one record's fields, validating each value and noting what did not fit."""

    def __init__(self, position: int, line: int | None) -> None:
        self.position = position
        self.line = line
        self.fields: dict[str, Any] = {}
        self.attachments: list[str] = []
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def unmapped(self, source: str, value: Any) -> None:
        """Note a field of the file that has no place in p2psync."""
        if value is None or (isinstance(value, str | list | dict) and not value):
            return
        self.warn(f"{source} ({shorten(value)}) has no field in p2psync and was not imported.")

    def set(self, name: str, value: Any, source: str, replace: bool = False) -> bool:
        """Validate and store a value; a value that fails is reported and left out.

        A field already set keeps its first value unless `replace`; a different second value
        is reported so that nothing disappears unnoticed.
        """
        if value is None or (isinstance(value, str | list) and not value):
            return False
        if name == "doi" and isinstance(value, str):
            value = clean_doi(value)
        elif isinstance(value, str) and name in catalogue.FIELDS and catalogue.FIELDS[name].kind == catalogue.LONG:
            # Trailing spaces at line ends mean nothing, and RIS cannot keep them.
            value = "\n".join(line.rstrip() for line in re.split(r"\r\n|\r|\n", value))
        try:
            clean = catalogue.validate(name, value)
        except InvalidInput as exc:
            self.warn(f"{source}: {exc.message} The value was not imported.")
            return False
        if clean is None:
            return False
        if name in self.fields and not replace:
            if self.fields[name] != clean:
                self.warn(
                    f"{source} ({shorten(clean)}) was not imported: {name} already holds {shorten(self.fields[name])}."
                )
            return False
        self.fields[name] = clean
        return True

    def extend(self, name: str, items: Iterable[Any], source: str) -> None:
        """Append to a people or keyword list, validating the whole list again."""
        new = [item for item in items if item]
        if not new:
            return
        current = list(self.fields.get(name) or [])
        self.set(name, current + new, source, replace=True)

    def has(self, name: str) -> bool:
        return name in self.fields

    def attach(self, path: str) -> None:
        path = path.strip()
        if path and path not in self.attachments:
            self.attachments.append(path)

    def link(self, target: str, source: str, is_file_field: bool) -> None:
        """A link the record names. Web links become the URL; local files become attachments.

        In a URL field (RIS UR, BibTeX url) anything but a file:// URI is the URL, even without
        a scheme; in a file field (RIS L1, BibTeX file, EndNote pdf-urls) only paths and file
        URIs are attachments, and something that is neither (EndNote's '<Go to ISI>://...') is
        reported.
        """
        target = target.strip()
        if not target:
            return
        if is_file_uri(target) or (is_file_field and looks_like_path(target)):
            self.attach(target)
        elif is_web_url(target) or not is_file_field:
            if not self.has("url"):
                self.set("url", target, source)
            elif self.fields["url"] != target:
                self.warn(
                    f"{source} ({shorten(target)}) was not imported: the reference already "
                    f"has the URL {shorten(self.fields['url'])}."
                )
        else:
            self.warn(f"{source} ({shorten(target)}) is neither a web link nor a file and was not imported.")

    def build(self) -> ParsedRecord:
        self.fields.setdefault("type", catalogue.DEFAULT_TYPE)
        if len(self.fields) == 1:
            self.warn("The record holds no data besides its type.")
        return ParsedRecord(self.fields, self.attachments, self.position, self.line, self.warnings)


# --- values ------------------------------------------------------------------------------------

_WEB = re.compile(r"^(https?|ftp)://", re.IGNORECASE)


def is_web_url(text: str) -> bool:
    return bool(_WEB.match(text.strip()))


def is_file_uri(text: str) -> bool:
    """file:// and EndNote's internal-pdf:// (relative to the library's PDF folder)."""
    return text.strip().lower().startswith(("file://", "internal-pdf://"))


def looks_like_path(text: str) -> bool:
    """A local path: no URI scheme and none of the characters paths do not hold in exports."""
    text = text.strip()
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) or re.search(r"[<>\"|\x00-\x1f]", text):
        return False
    return bool(text)


_DOI_IN_URL = re.compile(r"^(?:https?://[^/\s]+/(?:doi/(?:abs/|full/|pdf/)?)?|doi:\s*)(10\.\d{3,9}/\S+)$", re.I)


def clean_doi(text: str) -> str:
    """'http://doi.acm.org/10.1145/1137627' and 'doi: 10.1/x' -> the DOI itself."""
    text = text.strip()
    match = _DOI_IN_URL.match(text)
    return unquote(match.group(1)) if match else text


class LineCounter:
    """Line numbers of increasing offsets in one text, counting each newline once (not O(n²))."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.offset = 0
        self.line = 1

    def line_at(self, offset: int) -> int:
        if offset < self.offset:
            self.offset, self.line = 0, 1
        self.line += self.text.count("\n", self.offset, offset)
        self.offset = offset
        return self.line


def text_lines(text: str) -> list[str]:
    """Split on any line ending (CRLF, LF or CR) - files mix them."""
    return re.split(r"\r\n|\r|\n", text)


def strip_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


def clean_pages(text: str) -> str:
    """'101--115', '101–115' and '101 - 115' all become '101-115' so pages compare across formats."""
    text = " ".join(text.split())
    return re.sub(r"\s*(?:-{1,3}|[\u2010-\u2015\u2212])\s*", "-", text)


def split_pages(pages: str) -> tuple[str, str | None]:
    """'101-115' -> ('101', '115'); 'e1002' -> ('e1002', None)."""
    if "-" in pages:
        start, end = pages.split("-", 1)
        if start.strip() and end.strip():
            return start.strip(), end.strip()
    return pages, None


_MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("jan", "january", "janvier", "januar"),
            ("feb", "february", "febr", "février", "februar"),
            ("mar", "march", "mars", "märz", "marz"),
            ("apr", "april", "avril"),
            ("may", "mai"),
            ("jun", "june", "juin", "juni"),
            ("jul", "july", "juillet", "juli"),
            ("aug", "august", "août", "aout"),
            ("sep", "sept", "september", "septembre"),
            ("oct", "october", "octobre", "okt", "oktober"),
            ("nov", "november", "novembre"),
            ("dec", "december", "décembre", "dez", "dezember"),
        ],
        start=1,
    )
    for name in names
}


def month_number(text: str) -> int | None:
    """1-12 from 'Mar', 'march', '3', '03' or 'Mar.'; None otherwise."""
    word = text.strip().rstrip(".").lower()
    if word.isdigit():
        number = int(word)
        return number if 1 <= number <= 12 else None
    return _MONTHS.get(word)


def make_date(year: str | int | None, month: int | None = None, day: int | None = None) -> str | None:
    """An ISO partial date (YYYY, YYYY-MM or YYYY-MM-DD) from parts; None if the year is unusable."""
    if year is None:
        return None
    year_text = str(year).strip()
    if not re.fullmatch(r"\d{4}", year_text):
        return None
    if not month or not 1 <= month <= 12:
        return year_text
    if not day or not 1 <= day <= 31:
        return f"{year_text}-{month:02d}"
    return f"{year_text}-{month:02d}-{day:02d}"


_ISO = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?(?:[T ].*)?$")
_SLASHED = re.compile(r"^(\d{4})?/(\d{0,2})/(\d{0,2})(?:/.*)?$")  # RIS: YYYY/MM/DD/other
_YEAR_ONLY = re.compile(r"^(\d{4})(?:/+)?$")
_WORDS = re.compile(r"[A-Za-zÀ-ÿ]+\.?|\d+")


def parse_date(text: str, year: str | None = None) -> tuple[str | None, str | None]:
    """Read a date in the shapes files use; return (year, ISO date), either may be None.

    Understood: 2021, 2021-05, 2021-05-03, 2021-05-03T10:00:00Z, 2021/05/03/, 2021//, 2021/05,
    'May 2021', '3 May 2021', 'May 3, 2021', and a month (and day) without a year - 'Jun 01',
    'Jan-Feb', '03 26' - when `year` is given separately (EndNote, RIS DA). A range keeps its
    start.
    """
    raw = " ".join(text.split())
    if not raw:
        return None, None
    # Ranges like 2004/2005, 2004-05/2004-07 or Jan-Feb keep their start.
    head = raw.split("/")[0] if re.fullmatch(r"\d{4}(?:-\d{2}){0,2}/\d{4}(?:-\d{2}){0,2}", raw) else raw
    match = _ISO.match(head)
    if match:
        y, m, d = match.group(1), match.group(2), match.group(3)
        return y, make_date(y, int(m) if m else None, int(d) if d else None)
    match = _SLASHED.match(raw)
    if match:
        y = match.group(1) or year
        m = int(match.group(2)) if match.group(2) else None
        d = int(match.group(3)) if match.group(3) else None
        return (match.group(1), make_date(y, m, d)) if y else (None, None)
    match = _YEAR_ONLY.match(raw)
    if match:
        return match.group(1), match.group(1)
    words = _WORDS.findall(raw.replace("-", " - "))
    found_year: str | None = None
    month: int | None = None
    day: int | None = None
    numbers: list[int] = []
    for word in words:
        if re.fullmatch(r"\d{4}", word) and found_year is None:
            found_year = word
        elif word.isdigit():
            numbers.append(int(word))
        elif month is None and month_number(word):
            month = month_number(word)
    if month is None and numbers:
        # EndNote writes numeric '03 26' (month day) and '09' (month) beside the year.
        month = numbers.pop(0) if 1 <= numbers[0] <= 12 else None
    if numbers and 1 <= numbers[0] <= 31:
        day = numbers[0]
    use_year = found_year or year
    if use_year is None or (month is None and found_year is None):
        return found_year, None
    return found_year, make_date(use_year, month, day)


_YEAR = re.compile(r"^(\d{1,4}[a-z]?|in press|forthcoming|n\.d\.|submitted)$", re.IGNORECASE)


def is_year(text: str) -> bool:
    """Whether the catalogue accepts text as a year (2021, 2021a, in press...)."""
    return bool(_YEAR.match(text.strip()))


def split_keywords(text: str) -> list[str]:
    """Keywords in one string: split on ';' when there is one, otherwise on ','."""
    separator = ";" if ";" in text else ","
    return [part.strip() for part in text.split(separator) if part.strip()]


def join_keywords(keywords: list[str]) -> str:
    """The inverse of split_keywords: ', ' unless a keyword holds a comma, then '; '."""
    if any("," in k for k in keywords) or (len(keywords) == 1 and ";" in keywords[0]):
        return "; ".join(keywords)
    return ", ".join(keywords)


# --- ISBN and ISSN -----------------------------------------------------------------------------

_QUALIFIER = re.compile(r"\([^)]*\)|\[[^\]]*\]")


def identifier_kind(text: str) -> str | None:
    """'issn' for 8 digits (last may be X), 'isbn' for 10 or 13, None otherwise."""
    core = re.sub(r"^(isbn|issn|e-?issn|eissn)[:\s]*", "", _QUALIFIER.sub("", text).strip(), flags=re.I)
    digits = re.sub(r"[\s-]", "", core)
    if re.fullmatch(r"\d{7}[\dXx]", digits):
        return "issn"
    if re.fullmatch(r"\d{9}[\dXx]|\d{13}", digits):
        return "isbn"
    return None


# EndNote's "Secondary Title" (RIS T2) means the journal, the book a section is in, or the
# series, depending on the type; RIS and EndNote XML share this rule.
SECONDARY_JOURNAL = frozenset({"journal_article", "magazine_article", "newspaper_article", "preprint"})
SECONDARY_BOOK_TITLE = frozenset({"book_section", "conference_paper", "encyclopedia_entry", "conference_proceedings"})
SECONDARY_SERIES = frozenset({"book", "edited_book", "report", "thesis"})


def secondary_field(kind: str) -> str:
    """The catalogue field EndNote's Secondary Title maps to for a reference type."""
    if kind in SECONDARY_BOOK_TITLE:
        return "book_title"
    if kind in SECONDARY_SERIES:
        return "series"
    return "journal"


BOOKISH = frozenset({"book", "edited_book", "book_section", "conference_proceedings", "encyclopedia_entry"})


def split_identifiers(values: Iterable[str], ref_type: str) -> tuple[list[str], list[str]]:
    """Sort ISBN/ISSN values (RIS SN, EndNote isbn) into (isbns, issns) by their shape.

    Values may hold several numbers separated by ',', ';' or line breaks, with qualifiers such
    as '(Print)'; the qualifiers are dropped. A value of neither shape goes by the reference type.
    """
    isbns: list[str] = []
    issns: list[str] = []
    for value in values:
        for piece in re.split(r"[,;\r\n]+", value):
            piece = " ".join(_QUALIFIER.sub("", piece).split())
            if not piece:
                continue
            candidates = [piece]
            if identifier_kind(piece) is None and " " in piece:
                words = piece.split()
                if all(identifier_kind(w) for w in words):
                    candidates = words
            for candidate in candidates:
                kind = identifier_kind(candidate)
                if kind is None:
                    kind = "isbn" if ref_type in BOOKISH else "issn"
                target = isbns if kind == "isbn" else issns
                if candidate not in target:
                    target.append(candidate)
    return isbns, issns


def identifiers_of(record: dict[str, Any]) -> list[str]:
    """Every ISBN and ISSN of a reference, one per item, for formats with one field for both."""
    out: list[str] = []
    for name in ("isbn", "issn"):
        value = record.get(name)
        if isinstance(value, str):
            out += [part.strip() for part in value.split(";") if part.strip()]
    return out


# --- people ------------------------------------------------------------------------------------


def person_from_text(text: str) -> Person | None:
    """A name as RIS and EndNote write it: 'Family, Given', or an institution.

    EndNote marks an institution with a trailing comma ('World Health Organization,'), so that
    is read as an institution, as is a name of several words without any comma - except
    'Liu R.' (family name and initials, as Embase and PubMed write). One word is a family name.
    """
    text = " ".join(text.split())
    if not text or text == ",":
        return None
    if text.endswith(","):
        return {"literal": text[:-1].strip()}
    if "," in text:
        family, given = (part.strip() for part in text.split(",", 1))
        if not family:
            return {"literal": given} if given else None
        person: Person = {"family": family}
        if given:
            person["given"] = given
        return person
    words = text.split(" ")
    if len(words) == 1:
        return {"family": text}  # 'Plato', 'Cocke': a family name alone
    if _INITIALS.fullmatch(words[-1]):
        # 'Liu R.' and 'Adler D.G.' (Embase, PubMed): family name, then initials.
        return {"family": " ".join(words[:-1]), "given": words[-1]}
    return {"literal": text}


_INITIALS = re.compile(r"(?:[A-Z]\.-?){1,4}|[A-Z]{1,2}")


def person_to_text(person: Person) -> str:
    """The inverse of person_from_text: 'Family, Given' or 'Institution,'."""
    if "literal" in person:
        return person["literal"] + ","
    given = person.get("given")
    return f"{person['family']}, {given}" if given else person["family"]


# --- records given to writers ------------------------------------------------------------------


def values(record: dict[str, Any]) -> dict[str, Any]:
    """The catalogue fields of a public reference dict that have a value."""
    return {
        name: value
        for name, value in record.items()
        if name in catalogue.FIELDS and value is not None and value != "" and value != []
    }


def ref_type(record: dict[str, Any]) -> str:
    value = record.get("type")
    return value if isinstance(value, str) and value in catalogue.REFERENCE_TYPES else catalogue.DEFAULT_TYPE


def attachment_paths(record: dict[str, Any]) -> list[str]:
    """Attachment paths a writer should name: strings, or dicts with a 'path' (or 'name')."""
    out: list[str] = []
    for item in record.get("attachments") or []:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            path = item.get("path") or item.get("name")
            if isinstance(path, str) and path:
                out.append(path)
    return out
