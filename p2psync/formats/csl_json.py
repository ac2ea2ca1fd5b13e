"""CSL-JSON (Citation Style Language data, as Zotero, Pandoc and citeproc use it) with json.

A file is a JSON array of items (a single item object is accepted too). Items are decoded one by
one so that each keeps the line it starts on and a broken item can be named; a file that is not
valid JSON at all is refused with the line and column of the error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from p2psync.formats.common import (
    FormatError,
    InvalidRecord,
    LineCounter,
    ParsedRecord,
    ReadResult,
    RecordBuilder,
    clean_pages,
    finish,
    is_year,
    join_keywords,
    make_date,
    parse_date,
    ref_type,
    shorten,
    split_identifiers,
    split_keywords,
    strip_bom,
    values,
)
from p2psync.model.people import Person

NAME = "csl-json"
LABEL = "CSL-JSON"
EXTENSIONS = (".json", ".csl.json", ".csljson")

READ_TYPES: dict[str, str] = {
    "article-journal": "journal_article", "review": "journal_article",
    "review-book": "journal_article", "article": "preprint", "article-magazine": "magazine_article",
    "article-newspaper": "newspaper_article", "book": "book", "pamphlet": "book",
    "classic": "book", "chapter": "book_section", "paper-conference": "conference_paper",
    "thesis": "thesis", "report": "report", "webpage": "web_page", "post-weblog": "web_page",
    "post": "web_page", "dataset": "dataset", "patent": "patent",
    "entry-encyclopedia": "encyclopedia_entry", "entry-dictionary": "encyclopedia_entry",
    "entry": "generic", "manuscript": "manuscript", "software": "software",
    "standard": "standard", "speech": "presentation", "interview": "interview",
    "personal_communication": "letter", "motion_picture": "audiovisual",
    "broadcast": "audiovisual", "song": "audiovisual", "map": "map", "legal_case": "legal_case",
    "legislation": "statute", "bill": "statute", "regulation": "statute", "treaty": "statute",
    "hearing": "generic", "document": "generic", "graphic": "generic", "figure": "generic",
    "collection": "generic", "event": "generic", "performance": "generic", "periodical": "generic",
}  # fmt: skip
# Edited books and conference proceedings have no CSL type of their own: both are written as
# "book"; an edited book comes back because it has editors and no authors.
WRITE_TYPES: dict[str, str] = {
    "journal_article": "article-journal", "book": "book", "edited_book": "book",
    "book_section": "chapter", "conference_paper": "paper-conference",
    "conference_proceedings": "book", "thesis": "thesis", "report": "report",
    "web_page": "webpage", "dataset": "dataset", "patent": "patent",
    "magazine_article": "article-magazine", "newspaper_article": "article-newspaper",
    "encyclopedia_entry": "entry-encyclopedia", "manuscript": "manuscript", "preprint": "article",
    "software": "software", "standard": "standard", "presentation": "speech",
    "interview": "interview", "letter": "personal_communication", "audiovisual": "motion_picture",
    "map": "map", "legal_case": "legal_case", "statute": "legislation", "generic": "document",
}  # fmt: skip

CONTAINER_BOOK = frozenset({"book_section", "conference_paper", "encyclopedia_entry",
                            "conference_proceedings", "book", "edited_book"})  # fmt: skip
SIMPLE: dict[str, str] = {
    "title-short": "short_title", "shortTitle": "short_title", "short-title": "short_title",
    "container-title-short": "journal_abbrev", "journalAbbreviation": "journal_abbrev",
    "collection-title": "series", "volume": "volume", "issue": "issue", "number": "number",
    "edition": "edition", "publisher": "publisher", "publisher-place": "place",
    "DOI": "doi", "URL": "url", "abstract": "abstract", "note": "notes", "annote": "research_notes",
    "language": "language", "citation-key": "label", "call-number": "call_number",
    "archive": "archive", "source": "database",
}  # fmt: skip
PEOPLE = {"author": "authors", "editor": "editors", "translator": "translators"}
HANDLED = frozenset({*SIMPLE, *PEOPLE, "id", "type", "title", "container-title", "page",
                     "issued", "accessed", "ISBN", "ISSN", "keyword"})  # fmt: skip
_MARKUP = re.compile(r"</?(?:i|b|sub|sup|sc|span)(?:\s[^>]*)?>", re.IGNORECASE)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # half of a pair, or a lone one that is no character


# --- reading -----------------------------------------------------------------------------------


def read(text: str, skip_invalid: bool = False) -> ReadResult:
    """Read CSL-JSON text. Raises FormatError for bad items unless skip_invalid."""
    items = _items(strip_bom(text))
    records: list[ParsedRecord] = []
    invalid: list[InvalidRecord] = []
    escapes = _SURROGATE_ESCAPE.search(text) is not None
    for position, (line, item) in enumerate(items, start=1):
        if not isinstance(item, dict):
            invalid.append(
                InvalidRecord(
                    position, line, (f"it is a JSON {_json_kind(item)}, not an object with 'type', 'title' and so on")
                )
            )
            continue
        if escapes and not _is_unicode(item):
            invalid.append(InvalidRecord(position, line, "it holds an escaped lone surrogate (such as \\ud800)"))
            continue
        records.append(_convert(item, position, line))
    return finish(records, invalid, LABEL, skip_invalid)


def _is_unicode(item: Any) -> bool:
    """Whether every text in an item is valid Unicode (a lone surrogate cannot be stored)."""
    try:
        json.dumps(item, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "true/false",
            type(None): "null"}.get(type(value), type(value).__name__)  # fmt: skip


def _json_error(exc: json.JSONDecodeError) -> FormatError:
    return FormatError(
        f"The CSL-JSON file is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}. "
        "The file may be cut short or damaged; export it again."
    )


def _items(text: str) -> list[tuple[int, Any]]:
    """(line, item) for each top-level item, decoding one item at a time to know its line."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    index = ws.match(text, 0).end()  # type: ignore[union-attr]
    if index == len(text):
        return []
    if text[index] == "{":
        try:
            item, _end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            raise _json_error(exc) from None
        except (ValueError, RecursionError):  # a number of thousands of digits, or nesting too deep
            raise FormatError(
                f"The CSL-JSON file has an impossible value near line {LineCounter(text).line_at(index)}; "
                "export it again."
            ) from None
        return [(text.count("\n", 0, index) + 1, item)]  # one item: counting once is fine
    if text[index] != "[":
        raise FormatError(
            "The file is not CSL-JSON: it does not start with '[' (a list of items). "
            "Export CSL JSON from Zotero, or use another format."
        )
    items: list[tuple[int, Any]] = []
    lines = LineCounter(text)
    index = ws.match(text, index + 1).end()  # type: ignore[union-attr]
    if text.startswith("]", index):
        return items
    while True:
        try:
            item, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            raise _json_error(exc) from None
        except (ValueError, RecursionError):  # a number of thousands of digits, or nesting too deep
            raise FormatError(
                f"The CSL-JSON file has an impossible value near line {LineCounter(text).line_at(index)}; "
                "export it again."
            ) from None
        items.append((lines.line_at(index), item))
        index = ws.match(text, end).end()  # type: ignore[union-attr]
        if text.startswith(",", index):
            index = ws.match(text, index + 1).end()  # type: ignore[union-attr]
            continue
        if text.startswith("]", index):
            return items
        line = lines.line_at(index)
        raise FormatError(
            f"The CSL-JSON file is not valid JSON at line {line}: expected ',' or ']' after item "
            f"{len(items)}. The file may be cut short or damaged; export it again."
        )


