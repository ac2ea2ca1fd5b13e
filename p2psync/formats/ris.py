"""RIS (Research Information Systems) reading and writing, with rispy.

Records run from a `TY  - ` line to an `ER  - ` line. rispy's parser silently skips a record
without a TY line and merges records whose ER is missing, so this module splits the file into
records itself (keeping line numbers for messages), recognising tag lines by rispy's rule, and
uses rispy's writer to write them. A file is read line by line, twice (read_lines): once to count
the records and find the invalid ones before anything is imported, then record by record as the
import goes, so a file of any size takes little memory. See docs/formats.md for the mapping tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import rispy

from p2psync.formats.common import (
    SECONDARY_JOURNAL,
    FormatError,
    InvalidRecord,
    ParsedRecord,
    ReadResult,
    RecordBuilder,
    RecordStream,
    attachment_paths,
    clean_pages,
    finish,
    identifiers_of,
    is_year,
    parse_date,
    person_from_text,
    person_to_text,
    ref_type,
    secondary_field,
    split_identifiers,
    split_pages,
    strip_bom,
    text_lines,
    values,
)
from p2psync.model import fields as catalogue

NAME = "ris"
LABEL = "RIS"
EXTENSIONS = (".ris", ".txt")

# RIS type -> catalogue type. Types with no better home become "generic" with a warning.
READ_TYPES: dict[str, str] = {
    "JOUR": "journal_article", "EJOUR": "journal_article", "JFULL": "journal_article",
    "INPR": "journal_article", "ABST": "journal_article",
    "BOOK": "book", "EBOOK": "book", "PAMP": "book", "CLSWK": "book", "ANCIENT": "book",
    "EDBOOK": "edited_book",
    "CHAP": "book_section", "ECHAP": "book_section",
    "CPAPER": "conference_paper", "CONF": "conference_proceedings",
    "THES": "thesis", "RPRT": "report", "GOVDOC": "report",
    "ELEC": "web_page", "BLOG": "web_page",
    "DATA": "dataset", "DBASE": "dataset", "AGGR": "dataset",
    "PAT": "patent", "MGZN": "magazine_article", "NEWS": "newspaper_article",
    "ENCYC": "encyclopedia_entry", "DICT": "encyclopedia_entry",
    "MANSCPT": "manuscript", "UNPB": "manuscript",
    "COMP": "software", "STAND": "standard", "SLIDE": "presentation", "INTV": "interview",
    "PCOMM": "letter", "ICOMM": "letter",
    "ADVS": "audiovisual", "VIDEO": "audiovisual", "MPCT": "audiovisual", "SOUND": "audiovisual",
    "MULTI": "audiovisual", "MUSIC": "audiovisual",
    "MAP": "map", "CASE": "legal_case", "STAT": "statute", "BILL": "statute", "UNBILL": "statute",
    "LEGAL": "statute", "GEN": "generic",
}  # fmt: skip

# catalogue type -> RIS type. Preprint and interview share a RIS type with another catalogue
# type, so the writer adds `M3  - Preprint` / `M3  - Interview` and the reader honours it.
WRITE_TYPES: dict[str, str] = {
    "journal_article": "JOUR", "book": "BOOK", "edited_book": "EDBOOK", "book_section": "CHAP",
    "conference_paper": "CPAPER", "conference_proceedings": "CONF", "thesis": "THES",
    "report": "RPRT", "web_page": "ELEC", "dataset": "DATA", "patent": "PAT",
    "magazine_article": "MGZN", "newspaper_article": "NEWS", "encyclopedia_entry": "ENCYC",
    "manuscript": "MANSCPT", "preprint": "UNPB", "software": "COMP", "standard": "STAND",
    "presentation": "SLIDE", "interview": "PCOMM", "letter": "PCOMM", "audiovisual": "ADVS",
    "map": "MAP", "legal_case": "CASE", "statute": "STAT", "generic": "GEN",
}  # fmt: skip
TYPE_HINTED = frozenset({"preprint", "interview"})

# Tags whose untagged continuation lines are further values rather than more of the same text.
LIST_TAGS = frozenset({"AU", "A1", "A2", "A3", "A4", "ED", "KW", "SN", "UR", "L1", "L2", "L4", "LK"})
# Tags holding paragraphs: continuation lines are joined with a line break, not a space.
LONG_TAGS = frozenset({"AB", "N1", "N2", "RN"})

SIMPLE: dict[str, str] = {
    "TI": "title", "T1": "title", "CT": "title", "ST": "short_title", "VL": "volume", "VO": "volume",
    "IS": "issue", "CP": "issue", "ET": "edition", "PB": "publisher", "CY": "place",
    "PP": "place", "LA": "language", "CN": "call_number", "DB": "database", "DP": "database",
    "LB": "label", "RN": "research_notes", "AB": "abstract", "N2": "abstract", "DO": "doi",
    "JF": "journal", "JO": "journal", "J2": "journal_abbrev", "JA": "journal_abbrev",
    "T3": "series", **{f"C{i}": f"custom{i}" for i in range(1, 9)},
}  # fmt: skip
HANDLED = frozenset({"AU", "A1", "A2", "ED", "A4", "TI", "T1", "CT", "BT", "T2", "N1", "KW", "M1", "M3", "SP",
                     "EP", "PY", "Y1", "DA", "Y2", "SN", "UR", "L2", "LK", "L1", "L4", *SIMPLE})  # fmt: skip
IGNORED = frozenset({"TY", "ER", "ID"})  # ID is the exporter's record id; p2psync makes its own


class _Record:
    """The tagged lines of one record, in file order."""

    def __init__(self, line: int) -> None:
        self.line = line
        self.items: list[tuple[str, str]] = []

    def add(self, tag: str, content: str) -> None:
        self.items.append((tag, content))

    def continue_last(self, content: str) -> None:
        if not self.items:
            return
        tag, previous = self.items[-1]
        if tag in LIST_TAGS:
            if content.strip():
                self.items.append((tag, content.strip()))
        elif tag in LONG_TAGS:
            # Indentation is kept; one leading space is the writer's escape for a tag-like line.
            content = content[1:] if _ESCAPED_TAG.match(content) else content
            self.items[-1] = (tag, previous + "\n" + content)
        elif content.strip():
            self.items[-1] = (tag, f"{previous} {content.strip()}".strip())


# A line of a long text that would read as a tag line ('ER  - ...') is written with one more
# leading space, and the reader takes one off: the text survives and the record is not cut.
_TAG_LIKE = re.compile(r"^ *[A-Z][A-Z0-9]  -")
_ESCAPED_TAG = re.compile(r"^ +[A-Z][A-Z0-9]  -")


def _escape_long(text: str) -> str:
    return "\n".join(" " + line if _TAG_LIKE.match(line) else line for line in text.split("\n"))


def _tag(line: str) -> tuple[str | None, str]:
    """(tag, content) for a tag line ('AU  - Curie, Marie'), (None, text) otherwise: rispy's rule
    (RisParser.parse_line), written out here because it runs for every line of a file."""
    if line[2:5] == "  -" and line[:2].isupper() and line[0:1].isalpha():
        return line[:2], line[6:].strip()
    return None, line.strip()


class _Splitter:
    """Splits lines into records (with their numbers), noting the invalid ones and stray lines.

    `records(lines)` yields each record as its ER line ends it, so a file is read record by record;
    `invalid` and `stray` are complete once the lines are all read.
    """

    def __init__(self) -> None:
        self.invalid: list[InvalidRecord] = []
        self.stray: dict[int, list[str]] = {}  # position of the record a stray line is reported on
        self.found = 0  # records yielded
        self.any_text = False  # a line holds more than white space

    def records(self, lines: Iterable[str]) -> Iterator[tuple[int, _Record]]:
        invalid, stray = self.invalid, self.stray
        current: _Record | None = None
        orphan: _Record | None = None  # tag lines outside TY..ER
        position = 0
        number = 0
        for number, raw in enumerate(lines, start=1):
            line = raw.lstrip("\ufeff")
            tag, content = _tag(line)
            if not self.any_text and raw.strip():
                self.any_text = True
            if current is not None:
                if tag == "ER":
                    self.found += 1
                    yield position, current
                    current = None
                elif tag == "TY":
                    invalid.append(
                        InvalidRecord(
                            position,
                            current.line,
                            (
                                f"it has no ER line before the next TY line (line {number}); "
                                "end every record with 'ER  - '"
                            ),
                        )
                    )
                    position += 1
                    current = _Record(number)
                    current.add("TY", content)
                elif tag is None:
                    current.continue_last(line.rstrip())
                else:
                    current.add(tag, content)
                continue
            if tag == "TY":
                if orphan is not None:
                    _note_stray(stray, orphan, number - 1, position)
                    orphan = None
                position += 1
                current = _Record(number)
                current.add("TY", content)
            elif tag == "ER":
                position += 1
                start = orphan.line if orphan is not None else number
                invalid.append(
                    InvalidRecord(
                        position,
                        start,
                        ("it has no TY line; every record must start with a 'TY  - ' line naming its type"),
                    )
                )
                orphan = None
            elif tag is not None:
                if orphan is None:
                    orphan = _Record(number)
                orphan.add(tag, content)
            # Untagged lines between records (vendor headers, '1.' counters) are ignored.
        if current is not None:
            invalid.append(
                InvalidRecord(position, current.line, ("it ends without an ER line; the file may have been cut short"))
            )
        if orphan is not None:
            if self.found or invalid:
                _note_stray(stray, orphan, number, position)
            else:
                invalid.append(
                    InvalidRecord(
                        1,
                        orphan.line,
                        ("it has no TY line; every record must start with a 'TY  - ' line naming its type"),
                    )
                )
        invalid.sort(key=lambda item: item.position)


def _note_stray(stray: dict[int, list[str]], orphan: _Record, last_line: int, previous: int) -> None:
    """Tag lines between records (Ovid writes NL after ER): reported on the record before them."""
    tags = ", ".join(sorted({tag for tag, _ in orphan.items}))
    where = "after its ER line" if previous else "before its TY line"
    stray.setdefault(previous or 1, []).append(
        f"Lines {orphan.line}-{last_line} {where} are outside any record and were not imported ({tags})."
    )


NO_RECORDS = (
    "The file has no RIS records: no line starts with 'TY  - '. "
    "Check that it is an RIS export (each record starts 'TY  - JOUR' and ends 'ER  - ')."
)


def read(text: str, skip_invalid: bool = False) -> ReadResult:
    """Read RIS text. Raises FormatError for bad records unless skip_invalid."""
    splitter = _Splitter()
    parsed = list(_converted(splitter.records(text_lines(strip_bom(text))), None))
    if not parsed and not splitter.invalid and text.strip():
        raise FormatError(NO_RECORDS)
    for record in parsed:
        record.warnings += splitter.stray.get(record.position, [])
    return finish(parsed, splitter.invalid, LABEL, skip_invalid)


def read_lines(lines: Callable[[], Iterable[str]], skip_invalid: bool = False) -> RecordStream:
    """Read RIS from lines that can be read twice (a file): once to find the records, the
    invalid ones and the stray lines, then again record by record as the stream is iterated.
    Raises what `read` raises, before any record is handed out."""
    first = _Splitter()
    for _ in first.records(lines()):
        pass
    if not first.found and not first.invalid and first.any_text:
        raise FormatError(NO_RECORDS)
    finish([], first.invalid, LABEL, skip_invalid)  # (raises for invalid records unless skipping)
    stream = RecordStream(first.found, first.invalid, lambda: records_of(lines, first.stray))
    stream.stray = first.stray
    return stream


def records_of(lines: Callable[[], Iterable[str]], stray: dict[int, list[str]]) -> Iterator[ParsedRecord]:
    """The records of a file's lines, with the stray-line notes a first pass found (read_lines)."""
    return _converted(_Splitter().records(lines()), stray)


