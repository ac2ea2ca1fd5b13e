"""BibTeX and BibLaTeX reading and writing, with bibtexparser 2 (2.0.0b8).

bibtexparser splits the file into blocks; this module maps entries to records and back. The
text of a value (braces, quotes, @string macros, '#' concatenation, LaTeX to Unicode and back,
names) is latex.py's concern.

bibtexparser 2.0.0b8 silently treats `@article( ... )` entries as comments, so parenthesised
entries are rewritten to braces first (same length, so line numbers hold), and every `@type{`
or `@type(` line that did not become an entry is reported as a record that could not be read.
"""

from __future__ import annotations

import contextlib
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

import bibtexparser
from bibtexparser.library import Library
from bibtexparser.middlewares.enclosing import AddEnclosingMiddleware
from bibtexparser.model import (
    DuplicateBlockKeyBlock,
    DuplicateFieldKeyBlock,
    Entry,
    ExplicitComment,
    Field,
    ImplicitComment,
    ParsingFailedBlock,
    Preamble,
    String,
)

from p2psync.formats.common import (
    FormatError,
    InvalidRecord,
    LineCounter,
    ParsedRecord,
    ReadResult,
    RecordBuilder,
    attachment_paths,
    clean_pages,
    finish,
    is_year,
    join_keywords,
    make_date,
    month_number,
    parse_date,
    ref_type,
    split_identifiers,
    split_keywords,
    strip_bom,
    values,
)
from p2psync.formats.latex import decode, escape, evaluate, format_names, parse_names, verbatim
from p2psync.model import fields as catalogue

NAME = "bibtex"
LABEL = "BibTeX"
EXTENSIONS = (".bib", ".bibtex", ".biblatex")

READ_TYPES: dict[str, str] = {
    # Every catalogue type name is accepted as is (Mendeley writes @web_page, @book_section...).
    **{name: name for name in catalogue.REFERENCE_TYPES},
    "article": "journal_article", "review": "journal_article",
    "book": "book", "mvbook": "book", "booklet": "book", "reference": "book", "mvreference": "book",
    "collection": "edited_book", "mvcollection": "edited_book",
    "inbook": "book_section", "incollection": "book_section", "bookinbook": "book_section",
    "suppbook": "book_section", "suppcollection": "book_section", "chapter": "book_section",
    "inproceedings": "conference_paper", "conference": "conference_paper",
    "proceedings": "conference_proceedings", "mvproceedings": "conference_proceedings",
    "phdthesis": "thesis", "mastersthesis": "thesis",
    "techreport": "report", "manual": "report",
    "online": "web_page", "electronic": "web_page", "www": "web_page", "webpage": "web_page",
    "data": "dataset", "inreference": "encyclopedia_entry", "unpublished": "manuscript",
    "code": "software", "video": "audiovisual", "audio": "audiovisual", "movie": "audiovisual",
    "music": "audiovisual", "film": "audiovisual", "jurisdiction": "legal_case",
    "legislation": "statute", "legal": "statute", "misc": "generic", "periodical": "generic",
    "artwork": "generic", "image": "generic",
}  # fmt: skip

# catalogue type -> (entry type, entrysubtype). Types BibLaTeX has no entry type for are written
# as @misc with entrysubtype naming the p2psync type, which the reader honours.
WRITE_TYPES: dict[str, tuple[str, str | None]] = {
    "journal_article": ("article", None), "book": ("book", None), "edited_book": ("book", None),
    "book_section": ("incollection", None), "conference_paper": ("inproceedings", None),
    "conference_proceedings": ("proceedings", None), "thesis": ("phdthesis", None),
    "report": ("techreport", None), "web_page": ("online", None), "dataset": ("dataset", None),
    "patent": ("patent", None), "magazine_article": ("article", "magazine"),
    "newspaper_article": ("article", "newspaper"), "encyclopedia_entry": ("inreference", None),
    "manuscript": ("unpublished", None), "preprint": ("misc", "preprint"),
    "software": ("software", None), "standard": ("standard", None),
    "presentation": ("misc", "presentation"), "interview": ("misc", "interview"),
    "letter": ("letter", None), "audiovisual": ("video", None), "map": ("misc", "map"),
    "legal_case": ("jurisdiction", None), "statute": ("legislation", None), "generic": ("misc", None),
}  # fmt: skip

