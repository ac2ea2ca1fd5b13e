"""The field catalogue: every field a reference may hold, its kind, and how values are checked.

The catalogue covers what EndNote and Zotero users keep. A field not in it is refused with the
list of known fields rather than stored silently, so that a typo never becomes data that no
exporter knows. EndNote's Custom 1..8 give users room for their own data.

Values, once validated, are plain JSON: text fields are str, people fields are lists of person
objects (see people.py), keyword lists are lists of str.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from p2psync.errors import InvalidValue, UnknownField
from p2psync.model.people import display_person, format_person, parse_person, validate_person

REFERENCE_TYPES: dict[str, str] = {
    "journal_article": "Journal Article",
    "book": "Book",
    "edited_book": "Edited Book",
    "book_section": "Book Section",
    "conference_paper": "Conference Paper",
    "conference_proceedings": "Conference Proceedings",
    "thesis": "Thesis",
    "report": "Report",
    "web_page": "Web Page",
    "dataset": "Dataset",
    "patent": "Patent",
    "magazine_article": "Magazine Article",
    "newspaper_article": "Newspaper Article",
    "encyclopedia_entry": "Encyclopedia Entry",
    "manuscript": "Manuscript",
    "preprint": "Preprint",
    "software": "Computer Program",
    "standard": "Standard",
    "presentation": "Presentation",
    "interview": "Interview",
    "letter": "Personal Communication",
    "audiovisual": "Audiovisual Material",
    "map": "Map",
    "legal_case": "Case",
    "statute": "Statute",
    "generic": "Generic",
}
DEFAULT_TYPE = "journal_article"

# Kinds of value. "text" is one line; "long" may hold paragraphs.
TEXT, LONG, PEOPLE, LIST, YEAR, DATE, TYPE = "text", "long", "people", "list", "year", "date", "type"

MAX_TEXT = 4_000
MAX_LONG = 1_000_000
MAX_LIST_ITEMS = 1_000
MAX_PEOPLE = 5_000


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    label: str
    help: str = ""


_FIELDS = [
    Field("type", TYPE, "Reference Type", "one of: " + ", ".join(REFERENCE_TYPES)),
    Field("title", TEXT, "Title"),
    Field("short_title", TEXT, "Short Title"),
    Field("authors", PEOPLE, "Authors", "ordered; 'Last, First' or an institution's name"),
    Field("editors", PEOPLE, "Editors"),
    Field("translators", PEOPLE, "Translators"),
    Field("year", YEAR, "Year", "e.g. 2021, 2021a, in press"),
    Field("date", DATE, "Date", "YYYY, YYYY-MM or YYYY-MM-DD"),
    Field("journal", TEXT, "Journal", "the periodical (EndNote's Secondary Title for articles)"),
    Field("journal_abbrev", TEXT, "Journal Abbreviation"),
    Field("book_title", TEXT, "Book Title", "the book or proceedings a section or paper is in"),
    Field("series", TEXT, "Series Title"),
    Field("volume", TEXT, "Volume"),
    Field("issue", TEXT, "Issue"),
    Field("pages", TEXT, "Pages", "e.g. 101-115 or e1002"),
    Field("number", TEXT, "Number", "report, patent or standard number"),
    Field("edition", TEXT, "Edition"),
    Field("publisher", TEXT, "Publisher", "also the university for a thesis"),
    Field("place", TEXT, "Place Published"),
    Field("doi", TEXT, "DOI", "10.xxxx/..., without https://doi.org/"),
    Field("isbn", TEXT, "ISBN"),
    Field("issn", TEXT, "ISSN"),
    Field("url", TEXT, "URL"),
    Field("abstract", LONG, "Abstract"),
    Field("keywords", LIST, "Keywords", "separate with ';' on the command line"),
    Field("notes", LONG, "Notes"),
    Field("research_notes", LONG, "Research Notes"),
    Field("language", TEXT, "Language"),
    Field("accessed", DATE, "Access Date", "YYYY-MM-DD"),
    Field("label", TEXT, "Label"),
    Field("call_number", TEXT, "Call Number"),
    Field("database", TEXT, "Name of Database"),
    Field("archive", TEXT, "Archive"),
    *(Field(f"custom{i}", TEXT, f"Custom {i}") for i in range(1, 9)),
]
FIELDS: dict[str, Field] = {f.name: f for f in _FIELDS}

# Fields the library keeps about a reference but that users do not set with --field.
SYSTEM_FIELDS = frozenset({"added", "trashed", "deleted"})

# ASCII only: \d would take any Unicode digit. Used with fullmatch (no trailing newline).
_YEAR = re.compile(r"([0-9]{1,4}[a-z]?|in press|forthcoming|n\.d\.|submitted)", re.IGNORECASE | re.ASCII)
_DATE = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")
_DOI_PREFIXES = ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "http://dx.doi.org/", "doi:")


def known_fields_sentence() -> str:
    return "Known fields: " + ", ".join(FIELDS) + "."


def field(name: str) -> Field:
    """The catalogue entry for name, or UnknownField naming the known ones."""
    try:
        return FIELDS[name]
    except KeyError:
        raise UnknownField(f"Unknown field {name!r}. {known_fields_sentence()}") from None


def validate(name: str, value: Any) -> Any:
    """Check one field value (from the CLI, a file or a peer) and return it normalised.

    None means "clear this field". Raises UnknownField or InvalidValue; never stores garbage.
    """
    spec = field(name)
    if value is None:
        if name == "type":
            raise InvalidValue("A reference always has a type; choose one of: " + ", ".join(REFERENCE_TYPES) + ".")
        return None
    if spec.kind == PEOPLE:
        if not isinstance(value, list):
            raise InvalidValue(f"{spec.label} must be a list of names.")
        if len(value) > MAX_PEOPLE:
            raise InvalidValue(f"{spec.label} has more than {MAX_PEOPLE} names.")
        people = [validate_person(p) for p in value]
        return people or None
    if spec.kind == LIST:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidValue(f"{spec.label} must be a list of words or phrases.")
        if len(value) > MAX_LIST_ITEMS:
            raise InvalidValue(f"{spec.label} has more than {MAX_LIST_ITEMS} entries.")
        items: list[str] = []
        for raw in value:
            item = " ".join(raw.split())
            _check_length(spec, item, MAX_TEXT)
            if item and item not in items:
                items.append(item)
        return items or None
    if not isinstance(value, str):
        if spec.kind in (YEAR, TEXT) and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        else:
            raise InvalidValue(f"{spec.label} must be text, not {type(value).__name__}.")
    if spec.kind == LONG:
        text = value.replace("\r\n", "\n").strip()
        _check_length(spec, text, MAX_LONG)
        return text or None
    text = " ".join(value.split())
    if not text:
        return None
    _check_length(spec, text, MAX_TEXT)
    if spec.kind == TYPE:
        key = text.lower().replace(" ", "_").replace("-", "_")
        if key not in REFERENCE_TYPES:
            raise InvalidValue(f"Unknown reference type {text!r}; choose one of: " + ", ".join(REFERENCE_TYPES) + ".")
        return key
    if spec.kind == YEAR and not _YEAR.fullmatch(text):
        raise InvalidValue(f"Year {text!r} is not a year; write e.g. 2021, 2021a or 'in press'.")
    if spec.kind == DATE:
        match = _DATE.fullmatch(text)
        if not match or not _plausible_date(match):
            raise InvalidValue(f"{spec.label} {text!r} is not a date; write YYYY, YYYY-MM or YYYY-MM-DD.")
    if name == "doi":
        lowered = text.lower()
        for prefix in _DOI_PREFIXES:
            if lowered.startswith(prefix):
                text = text[len(prefix) :]
                break
        if not text.startswith("10."):
            raise InvalidValue(f"DOI {text!r} does not start with '10.'; give the DOI itself, e.g. 10.1000/xyz123.")
    return text


def is_normal(name: str, value: Any) -> bool:
    """Whether value is exactly what validate(name, value) returns (and validate would not raise):
    the check every field of every incoming operation passes. Equivalent to that comparison
    (tests/test_fields_normal.py holds them equal) but several times cheaper, which matters: it
    is most of the cost of checking a first sync. Raises UnknownField like validate."""
    checker = _NORMAL_CHECKS.get(name)
    if checker is None:
        field(name)  # raises UnknownField
    if value is None:  # clears the field; a reference always keeps its type
        return name != "type"
    return checker(value) if checker is not None else False


def _normal_text(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_TEXT and value == " ".join(value.split()) and _utf8(value)


def _normal_long(value: Any) -> bool:
    return (
        type(value) is str
        and 0 < len(value) <= MAX_LONG
        and value == value.strip()
        and "\r\n" not in value
        and _utf8(value)
    )


def _normal_people(value: Any) -> bool:
    return type(value) is list and 0 < len(value) <= MAX_PEOPLE and all(_normal_person(p) for p in value)


def _normal_list(value: Any) -> bool:
    return (
        type(value) is list
        and 0 < len(value) <= MAX_LIST_ITEMS
        and all(type(v) is str and 0 < len(v) <= MAX_TEXT and v == " ".join(v.split()) and _utf8(v) for v in value)
        and len(set(value)) == len(value)
    )


def _normal_type(value: Any) -> bool:
    return type(value) is str and value in REFERENCE_TYPES


def _normal_year(value: Any) -> bool:
    return _normal_text(value) and _YEAR.fullmatch(value) is not None


def _normal_doi(value: Any) -> bool:
    return _normal_text(value) and value.startswith("10.")  # so it starts with none of the prefixes


def _normal_by_validate(name: str) -> Any:
    def check(value: Any) -> bool:
        try:
            return bool(validate(name, value) == value)
        except InvalidValue:
            return False

    return check


def _normal_person(person: Any) -> bool:
    if type(person) is not dict:
        return False
    if len(person) == 1 and "literal" in person:
        literal = person["literal"]
        return type(literal) is str and literal != "" and literal == " ".join(literal.split())
    family = person.get("family")
    if type(family) is not str or family == "" or family != " ".join(family.split()):
        return False
    if len(person) == 1:
        return True
    given = person.get("given")
    return len(person) == 2 and type(given) is str and given != "" and given == " ".join(given.split())


def _utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


_NORMAL_BY_KIND = {TEXT: _normal_text, LONG: _normal_long, PEOPLE: _normal_people, LIST: _normal_list}
_NORMAL_CHECKS = {
    f.name: _NORMAL_BY_KIND.get(f.kind)
    or (_normal_type if f.kind == TYPE else _normal_year if f.kind == YEAR else None)
    or _normal_by_validate(f.name)
    for f in _FIELDS
}
_NORMAL_CHECKS["doi"] = _normal_doi
# field name -> whether a (non-null) value is in normal form: is_normal without its cases, for
# the loop that checks every field of every incoming operation.
NORMAL_CHECKS: Mapping[str, Callable[[Any], bool]] = _NORMAL_CHECKS


def _check_length(spec: Field, text: str, limit: int) -> None:
    if len(text) > limit:
        raise InvalidValue(f"{spec.label} is {len(text)} characters long; the limit is {limit}.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not text any store or peer can keep
        raise InvalidValue(f"{spec.label} holds characters that are not valid Unicode text.") from None


def _plausible_date(match: re.Match[str]) -> bool:
    month = match.group(2)
    day = match.group(3)
    if month is not None and not 1 <= int(month) <= 12:
        return False
    return day is None or 1 <= int(day) <= 31


def validate_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Validate a whole mapping of field -> value; the first bad field raises."""
    return {name: validate(name, value) for name, value in values.items()}