def _converted(records: Iterable[tuple[int, _Record]], stray: dict[int, list[str]] | None) -> Iterator[ParsedRecord]:
    for position, record in records:
        result = _convert(position, record)
        if stray is not None:
            result.warnings += stray.get(position, [])
        yield result


def _type_of(code: str, hints: list[str], builder: RecordBuilder) -> str:
    key = code.strip().upper()
    found = READ_TYPES.get(key)
    if found is None:
        wanted = code.strip().lower()
        for name, label in catalogue.REFERENCE_TYPES.items():
            if wanted in (label.lower(), name.replace("_", " ")):
                found = name
        for ris_code, description in rispy.TYPE_OF_REFERENCE_MAPPING.items():
            if found is None and wanted == description.lower():
                found = READ_TYPES.get(ris_code)
    if found is None:
        builder.warn(f"TY {code.strip()!r} has no matching p2psync type; imported as generic.")
        found = "generic"
    for hint in hints:
        hinted = _hinted_type(hint)
        if hinted and WRITE_TYPES.get(hinted) in (key, WRITE_TYPES.get(found)):
            return hinted
    return found


def _hinted_type(hint: str) -> str | None:
    wanted = hint.strip().lower()
    for name, label in catalogue.REFERENCE_TYPES.items():
        if wanted in (label.lower(), name):
            return name
    return None