JOURNALISH = frozenset({"journal_article", "magazine_article", "newspaper_article", "preprint"})

# BibTeX field -> catalogue field, for plain text values.
SIMPLE: dict[str, str] = {
    "shorttitle": "short_title", "journal": "journal", "journaltitle": "journal",
    "shortjournal": "journal_abbrev", "journalabbrev": "journal_abbrev",
    "journal-abbrev": "journal_abbrev", "journal_abbrev": "journal_abbrev",
    "booktitle": "book_title", "series": "series", "volume": "volume", "issue": "issue",
    "edition": "edition", "publisher": "publisher", "school": "publisher",
    "institution": "publisher", "organization": "publisher", "address": "place",
    "location": "place", "city": "place", "abstract": "abstract", "note": "notes",
    "annote": "research_notes", "annotation": "research_notes", "comment": "research_notes",
    "language": "language", "langid": "language", "library": "call_number",
    "callnumber": "call_number", "database": "database", "archive": "archive",
    **{f"custom{i}": f"custom{i}" for i in range(1, 9)},
}  # fmt: skip
VERBATIM = frozenset({"url", "doi", "file", "eprint", "pdf", "urlraw"})
HANDLED = frozenset({*SIMPLE, *VERBATIM, "isbn", "issn", "title", "subtitle", "author", "editor", "translator",
                     "year", "date", "month", "urldate", "pages", "number", "keywords",
                     "mendeley-tags", "entrysubtype", "howpublished", "crossref"})  # fmt: skip
# Fields an entry takes from the entry its crossref names, when it lacks them.
INHERITED = ("editor", "publisher", "address", "location", "organization", "institution", "year", "date",
             "month", "series", "volume", "number", "edition", "isbn", "language")  # fmt: skip
NAME_FIELDS = {"author": "authors", "editor": "editors", "translator": "translators"}
MONTH_MACROS = {
    m: n for m, n in zip(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
        ["January", "February", "March", "April", "May", "June", "July", "August", "September",
         "October", "November", "December"], strict=True)
}  # fmt: skip

_HEAD = re.compile(r"^[ \t]*@[ \t]*([A-Za-z_][\w:-]*)[ \t]*([({])", re.MULTILINE)
_NOT_ENTRIES = frozenset({"comment", "string", "preamble"})


# --- reading -----------------------------------------------------------------------------------


