"""EndNote XML reading and writing, with xml.etree.ElementTree.

The layout is EndNote's: <xml><records><record>... with <ref-type name="Journal Article">17,
contributors/authors/author, titles/title, and so on. EndNote wraps every value in one or more
<style> runs (bold and plain runs may split a word), so a value is the text of all its runs.
EndNote separates several values inside one element (ISBNs, keywords) with carriage returns.

defusedxml is not a dependency, so documents with a DOCTYPE or ENTITY declaration are refused
outright: that is where entity-expansion attacks live, and EndNote never writes either.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from p2psync.formats.common import (
    SECONDARY_JOURNAL,
    FormatError,
    InvalidRecord,
    LineCounter,
    ParsedRecord,
    ReadResult,
    RecordBuilder,
    attachment_paths,
    clean_pages,
    finish,
    identifiers_of,
    parse_date,
    person_from_text,
    person_to_text,
    ref_type,
    secondary_field,
    split_identifiers,
    strip_bom,
    values,
)
from p2psync.model import fields as catalogue
from p2psync.model.people import Person

NAME = "endnote-xml"
LABEL = "EndNote XML"
EXTENSIONS = (".xml",)

# catalogue type -> (EndNote name, EndNote number). EndNote has no Preprint, Presentation or
# Interview; those are written with their p2psync label and Generic's number (13), and the
# reader, which goes by the name first, brings them back.
WRITE_TYPES: dict[str, tuple[str, int]] = {
    "journal_article": ("Journal Article", 17), "book": ("Book", 6),
    "edited_book": ("Edited Book", 28), "book_section": ("Book Section", 5),
    "conference_paper": ("Conference Paper", 47), "conference_proceedings": ("Conference Proceedings", 10),
    "thesis": ("Thesis", 32), "report": ("Report", 27), "web_page": ("Web Page", 12),
    "dataset": ("Dataset", 59), "patent": ("Patent", 25), "magazine_article": ("Magazine Article", 19),
    "newspaper_article": ("Newspaper Article", 23), "encyclopedia_entry": ("Encyclopedia", 53),
    "manuscript": ("Manuscript", 36), "preprint": ("Preprint", 13), "software": ("Computer Program", 9),
    "standard": ("Standard", 58), "presentation": ("Presentation", 13), "interview": ("Interview", 13),
    "letter": ("Personal Communication", 26), "audiovisual": ("Audiovisual Material", 3),
    "map": ("Map", 20), "legal_case": ("Case", 7), "statute": ("Statute", 31), "generic": ("Generic", 13),
}  # fmt: skip

READ_NAMES: dict[str, str] = {
    **{label.lower(): name for name, label in catalogue.REFERENCE_TYPES.items()},
    **{en_name.lower(): name for name, (en_name, _n) in WRITE_TYPES.items()},
    "electronic article": "journal_article", "electronic book": "book",
    "electronic book section": "book_section", "online database": "dataset",
    "aggregated database": "dataset", "unpublished work": "manuscript",
    "film or broadcast": "audiovisual", "online multimedia": "audiovisual", "music": "audiovisual",
    "dictionary": "encyclopedia_entry", "government document": "report", "bill": "statute",
    "legal rule or regulation": "statute", "blog": "web_page", "conference": "conference_paper",
    "classical work": "book", "ancient text": "book", "pamphlet": "book",
}  # fmt: skip
READ_NUMBERS: dict[int, str] = {
    17: "journal_article", 6: "book", 28: "edited_book", 5: "book_section", 47: "conference_paper",
    10: "conference_proceedings", 32: "thesis", 27: "report", 12: "web_page", 59: "dataset",
    25: "patent", 19: "magazine_article", 23: "newspaper_article", 53: "encyclopedia_entry",
    36: "manuscript", 9: "software", 58: "standard", 26: "letter", 3: "audiovisual", 20: "map",
    7: "legal_case", 31: "statute", 13: "generic", 43: "journal_article", 44: "book",
    60: "book_section", 45: "dataset", 55: "dataset", 34: "manuscript", 21: "audiovisual",
    48: "audiovisual", 52: "encyclopedia_entry", 46: "report", 4: "statute", 50: "statute",
    56: "web_page",
}  # fmt: skip

SIMPLE: dict[str, str] = {
    "edition": "edition", "pub-location": "place", "publisher": "publisher",
    "call-num": "call_number", "label": "label", "electronic-resource-num": "doi",
    "abstract": "abstract", "notes": "notes", "research-notes": "research_notes",
    "remote-database-name": "database", "remote-database-provider": "database",
    "language": "language", "volume": "volume", "issue": "issue",
    **{f"custom{i}": f"custom{i}" for i in range(1, 9)},
}  # fmt: skip
LONG = frozenset({"abstract", "notes", "research-notes"})
METADATA = frozenset({"database", "source-app", "rec-number", "foreign-keys", "modified-date"})
HANDLED = frozenset({*SIMPLE, *METADATA, "ref-type", "contributors", "titles", "periodical",
                     "secondary-title", "tertiary-title", "alt-periodical", "pages", "number",
                     "keywords", "dates", "isbn", "urls", "access-date"})  # fmt: skip

FILE_URLS = frozenset({"pdf-urls", "text-urls", "image-urls"})  # the rest (related-urls, web-urls) are links
STYLE = {"face": "normal", "font": "default", "size": "100%"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# --- reading -----------------------------------------------------------------------------------


def read(text: str, skip_invalid: bool = False) -> ReadResult:
    """Read EndNote XML text. Raises FormatError for bad records unless skip_invalid."""
    text = strip_bom(text)
    if re.search(r"<!DOCTYPE|<!ENTITY", text, re.IGNORECASE):
        raise FormatError(
            "The XML file declares a DOCTYPE or ENTITY, which EndNote never writes and which can "
            "be used to attack XML readers; export the library from EndNote again as XML."
        )
    # The text is already decoded; tell the parser so whatever the declaration says.
    body = re.sub(r"^\s*<\?xml[^>]*\?>", "", text, count=1)
    try:
        root = ET.fromstring(body.encode("utf-8"))
    except ET.ParseError as exc:
        err_line, column = exc.position
        offset_line = text[: len(text) - len(body)].count("\n")
        err_line += offset_line
        record_number = _records_before(text, err_line)
        where = f" inside record {record_number}" if record_number else ""
        raise FormatError(
            f"The EndNote XML file is not well-formed at line {err_line}, column {column + 1}{where}: "
            f"{_reason(exc)}. The file may be cut short or damaged; export it again from EndNote."
        ) from None
    records = root.findall("./records/record") if root.tag != "records" else root.findall("record")
    if not records:
        if root.tag in ("xml", "records"):
            if root.find(".//record") is None:
                return finish([], [], LABEL, skip_invalid)
            records = list(root.iter("record"))
        else:
            raise FormatError(
                f"The XML file is not EndNote XML: its root element is <{root.tag}>, not <xml> "
                "with <records>. In EndNote, use File > Export with 'XML' as the type."
            )
    lines = LineCounter(text)
    starts = [lines.line_at(m.start()) for m in re.finditer(r"<record[\s>/]", text)]
    parsed: list[ParsedRecord] = []
    invalid: list[InvalidRecord] = []
    for position, element in enumerate(records, start=1):
        line = starts[position - 1] if position - 1 < len(starts) else None
        if not any(_text(child).strip() for child in element if child.tag not in METADATA):
            invalid.append(InvalidRecord(position, line, "it is empty: no <ref-type> and no fields"))
            continue
        parsed.append(_convert(element, position, line))
    return finish(parsed, invalid, LABEL, skip_invalid)


def _records_before(text: str, line: int) -> int:
    offset = 0
    for _ in range(line - 1):
        found = text.find("\n", offset)
        if found < 0:
            break
        offset = found + 1
    return len(re.findall(r"<record[\s>]", text[: offset + 1])) if offset else 0


def _reason(exc: ET.ParseError) -> str:
    message = str(exc)
    return re.sub(r":\s*line \d+, column \d+$", "", message)


def _text(element: ET.Element | None) -> str:
    """All text of a value: its <style> runs joined, or its plain text (JabRef writes no runs)."""
    if element is None:
        return ""
    styles = list(element.iter("style"))
    if styles:
        return "".join("".join(style.itertext()) for style in styles)
    return "".join(element.itertext())


def _lines(element: ET.Element | None) -> list[str]:
    """A value that may hold several items separated by line breaks (EndNote uses CR)."""
    return [part.strip() for part in re.split(r"[\r\n]+", _text(element)) if part.strip()]


def _long(element: ET.Element | None) -> str:
    return re.sub(r"\r\n?", "\n", _text(element)).strip()


def _type_of(element: ET.Element, b: RecordBuilder) -> str:
    ref = element.find("ref-type")
    if ref is None:
        b.warn("The record has no <ref-type>; imported as a journal article.")
        return catalogue.DEFAULT_TYPE
    name = (ref.get("name") or "").strip()
    found = READ_NAMES.get(name.lower())
    if found is None:
        number = (ref.text or "").strip()
        found = READ_NUMBERS.get(int(number)) if number.isdigit() else None
        if found is None or name:
            b.warn(f"Reference type {name or number!r} has no matching p2psync type; imported as {found or 'generic'}.")
        found = found or "generic"
    return found


def _convert(element: ET.Element, position: int, line: int | None) -> ParsedRecord:
    b = RecordBuilder(position, line)
    kind = _type_of(element, b)
    b.set("type", kind, "ref-type")

    contributors = element.find("contributors")
    roles = {"authors": "authors", "secondary-authors": "editors", "subsidiary-authors": "translators"}
    if contributors is not None:
        for group in contributors:
            people = [p for p in (person_from_text(_text(a)) for a in group.findall("author")) if p]
            if group.tag in roles:
                b.extend(roles[group.tag], people, group.tag)
            elif people:
                b.unmapped(group.tag, "; ".join(person_to_text(p) for p in people))
    if kind == "edited_book" and b.has("authors") and not b.has("editors"):
        b.set("editors", b.fields.pop("authors"), "authors")  # EndNote: an edited book's Author is its editor

    secondary = secondary_field(kind)
    for container in (element.find("titles"), element):
        if container is None:
            continue
        for child in container:
            tag = child.tag
            value = _text(child)
            if container is element and tag not in ("secondary-title", "tertiary-title"):
                continue
            if tag == "title":
                b.set("title", value, "title")
            elif tag == "secondary-title":
                b.set(secondary, value, "secondary-title")
            elif tag == "tertiary-title":
                b.set("series", value, "tertiary-title")
            elif tag == "short-title":
                b.set("short_title", value, "short-title")
            elif tag == "alt-title" and kind in SECONDARY_JOURNAL:
                b.set("journal_abbrev", value, "alt-title")
            else:
                b.unmapped(tag, value)
    periodical = element.find("periodical")
    if periodical is not None:
        b.set("journal", _text(periodical.find("full-title")), "periodical/full-title")
        for tag in ("abbr-1", "abbr-2", "abbr-3"):
            b.set("journal_abbrev", _text(periodical.find(tag)), f"periodical/{tag}")
    alt = element.find("alt-periodical")
    if alt is not None:
        for child in alt:
            b.unmapped(f"alt-periodical/{child.tag}", _text(child))

    for tag, name in SIMPLE.items():
        for child in element.findall(tag):
            value = _long(child) if tag in LONG else _text(child)
            if tag == "electronic-resource-num":
                dois = _lines(child)
                value = dois[0] if dois else ""
                for extra in dois[1:]:
                    b.unmapped("electronic-resource-num (second value)", extra)
            b.set(name, value, tag)
    number = _text(element.find("number"))
    if number:
        b.set("issue" if kind in SECONDARY_JOURNAL else "number", number, "number")
    pages = _text(element.find("pages"))
    if pages:
        b.set("pages", clean_pages(pages), "pages")

    keywords: list[str] = []
    for keyword in element.findall("keywords/keyword"):
        keywords += _lines(keyword)
    b.extend("keywords", keywords, "keywords")

    isbns, issns = split_identifiers(_lines(element.find("isbn")), kind)
    b.set("isbn", "; ".join(isbns), "isbn")
    b.set("issn", "; ".join(issns), "isbn")

    _dates(element, b)
    urls = element.find("urls")
    if urls is not None:
        for group in urls:
            for url in group.findall("url"):
                for target in _lines(url):
                    b.link(target, f"urls/{group.tag}", is_file_field=group.tag in FILE_URLS)

    for child in element:
        if child.tag not in HANDLED:
            b.unmapped(child.tag, _long(child))
    return b.build()


def _dates(element: ET.Element, b: RecordBuilder) -> None:
    dates = element.find("dates")
    year: str | None = None
    if dates is not None:
        year_text = _text(dates.find("year")).strip()
        if year_text:
            if b.set("year", year_text, "year"):
                year = b.fields["year"]
            else:
                found, _date = parse_date(year_text)
                if found and b.set("year", found, "year"):
                    year = found
        four = year if year and re.fullmatch(r"\d{4}", year) else None
        for date in dates.findall("pub-dates/date"):
            found, iso = parse_date(_text(date), four)
            if iso and (len(iso) > 4 or not b.has("date")):
                b.set("date", iso, "pub-dates")
                if found and not b.has("year"):
                    b.set("year", found, "pub-dates")
            elif _text(date).strip():
                b.warn(f"pub-dates {_text(date).strip()!r} is not a date and was not imported.")
        month = _text(dates.find("month")).strip()
        if month and not b.has("date"):
            _found, iso = parse_date(month, four)
            if iso:
                b.set("date", iso, "month")
    access = _text(element.find("access-date")).strip()
    if access:
        _found, iso = parse_date(access)
        if iso:
            b.set("accessed", iso, "access-date")
        else:
            b.warn(f"access-date {access!r} is not a date and was not imported.")


# --- writing -----------------------------------------------------------------------------------


def _styled(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    style = ET.SubElement(element, "style", STYLE)
    # EndNote separates lines with CR; it is written as &#xD; below.
    style.text = _CONTROL.sub("", text).replace("\r\n", "\n").replace("\n", "\r")
    return element


def write(records: Iterable[dict[str, Any]]) -> str:
    """EndNote XML for public reference dicts, as EndNote writes it (values in <style> runs)."""
    return "".join(write_chunks(records))


def write_chunks(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """`write`'s text, WRITE_BATCH records at a time: <record> elements serialise the same in a
    small <records> as in the whole tree (no namespaces, no shared state), between the document's
    opening and closing."""
    head = '<?xml version="1.0" encoding="UTF-8"?>\n<xml>'
    opened = False
    container = ET.Element("records")
    for number, record in enumerate(records, start=1):
        _record(container, record, number)
        if len(container) >= WRITE_BATCH:
            yield _records_text(container) if opened else head + "<records>" + _records_text(container)
            container, opened = ET.Element("records"), True
    if len(container):
        yield _records_text(container) if opened else head + "<records>" + _records_text(container)
        opened = True
    yield "</records></xml>\n" if opened else head + "<records /></xml>\n"


WRITE_BATCH = 200  # records serialised at a time


def _records_text(container: ET.Element) -> str:
    """The <record> elements of a <records> element, serialised as ET.tostring serialises them
    (without the <records> around them)."""
    out: list[str] = []
    for record in container:
        _serialise(record, out.append)
    return "".join(out).replace("\r", "&#xD;")


def _serialise(element: ET.Element, write: Callable[[str], None]) -> None:
    """ElementTree's own serialisation (_serialize_xml, short empty elements) for the trees this
    writer builds: plain tags, string attributes and text, no tails, no namespaces. Its escaping
    functions are used as they are; what is left out is its general machinery (namespace and
    name look-ups for every element), a third of an export's time. tests/test_export_pinned.py
    holds the output to the bytes ET.tostring wrote."""
    tag = element.tag
    write("<" + tag)
    for key, value in element.items():
        write(f' {key}="{_escape_attrib(value)}"')
    text = element.text
    if text or len(element):
        write(">")
        if text:
            write(_escape_cdata(text))
        for child in element:
            _serialise(child, write)
        write("</" + tag + ">")
    else:
        write(" />")


_escape_cdata: Callable[[str], str] = ET._escape_cdata  # type: ignore[attr-defined]
_escape_attrib: Callable[[str], str] = ET._escape_attrib  # type: ignore[attr-defined]


def _record(container: ET.Element, record: dict[str, Any], number: int) -> None:
    v = values(record)
    kind = ref_type(record)
    element = ET.SubElement(container, "record")
    ET.SubElement(element, "source-app", {"name": "p2psync"}).text = "p2psync"
    ET.SubElement(element, "rec-number").text = str(number)
    en_name, en_number = WRITE_TYPES.get(kind, ("Generic", 13))
    ET.SubElement(element, "ref-type", {"name": en_name}).text = str(en_number)

    authors: list[Person] = list(v.get("authors", []))
    editors: list[Person] = list(v.get("editors", []))
    if kind == "edited_book" and not authors:
        authors, editors = editors, []
    groups = [("authors", authors), ("secondary-authors", editors),
              ("subsidiary-authors", list(v.get("translators", [])))]  # fmt: skip
    if any(people for _tag, people in groups):
        contributors = ET.SubElement(element, "contributors")
        for tag, people in groups:
            if people:
                group = ET.SubElement(contributors, tag)
                for person in people:
                    _styled(group, "author", person_to_text(person))

    secondary = secondary_field(kind)
    titles = ET.Element("titles")
    if "title" in v:
        _styled(titles, "title", v["title"])
    if secondary in v:
        _styled(titles, "secondary-title", v[secondary])
    if "series" in v and secondary != "series":
        _styled(titles, "tertiary-title", v["series"])
    if "short_title" in v:
        _styled(titles, "short-title", v["short_title"])
    if len(titles):
        element.append(titles)
    if ("journal" in v and secondary != "journal") or "journal_abbrev" in v:
        periodical = ET.SubElement(element, "periodical")
        if "journal" in v:
            _styled(periodical, "full-title", v["journal"])
        if "journal_abbrev" in v:
            _styled(periodical, "abbr-1", v["journal_abbrev"])

    number_value = v.get("issue") if kind in SECONDARY_JOURNAL else v.get("number")
    for tag, value in (("pages", v.get("pages")), ("volume", v.get("volume")), ("number", number_value),
                       ("issue", None if kind in SECONDARY_JOURNAL else v.get("issue")),
                       ("edition", v.get("edition"))):  # fmt: skip
        if value:
            _styled(element, tag, str(value))
    if v.get("keywords"):
        keywords = ET.SubElement(element, "keywords")
        for keyword in v["keywords"]:
            _styled(keywords, "keyword", keyword)
    if "year" in v or "date" in v:
        dates = ET.SubElement(element, "dates")
        _styled(dates, "year", v.get("year") or v["date"][:4])
        if "date" in v:
            pub = ET.SubElement(dates, "pub-dates")
            _styled(pub, "date", v["date"])
    ids = identifiers_of(v)
    tail = [("pub-location", v.get("place")), ("publisher", v.get("publisher")),
            ("isbn", "\r".join(ids)), ("call-num", v.get("call_number")), ("label", v.get("label")),
            ("electronic-resource-num", v.get("doi")), ("abstract", v.get("abstract")),
            ("notes", v.get("notes")), ("research-notes", v.get("research_notes")),
            ("remote-database-name", v.get("database")), ("language", v.get("language"))]  # fmt: skip
    for tag, value in tail:
        if value:
            _styled(element, tag, str(value))
    files = attachment_paths(record)
    if "url" in v or files:
        urls = ET.SubElement(element, "urls")
        if "url" in v:
            _styled(ET.SubElement(urls, "related-urls"), "url", v["url"])
        if files:
            pdfs = ET.SubElement(urls, "pdf-urls")
            for path in files:
                _styled(pdfs, "url", path)
    if "accessed" in v:
        _styled(element, "access-date", v["accessed"])
    for i in range(1, 9):
        if f"custom{i}" in v:
            _styled(element, f"custom{i}", v[f"custom{i}"])