def _convert(position: int, record: _Record) -> ParsedRecord:
    b = RecordBuilder(position, record.line)
    tags: dict[str, list[str]] = {}
    for tag, content in record.items:
        tags.setdefault(tag, []).append(content.strip())
    kind = _type_of(tags.get("TY", [""])[0], tags.get("M3", []), b)
    b.set("type", kind, "TY")
    used_hint = kind in TYPE_HINTED

    for tag in ("AU", "A1"):
        b.extend("authors", _people(tags.get(tag, [])), tag)
    for tag in ("A2", "ED"):
        b.extend("editors", _people(tags.get(tag, [])), tag)
    b.extend("translators", _people(tags.get("A4", [])), "A4")
    if kind == "edited_book" and b.has("authors") and not b.has("editors"):
        # EndNote keeps an edited book's editors in its Author field.
        b.set("editors", b.fields.pop("authors"), "AU")

    for tag in ("TI", "T1", "CT"):
        for value in tags.get(tag, []):
            b.set("title", value, tag)
    for value in tags.get("BT", []):
        b.set("title" if kind in ("book", "edited_book") and not b.has("title") else "book_title", value, "BT")
    t2_field = secondary_field(kind)
    for value in tags.get("T2", []):
        b.set(t2_field, value, "T2")

    for tag, name in SIMPLE.items():
        if tag in ("TI", "T1", "CT"):
            continue
        for value in tags.get(tag, []):
            b.set(name, value, tag)
    if tags.get("N1"):
        b.set("notes", "\n".join(tags["N1"]), "N1")
    b.extend("keywords", tags.get("KW", []), "KW")

    for value in tags.get("M1", []):
        # M1 is EndNote's Number, but Embase and Ovid fill it with affiliations on articles.
        if kind not in SECONDARY_JOURNAL:
            b.set("number", value, "M1")
        else:
            b.unmapped("M1", value)
    for value in tags.get("M3", []):
        if not (used_hint and _hinted_type(value) == kind):
            b.unmapped("M3 (type of work)", value)

    _pages(b, tags)
    _dates(b, tags)
    isbns, issns = split_identifiers(tags.get("SN", []), kind)
    b.set("isbn", "; ".join(isbns), "SN")
    b.set("issn", "; ".join(issns), "SN")
    for tag in ("UR", "L2", "LK", "L1", "L4"):
        for value in tags.get(tag, []):
            b.link(value, tag, is_file_field=tag in ("L1", "L4"))

    for tag, items in tags.items():
        if tag not in HANDLED and tag not in IGNORED:
            for value in items:
                b.unmapped(tag, value)
    return b.build()