def read(text: str, skip_invalid: bool = False) -> ReadResult:
    """Read BibTeX or BibLaTeX text. Raises FormatError for bad entries unless skip_invalid."""
    text = _parens_to_braces(strip_bom(text))
    with _quiet():
        library = bibtexparser.parse_string(text, parse_stack=[])
    strings: dict[str, str] = dict(MONTH_MACROS)
    slots: list[tuple[int, Entry | None, str, list[str]]] = []  # (line, entry, error, warnings)
    started: set[int] = set()
    for block in library.blocks:
        line = (block.start_line or 0) + 1
        if not isinstance(block, ImplicitComment):
            started.add(line)
        if isinstance(block, String):
            strings[block.key.lower()] = evaluate(block.value, strings)[0]
        elif isinstance(block, Entry):
            slots.append((line, block, "", []))
        elif isinstance(block, DuplicateBlockKeyBlock):
            inner = block.ignore_error_block
            if isinstance(inner, String):
                strings[inner.key.lower()] = evaluate(inner.value, strings)[0]
            elif isinstance(inner, Entry):
                note = f"Its citation key {inner.key!r} is also used by an earlier entry."
                slots.append((line, inner, "", [note] if inner.key else []))
        elif isinstance(block, DuplicateFieldKeyBlock):
            inner = block.ignore_error_block
            if isinstance(inner, Entry):
                dupes = ", ".join(sorted(block.duplicate_keys))
                slots.append(
                    (line, inner, "", [f"Field {dupes} appears more than once; the first value was imported."])
                )
        elif isinstance(block, ParsingFailedBlock):
            reason = getattr(block.error, "abort_reason", None) or str(block.error)
            slots.append(
                (line, None, f"it is not well-formed ({reason.strip()}); check its braces, quotes and commas", [])
            )
        elif not isinstance(block, ExplicitComment | ImplicitComment | Preamble):
            slots.append((line, None, "it could not be parsed", []))
    lines = LineCounter(text)
    for match in _HEAD.finditer(text):
        line = lines.line_at(match.start())
        if match.group(1).lower() not in _NOT_ENTRIES and line not in started:
            slots.append(
                (
                    line,
                    None,
                    (
                        f"the entry @{match.group(1)} was not read because it is not closed; a closing "
                        f"'{'}' if match.group(2) == '{' else ')'}' is missing or a brace is unbalanced"
                    ),
                    [],
                )
            )
    slots.sort(key=lambda slot: slot[0])
    parents = {entry.key.lower(): entry for _line, entry, _e, _n in slots if entry is not None and entry.key}
    records: list[ParsedRecord] = []
    invalid: list[InvalidRecord] = []
    for position, (line, entry, error, notes) in enumerate(slots, start=1):
        if entry is None:
            invalid.append(InvalidRecord(position, line, error))
        else:
            record = _convert(entry, position, line, strings, parents)
            record.warnings[:0] = notes
            records.append(record)
    if not slots and re.search(r"\S", _strip_comments(library)):
        raise FormatError(
            "The file has no BibTeX entries: no line starts with '@article{', '@book{' or the like. "
            "Check that it is a .bib file."
        )
    return finish(records, invalid, LABEL, skip_invalid)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """bibtexparser logs each broken block; we report them as invalid records instead."""
    logger = logging.getLogger("bibtexparser")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _strip_comments(library: Library) -> str:
    """Text of blocks other than comments, to tell an empty file from a foreign one."""
    return "".join(b.raw or "" for b in library.blocks if not isinstance(b, ExplicitComment | ImplicitComment))


def _parens_to_braces(text: str) -> str:
    """Rewrite `@type( ... )` as `@type{ ... }` (same length) for bibtexparser's splitter."""
    chars: list[str] | None = None
    for match in _HEAD.finditer(text):
        if match.group(2) != "(" or match.group(1).lower() == "comment":
            continue
        depth = 0
        quoted = False
        i = match.end()
        while i < len(text):
            ch = text[i]
            if ch == "\\":
                i += 2
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth = max(depth - 1, 0)
            elif ch == '"' and depth == 0:
                quoted = not quoted
            elif ch == ")" and depth == 0 and not quoted:
                if chars is None:
                    chars = list(text)
                chars[match.end() - 1] = "{"
                chars[i] = "}"
                break
            elif ch == "@" and depth == 0 and not quoted and _HEAD.match(text, text.rfind("\n", 0, i) + 1):
                break  # the next entry starts: this one is not closed
            i += 1
    return "".join(chars) if chars is not None else text


def _raw_fields(entry: Entry, strings: dict[str, str], b: RecordBuilder | None = None) -> dict[str, str]:
    """Field name (lowercased) -> LaTeX text, first occurrence of each field."""
    raw: dict[str, str] = {}
    for fld in entry.fields:
        key = fld.key.strip().lower()
        if key in raw:
            continue
        value, undefined = evaluate(str(fld.value), strings)
        for macro in undefined:
            if b is not None:
                b.warn(f"Field {key} uses the undefined @string {macro!r}; its name was imported as text.")
        raw[key] = value
    return raw