def parse_text(name: str, text: str, separator: str = ";") -> Any:
    """Parse the command-line form of a field (what follows key= in --field key=value).

    People are separated by ';' ("Curie, Marie; Joliot, Frédéric"), keywords too; the web form
    passes separator "\n" (one per line). An empty text clears the field.
    """
    spec = field(name)
    if text.strip() == "":
        return validate(name, None) if name != "type" else validate(name, text)
    if spec.kind == PEOPLE:
        return validate(name, [parse_person(part) for part in text.split(separator) if part.strip()])
    if spec.kind == LIST:
        return validate(name, [part for part in text.split(separator)])
    return validate(name, text)


def format_value(name: str, value: Any, separator: str = "; ") -> str:
    """The text form of a value, the inverse of parse_text (one line with the default separator)."""
    if value is None:
        return ""
    kind = FIELDS[name].kind if name in FIELDS else TEXT
    if kind == PEOPLE:
        return separator.join(format_person(p) for p in value)
    if kind == LIST:
        return separator.join(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def display_value(name: str, value: Any) -> str:
    """How `ref show` and the reference's web page show a value: people as "Family, Given",
    the type by its label."""
    kind = FIELDS[name].kind
    if kind == PEOPLE:
        return "; ".join(display_person(p) for p in value)
    if kind == TYPE:
        return REFERENCE_TYPES.get(value, value)
    return format_value(name, value)


def check_new_reference(values: Mapping[str, Any], hint: str = "") -> None:
    """A new reference needs a title (the one field every list and format shows); `hint` says
    how to give one ("(--title)" on the command line)."""
    if not values.get("title"):
        raise InvalidValue(f"A new reference needs at least a title{hint}.")