def _people(names: list[str]) -> list[dict[str, str]]:
    return [p for p in (person_from_text(n) for n in names) if p]


def _pages(b: RecordBuilder, tags: dict[str, list[str]]) -> None:
    start = " ".join(tags.get("SP", [])).strip()
    end = " ".join(tags.get("EP", [])).strip()
    if f"{start} {end}".lower() in ("no specified", "no pagination specified"):
        return  # Ovid's "No pagination specified" split over SP and EP
    if start and end:
        b.set("pages", clean_pages(f"{start}-{end}"), "SP/EP")
    elif start or end:
        b.set("pages", clean_pages(start or end), "SP")


def _dates(b: RecordBuilder, tags: dict[str, list[str]]) -> None:
    years = tags.get("PY", []) + tags.get("Y1", [])
    year: str | None = None
    for value in years:
        segment = value.split("/")[0].strip()
        found, date = parse_date(value)
        candidate = segment if is_year(segment) else found
        if candidate and year is None:
            year = candidate
            b.set("year", candidate, "PY")
            if date and date != found:
                b.set("date", date, "PY")
        elif not candidate and value.strip("/ "):
            b.warn(f"PY {value!r} is not a year and was not imported.")
    for value in tags.get("DA", []):
        found, date = parse_date(value, year if year and year.isdigit() and len(year) == 4 else None)
        if date:
            b.set("date", date, "DA", replace=True)
            if year is None and found:
                year = found
                b.set("year", found, "DA")
        else:
            b.warn(f"DA {value!r} is not a date and was not imported.")
    for value in tags.get("Y2", []):
        _found, date = parse_date(value)
        if date:
            b.set("accessed", date, "Y2")
        else:
            b.warn(f"Y2 (access date) {value!r} is not a date and was not imported.")


# --- writing -----------------------------------------------------------------------------------