def _inherit(raw: dict[str, str], parents: dict[str, Entry], strings: dict[str, str], b: RecordBuilder) -> None:
    """BibTeX crossref: fill missing fields from the entry named (a collection's title is the book title)."""
    key = raw.get("crossref", "").strip()
    if not key:
        return
    parent = parents.get(key.lower())
    if parent is None:
        b.warn(f"crossref {key!r} names no entry in the file; nothing was inherited from it.")
        return
    inherited = _raw_fields(parent, strings)
    if "title" in inherited and "booktitle" not in raw:
        raw["booktitle"] = inherited["title"]
    for name in INHERITED:
        if name in inherited and name not in raw:
            raw[name] = inherited[name]


def _convert(
    entry: Entry, position: int, line: int, strings: dict[str, str], parents: dict[str, Entry]
) -> ParsedRecord:
    b = RecordBuilder(position, line)
    raw = _raw_fields(entry, strings, b)
    _inherit(raw, parents, strings, b)

    for key, target in NAME_FIELDS.items():
        if raw.get(key):
            b.set(target, parse_names(raw[key], key, b), key)

    entry_type = entry.entry_type.lower()
    subtype = decode(raw.get("entrysubtype", "")).strip().lower()
    kind = READ_TYPES.get(entry_type)
    if kind is None:
        b.warn(f"Entry type @{entry.entry_type} is not known; imported as generic.")
        kind = "generic"
    if entry_type == "article" and subtype in ("magazine", "newspaper"):
        kind = f"{subtype}_article"
    elif entry_type == "misc" and subtype in catalogue.REFERENCE_TYPES:
        kind = subtype
    elif subtype:
        b.unmapped("entrysubtype", subtype)
    if kind == "book" and b.has("editors") and not b.has("authors"):
        kind = "edited_book"
    b.set("type", kind, f"@{entry.entry_type}")

    if entry.key:
        b.set("label", entry.key, "citation key")
    title = decode(raw.get("title", ""))
    subtitle = decode(raw.get("subtitle", ""))
    if title and subtitle:
        title = f"{title.rstrip()}: {subtitle.strip()}"
    b.set("title", title or subtitle, "title")

    for key, target in SIMPLE.items():
        if key in raw:
            b.set(target, decode(raw[key]), key)
    if "number" in raw:
        # In @article 'number' is the issue; elsewhere (reports, patents) it is a number.
        b.set("issue" if kind in JOURNALISH else "number", decode(raw["number"]), "number")
    if "pages" in raw:
        b.set("pages", clean_pages(decode(raw["pages"])), "pages")
    keywords = split_keywords(decode(raw.get("keywords", ""))) + split_keywords(decode(raw.get("mendeley-tags", "")))
    b.extend("keywords", keywords, "keywords")
    _dates(b, raw)

    if "doi" in raw:
        b.set("doi", verbatim(raw["doi"]), "doi")
    if "url" in raw:
        b.link(verbatim(raw["url"]), "url", is_file_field=False)
    if "howpublished" in raw:
        published = verbatim(raw["howpublished"]) if "\\url" in raw["howpublished"] else ""
        if published.lower().startswith(("http://", "https://")):
            b.link(published, "howpublished", is_file_field=False)
        else:
            b.unmapped("howpublished", decode(raw["howpublished"]))
    for path in parse_file_field(raw.get("file", "")):
        b.link(path, "file", is_file_field=True)
    for key in ("pdf",):
        if key in raw:
            b.link(verbatim(raw[key]), key, is_file_field=True)
    # Exporters put ISSNs in isbn and vice versa; sort them by shape.
    isbns, issns = split_identifiers([decode(raw["isbn"])] if "isbn" in raw else [], kind)
    more_isbns, more_issns = split_identifiers([decode(raw["issn"])] if "issn" in raw else [], "")
    b.set("isbn", "; ".join(dict.fromkeys(isbns + more_isbns)), "isbn")
    b.set("issn", "; ".join(dict.fromkeys(issns + more_issns)), "issn")

    for key, value in raw.items():
        if key not in HANDLED:
            b.unmapped(key, decode(value) if key not in VERBATIM else value)
    return b.build()