def _scalar(value: Any, source: str, b: RecordBuilder, join: str | None = None) -> str | None:
    """A CSL value as text: numbers become text, lists (raw Crossref) their first item."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = [str(v) for v in value if isinstance(v, str | int | float) and str(v).strip()]
        if join is not None:
            return join.join(texts) or None
        for extra in texts[1:]:
            b.unmapped(f"{source} (further value)", extra)
        return texts[0] if texts else None
    b.warn(f"{source} is a JSON {_json_kind(value)}, not text, and was not imported.")
    return None


def _person(value: Any) -> Person | None:
    if not isinstance(value, dict):
        return {"literal": value.strip()} if isinstance(value, str) and value.strip() else None
    literal = value.get("literal") or value.get("name")
    if isinstance(literal, str) and literal.strip():
        return {"literal": literal.strip()}
    family = " ".join(
        str(value[k]).strip() for k in ("non-dropping-particle", "family", "suffix")
        if isinstance(value.get(k), str) and value[k].strip())  # fmt: skip
    given = " ".join(
        str(value[k]).strip() for k in ("given", "dropping-particle")
        if isinstance(value.get(k), str) and value[k].strip())  # fmt: skip
    if family:
        return {"family": family, "given": given} if given else {"family": family}
    return {"literal": given} if given else None


def _date(value: Any, source: str, b: RecordBuilder) -> tuple[str | None, str | None]:
    """(year, ISO date) from a CSL date: date-parts (first of a range), raw, or literal."""
    if isinstance(value, str):
        return parse_date(value)
    if not isinstance(value, dict):
        b.warn(f"{source} is not a CSL date and was not imported.")
        return None, None
    parts = value.get("date-parts")
    if isinstance(parts, list) and parts:
        first = parts[0]
        if not isinstance(first, list) or not first or first[0] in (None, ""):
            b.warn(f"{source} has empty date-parts and was not imported.")
            return None, None
        if len(first) > 3:
            b.warn(f"{source} has {len(first)} date parts; only year, month and day were imported.")
        try:
            numbers = [int(str(p)) for p in first[:3] if p not in (None, "")]
        except ValueError:
            b.warn(f"{source} date-parts {shorten(first)} are not numbers and were not imported.")
            return None, None
        if not numbers:
            return None, None
        year = str(numbers[0])
        month, day = [*numbers[1:3], None, None][:2]
        return year, make_date(year, month, day)
    for key in ("raw", "literal"):
        if isinstance(value.get(key), str) and value[key].strip():
            if is_year(value[key]):
                return value[key].strip(), None  # '2021a', 'in press'
            found, date = parse_date(value[key])
            if found is None and date is None:
                b.warn(f"{source} {value[key]!r} is not a date and was not imported.")
            return found, date
    b.warn(f"{source} has no date-parts and was not imported.")
    return None, None


def _convert(item: dict[str, Any], position: int, line: int) -> ParsedRecord:
    b = RecordBuilder(position, line)
    csl_type = item.get("type")
    if isinstance(csl_type, str) and csl_type in READ_TYPES:
        kind = READ_TYPES[csl_type]
    else:
        b.warn(
            f"CSL type {csl_type!r} is not known; imported as generic."
            if csl_type
            else "The item has no type; imported as generic."
        )
        kind = "generic"
    for key, name in PEOPLE.items():
        people = item.get(key)
        if people is None:
            continue
        if not isinstance(people, list):
            b.warn(f"{key} is not a list of names and was not imported.")
            continue
        b.set(name, [p for p in (_person(x) for x in people) if p], key)
    if kind == "book" and b.has("editors") and not b.has("authors"):
        kind = "edited_book"
    b.set("type", kind, "type")

    title = _scalar(item.get("title"), "title", b, join=" ")
    if title:
        b.set("title", _MARKUP.sub("", title), "title")
    container = _scalar(item.get("container-title"), "container-title", b)
    if container:
        b.set("book_title" if kind in CONTAINER_BOOK else "journal", _MARKUP.sub("", container), "container-title")
    for key, name in SIMPLE.items():
        if key in item:
            text = _scalar(item[key], key, b)
            if text and key == "URL":
                b.link(text, key, is_file_field=False)  # a file:// URL names a file to attach
            elif text:
                b.set(name, _MARKUP.sub("", text) if name == "short_title" else text, key)
    page = _scalar(item.get("page"), "page", b)
    if page:
        b.set("pages", clean_pages(page), "page")
    isbns, _x = split_identifiers([_scalar(item.get("ISBN"), "ISBN", b, join="; ") or ""], "book")
    _y, issns = split_identifiers([_scalar(item.get("ISSN"), "ISSN", b, join="; ") or ""], "journal_article")
    b.set("isbn", "; ".join(isbns), "ISBN")
    b.set("issn", "; ".join(issns), "ISSN")
    keyword = item.get("keyword")
    if isinstance(keyword, list):
        b.extend("keywords", [k for k in keyword if isinstance(k, str)], "keyword")
    elif isinstance(keyword, str):
        b.extend("keywords", split_keywords(keyword), "keyword")
    if "issued" in item:
        year, date = _date(item["issued"], "issued", b)
        if year:
            b.set("year", year, "issued")
        if date and (len(date) > 4 or not year):
            b.set("date", date, "issued")
    if "accessed" in item:
        _year, accessed = _date(item["accessed"], "accessed", b)
        b.set("accessed", accessed, "accessed")
    for key, value in item.items():
        if key not in HANDLED:
            b.unmapped(key, value if isinstance(value, str | int | float) else json.dumps(value, ensure_ascii=False))
    return b.build()


# --- writing -----------------------------------------------------------------------------------


def _csl_date(iso: str) -> dict[str, Any]:
    return {"date-parts": [[int(part) for part in iso.split("-")]]}


def write(records: Iterable[dict[str, Any]]) -> str:
    """A CSL-JSON array for public reference dicts; the reference id becomes the item id."""
    return "".join(write_chunks(records))


def write_chunks(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """`write`'s text, one item at a time: what json.dumps(items, indent=2) writes for the whole
    array, each item indented one level (JSON strings hold no raw line break, so indenting
    every line of an item's own dump is exact)."""
    opened = False
    for number, record in enumerate(records, start=1):
        item = json.dumps(_item(record, number), ensure_ascii=False, indent=2).replace("\n", "\n  ")
        yield ("[\n  " if not opened else ",\n  ") + item
        opened = True
    yield "\n]\n" if opened else "[]\n"


def _item(record: dict[str, Any], number: int) -> dict[str, Any]:
    v = values(record)
    kind = ref_type(record)
    item: dict[str, Any] = {"id": str(record.get("id") or f"item{number}"), "type": WRITE_TYPES.get(kind, "document")}
    if "label" in v:
        item["citation-key"] = v["label"]
    if "title" in v:
        item["title"] = v["title"]
    for key, name in PEOPLE.items():
        if v.get(name):
            item[key] = [dict(person) for person in v[name]]
    container = v.get("book_title") if kind in CONTAINER_BOOK else v.get("journal")
    if container:
        item["container-title"] = container
    written = {"short_title": "title-short", "journal_abbrev": "container-title-short",
               "series": "collection-title", "volume": "volume", "issue": "issue",
               "number": "number", "edition": "edition", "publisher": "publisher",
               "place": "publisher-place", "doi": "DOI", "url": "URL", "abstract": "abstract",
               "notes": "note", "research_notes": "annote", "language": "language",
               "call_number": "call-number", "archive": "archive", "database": "source",
               "isbn": "ISBN", "issn": "ISSN", "pages": "page"}  # fmt: skip
    for name, key in written.items():
        if name in v:
            item[key] = v[name]
    if v.get("keywords"):
        item["keyword"] = join_keywords(v["keywords"])
    year = v.get("year")
    date = v.get("date")
    if date:
        item["issued"] = _csl_date(date)
    elif year and re.fullmatch(r"\d{1,4}", year):
        item["issued"] = {"date-parts": [[int(year)]]}
    elif year:
        item["issued"] = {"literal": year}
    if "accessed" in v:
        item["accessed"] = _csl_date(v["accessed"])
    return {key: value for key, value in item.items() if value not in ("", None)}