class _Writer(rispy.RisWriter):
    """rispy's writer without its '1.' header line before each record."""

    DEFAULT_REFERENCE_TYPE = "GEN"

    def set_header(self, count: int) -> str:
        return ""


_ORDER = ["TY", "M3", "TI", "ST", "AU", "A2", "A4", "PY", "DA", "T2", "JF", "BT", "T3", "J2", "VL",
          "IS", "M1", "SP", "EP", "ET", "PB", "CY", "SN", "DO", "UR", "L1", "AB", "KW", "N1", "RN",
          "LA", "Y2", "LB", "CN", "DB", *(f"C{i}" for i in range(1, 9)), "ID"]  # fmt: skip
_MAPPING: dict[str, str] = {tag: tag.lower() for tag in _ORDER}
_MAPPING["TY"] = "type_of_reference"
_WRITE_LIST_TAGS = ["AU", "A2", "A4", "SN", "L1", "KW", "UR"]


def write(records: Iterable[dict[str, Any]]) -> str:
    """RIS text for public reference dicts (id becomes ID; trash and dates are not written)."""
    return "".join(write_chunks(records))


def write_chunks(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """`write`'s text, one record at a time (an export streams it to its file).

    rispy writes a list whole: each record's lines, an empty line between records, a newline
    after the last. Here each record is rispy's own lines, the empty line coming before every
    record but the first: the same text, never the whole list in memory.
    """
    writer = _Writer(mapping=_MAPPING, list_tags=_WRITE_LIST_TAGS, delimiter_tags_mapping={})
    separator = (writer.SEPARATOR or "") + writer.NEWLINE if writer.SEPARATOR is not None else ""
    first = True
    for record in records:
        lines = writer._format_reference(_to_ris(record), count=1, n=1)  # (n=1: no separator after it)
        text = writer.NEWLINE.join(lines) + writer.NEWLINE
        yield text if first else separator + text
        first = False


def _to_ris(record: dict[str, Any]) -> dict[str, Any]:
    v = values(record)
    kind = ref_type(record)
    tags: dict[str, Any] = {"TY": WRITE_TYPES.get(kind, "GEN")}
    if kind in TYPE_HINTED:
        tags["M3"] = catalogue.REFERENCE_TYPES[kind]
    authors = list(v.get("authors", []))
    editors = list(v.get("editors", []))
    if kind == "edited_book" and not authors:
        authors, editors = editors, []  # EndNote's Edited Book keeps editors as authors
    simple = {
        "TI": "title", "ST": "short_title", "J2": "journal_abbrev", "VL": "volume",
        "IS": "issue", "M1": "number", "ET": "edition", "PB": "publisher", "CY": "place",
        "DO": "doi", "AB": "abstract", "N1": "notes", "RN": "research_notes", "LA": "language",
        "LB": "label", "CN": "call_number", "DB": "database",
        **{f"C{i}": f"custom{i}" for i in range(1, 9)},
    }  # fmt: skip
    for tag, name in simple.items():
        if name in v:
            tags[tag] = _escape_long(str(v[name])) if tag in LONG_TAGS else str(v[name])
    if authors:
        tags["AU"] = [person_to_text(p) for p in authors]
    if editors:
        tags["A2"] = [person_to_text(p) for p in editors]
    if v.get("translators"):
        tags["A4"] = [person_to_text(p) for p in v["translators"]]
    year = v.get("year")
    date = v.get("date")
    if year:
        tags["PY"] = year
    elif date:
        tags["PY"] = date[:4]
    if date:
        tags["DA"] = date.replace("-", "/")
    if "accessed" in v:
        tags["Y2"] = v["accessed"].replace("-", "/")
    t2 = secondary_field(kind)
    for name, other_tag in (("journal", "JF"), ("book_title", "BT"), ("series", "T3")):
        if name in v:
            tags["T2" if name == t2 else other_tag] = v[name]
    if "pages" in v:
        start, end = split_pages(v["pages"])
        tags["SP"] = start
        if end:
            tags["EP"] = end
    ids = identifiers_of(v)
    if ids:
        tags["SN"] = ids
    if "url" in v:
        tags["UR"] = [v["url"]]
    files = attachment_paths(record)
    if files:
        tags["L1"] = files
    if v.get("keywords"):
        tags["KW"] = list(v["keywords"])
    if record.get("id"):
        tags["ID"] = str(record["id"])
    ordered = {_MAPPING[tag]: tags[tag] for tag in _ORDER if tag in tags}
    return ordered