def _dates(b: RecordBuilder, raw: dict[str, str]) -> None:
    year_text = " ".join(decode(raw.get("year", "")).split())
    found, _date = parse_date(year_text)
    if year_text and not is_year(year_text) and found:
        b.set("year", found, "year")
        b.warn(f"year {year_text!r} is not a single year; imported as {found}.")
    elif year_text:
        b.set("year", year_text, "year")
    if raw.get("date"):
        date_text = decode(raw["date"]).strip()
        found, date = parse_date(date_text)
        if date:
            b.set("date", date, "date")
            if found and not b.has("year"):
                b.set("year", found, "date")
        else:
            b.warn(f"date {date_text!r} is not a date and was not imported.")
    if raw.get("month") and not b.has("date"):
        month = month_number(decode(raw["month"]))
        date = make_date(b.fields.get("year"), month)
        if month and date and len(date) > 4:
            b.set("date", date, "month")
        else:
            b.warn(f"month {decode(raw['month'])!r} was not imported (no four-digit year or not a month).")
    if raw.get("urldate"):
        _found, accessed = parse_date(decode(raw["urldate"]))
        if accessed:
            b.set("accessed", accessed, "urldate")
        else:
            b.warn(f"urldate {raw['urldate']!r} is not a date and was not imported.")


def parse_file_field(value: str) -> list[str]:
    """Paths in a JabRef/Zotero/Mendeley `file` field.

    Forms: 'path', ':path:PDF', 'Description:path:Type', several joined by ';'. JabRef escapes
    ':' and ';' with a backslash; Mendeley writes the backslash as '$\\backslash$'.
    """
    text = value.replace("$\\backslash$", "\\").strip()
    if not text:
        return []
    paths: list[str] = []
    for item in _split_unescaped(text, ";"):
        parts = _split_unescaped(item, ":")
        if len(parts) >= 3:
            path = ":".join(parts[1:-1])
        elif len(parts) == 2:
            # 'C:/dir/x.pdf' (a drive letter) or 'path:PDF'.
            path = ":".join(parts) if len(parts[0]) == 1 else parts[0]
        else:
            path = parts[0]
        path = re.sub(r"\\(.)", r"\1", path).strip()
        if path and path not in paths:
            paths.append(path)
    return paths


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


# --- writing -----------------------------------------------------------------------------------


_KEY_OK = re.compile(r"[^\s,{}()\"#%'=~\\@]+")


_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")
_DIGITS = re.compile(r"\d*")


def _ascii_word(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _NOT_ALNUM.sub("", folded)


def _key_word(title: str) -> str:
    """The title's first ASCII word of more than three letters, else its first word."""
    first = ""
    for raw in title.split():
        word = _ascii_word(raw)
        if len(word) > 3:
            return word
        first = first or word
    return first


def _make_key(v: dict[str, Any], used: set[str], suffixes: dict[str, int]) -> str:
    label = v.get("label")
    if isinstance(label, str) and _KEY_OK.fullmatch(label) and label not in used:
        return label
    people = v.get("authors") or v.get("editors") or []
    who = ""
    if people:
        name = people[0].get("family") or people[0].get("literal") or ""
        who = _ascii_word(name.split()[0]) if name.split() else ""
    year_match = _DIGITS.match(str(v.get("year") or v.get("date") or ""))
    year = year_match.group(0) if year_match else ""
    word = _key_word(str(v.get("title", "")))
    base = (who or "anon") + year + word.lower()
    key = base
    suffix = suffixes.get(base, 0)  # remembered per base, so many alike references stay linear
    while key in used:
        suffix += 1
        key = base + (chr(ord("a") + suffix - 1) if suffix <= 26 else str(suffix))
    suffixes[base] = suffix
    return key


def write(records: Iterable[dict[str, Any]]) -> str:
    """BibLaTeX-flavoured BibTeX (UTF-8) for public reference dicts.

    The citation key is the reference's label when that is a usable, unused key; otherwise one is
    made from the first author, the year and the first long title word (Curie1903radioactive).
    """
    return "".join(write_chunks(records))


WRITE_BATCH = 500  # entries handed to bibtexparser at a time


def write_chunks(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """`write`'s text, WRITE_BATCH entries at a time. bibtexparser writes each entry on its own
    (value_column 0: no alignment across entries) with a block separator between entries, so
    batches joined by that separator are the whole library's text. The keys already used stay
    known for the whole file."""
    used: set[str] = set()
    suffixes: dict[str, int] = {}
    blocks: list[Entry] = []
    separator = bibtexparser.BibtexFormat().block_separator
    first = True
    for record in records:
        v = values(record)
        key = _make_key(v, used, suffixes)
        used.add(key)
        entry_type, subtype = WRITE_TYPES.get(ref_type(record), ("misc", None))
        blocks.append(Entry(entry_type, key, _fields(record, v, subtype)))
        if len(blocks) >= WRITE_BATCH:
            yield ("" if first else separator) + _write_blocks(blocks)
            blocks, first = [], False
    if blocks:
        yield ("" if first else separator) + _write_blocks(blocks)


def _write_blocks(blocks: list[Entry]) -> str:
    fmt = bibtexparser.BibtexFormat()
    fmt.indent = "  "
    # Values are escaped already; only braces go around them. In place: the default copies all.
    enclose = AddEnclosingMiddleware(
        allow_inplace_modification=True, default_enclosing="{", reuse_previous_enclosing=False, enclose_integers=True
    )
    return str(bibtexparser.write_string(Library(blocks), unparse_stack=[enclose], bibtex_format=fmt))


def _fields(record: dict[str, Any], v: dict[str, Any], subtype: str | None = None) -> list[Field]:
    kind = ref_type(record)
    out: list[tuple[str, str]] = []
    if subtype:
        out.append(("entrysubtype", subtype))
    for name, key in (("authors", "author"), ("editors", "editor"), ("translators", "translator")):
        if v.get(name):
            out.append((key, format_names(v[name])))
    publisher_key = {"thesis": "school", "report": "institution"}.get(kind, "publisher")
    plain = [
        ("title", "title"), ("short_title", "shorttitle"), ("journal", "journal"),
        ("journal_abbrev", "shortjournal"), ("book_title", "booktitle"), ("series", "series"),
        ("year", "year"), ("volume", "volume"),
        ("issue", "number" if kind in JOURNALISH else "issue"),
        ("number", "number"), ("edition", "edition"), ("publisher", publisher_key),
        ("place", "address"), ("isbn", "isbn"), ("issn", "issn"), ("abstract", "abstract"),
        ("notes", "note"), ("research_notes", "annote"), ("language", "language"),
        ("call_number", "library"), ("database", "database"), ("archive", "archive"),
        *((f"custom{i}", f"custom{i}") for i in range(1, 9)),
    ]  # fmt: skip
    taken: set[str] = {key for key, _ in out}
    for name, key in plain:
        if name in v and key not in taken:
            out.append((key, escape(str(v[name]))))
            taken.add(key)
    if "date" in v:
        out.append(("date", v["date"]))
    if "pages" in v:
        out.append(("pages", escape(v["pages"]).replace("-", "--")))
    if v.get("keywords"):
        out.append(("keywords", escape(join_keywords(v["keywords"]))))
    if "doi" in v:
        out.append(("doi", v["doi"]))
    if "url" in v:
        out.append(("url", v["url"]))
    if "accessed" in v:
        out.append(("urldate", v["accessed"]))
    files = attachment_paths(record)
    if files:
        out.append(("file", ";".join(":" + _escape_file(p) + ":" + _file_type(p) for p in files)))
    return [Field(key, value) for key, value in out]


def _escape_file(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(";", "\\;")


def _file_type(path: str) -> str:
    match = re.search(r"\.([A-Za-z0-9]{1,5})$", path)
    return match.group(1).upper() if match else ""
