"""The text of BibTeX values, both ways: what bibtex.py reads and writes between the braces.

Reading: a raw value is evaluated (braces, quotes, numbers, @string macros and '#'
concatenation), then LaTeX becomes Unicode with bibtexparser's LatexDecodingMiddleware ({\\"u}
-> ü), except in verbatim fields (URLs, DOIs). Names are split with bibtexparser's name functions,
but only after corporate names written in braces ({World Health Organization}) are recognised,
which LaTeX decoding would otherwise strip of their braces. Writing: UTF-8 is kept and only
LaTeX's special characters are escaped, so what is written reads back the same.
"""

from __future__ import annotations

import functools
import re

from bibtexparser.library import Library
from bibtexparser.middlewares import LatexDecodingMiddleware
from bibtexparser.middlewares.names import parse_single_name_into_parts, split_multiple_persons_names
from bibtexparser.model import Entry, Field, MiddlewareErrorBlock

from p2psync.formats.common import RecordBuilder
from p2psync.model.people import Person

_NO_LIBRARY = Library()  # LatexDecodingMiddleware does not look at the library
_NEEDS_DECODING = re.compile(r"[\\{}$~%]|--|``|''|[?!]`")


@functools.cache
def _decoder() -> LatexDecodingMiddleware:
    """Built on first use (its tables take a while): a BibTeX export never needs it."""
    return LatexDecodingMiddleware()


# --- reading -----------------------------------------------------------------------------------


def _top_level_parts(raw: str) -> list[str]:
    """Split a field value on '#' outside braces and quotes (BibTeX concatenation)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            i += 2  # \{ \} \# \" are text, not structure
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == '"' and depth == 0:
            quoted = not quoted
        elif ch == "#" and depth == 0 and not quoted:
            parts.append(raw[start:i])
            start = i + 1
        i += 1
    parts.append(raw[start:])
    return [p.strip() for p in parts]


def evaluate(raw: str, strings: dict[str, str]) -> tuple[str, list[str]]:
    """The LaTeX text of a raw value, and the names of undefined @string macros it used."""
    out: list[str] = []
    undefined: list[str] = []
    for part in _top_level_parts(raw.strip()):
        if len(part) >= 2 and (part[0], part[-1]) in (("{", "}"), ('"', '"')):
            out.append(part[1:-1])
        elif part.isdigit():
            out.append(part)
        elif part.lower() in strings:
            out.append(strings[part.lower()])
        elif part:
            undefined.append(part)
            out.append(part)
    return "".join(out), undefined


@functools.lru_cache(maxsize=8192)  # journal names, publishers and names repeat across entries
def decode(text: str) -> str:
    """LaTeX to Unicode ({\\"u} -> ü, \\& -> &, {DNA} -> DNA); plain text is returned as is."""
    if not _NEEDS_DECODING.search(text):
        return text
    # In a .bib file '%' is a literal percent sign; LaTeX decoding would read it as a comment.
    prepared = re.sub(r"(?<!\\)%", r"\\%", text)
    decoded = _decoder().transform_entry(Entry("x", "x", [Field("v", prepared)]), _NO_LIBRARY)
    if isinstance(decoded, MiddlewareErrorBlock) or not isinstance(decoded, Entry):
        return text
    value = decoded["v"]
    return value if isinstance(value, str) else text


def verbatim(text: str) -> str:
    """URLs and DOIs are not LaTeX: only undo \\url{...} and backslash escapes like \\_."""
    text = text.strip()
    match = re.fullmatch(r"\\url\s*\{(.*)\}", text, re.DOTALL)
    if match:
        text = match.group(1)
    text = re.sub(r"\\([_%&#$~])", r"\1", text)
    return text.replace("{", "").replace("}", "").strip()


def _fully_braced(name: str) -> bool:
    """True for '{World Health Organization}' - one brace group around the whole name."""
    if not (name.startswith("{") and name.endswith("}")):
        return False
    depth = 0
    for i, ch in enumerate(name):
        if ch == "{" and (i == 0 or name[i - 1] != "\\"):
            depth += 1
        elif ch == "}" and (i == 0 or name[i - 1] != "\\"):
            depth -= 1
            if depth == 0 and i != len(name) - 1:
                return False
    return True


def parse_names(raw: str, source: str, b: RecordBuilder) -> list[Person]:
    """People from a name list ('Knuth, Donald E. and {World Health Organization}')."""
    people: list[Person] = []
    for name in split_multiple_persons_names(raw):
        name = " ".join(name.split())
        if not name:
            continue
        if name.lower() == "others":
            b.warn(f"{source} ends with 'and others'; only the names given were imported.")
            continue
        if _fully_braced(name):
            literal = " ".join(decode(name[1:-1]).split())
            if literal:
                people.append({"literal": literal})
            continue
        parts = parse_single_name_into_parts(name, strict=False)
        family = " ".join(decode(" ".join(parts.von + parts.last + parts.jr)).split())
        given = " ".join(decode(" ".join(parts.first)).split())
        if family:
            people.append({"family": family, "given": given} if given else {"family": family})
        elif given:
            people.append({"literal": given})
    return people


# --- writing -----------------------------------------------------------------------------------


_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "%": r"\%", "&": r"\&",
            "#": r"\#", "$": r"\$", "_": r"\_", "~": r"\textasciitilde{}"}  # fmt: skip
_SPECIAL_TABLE = str.maketrans(_SPECIAL)  # (one character each: a translation, no regex)
_DOUBLED = re.compile(r"-(?=-)|`(?=`)|'(?=')")
_MARK_QUOTE = re.compile(r"([?!])`")


def escape(text: str) -> str:
    """Text for a braced BibTeX value: UTF-8 kept, only LaTeX's special characters escaped.

    Also breaks up '--', '``', "''" and '?`' so that LaTeX does not turn them into dashes,
    quotes or inverted marks ('-{}-'). '^' is left as is: LaTeX has no escape that reads back.
    """
    text = text.translate(_SPECIAL_TABLE)
    if "--" in text or "``" in text or "''" in text:
        text = _DOUBLED.sub(lambda m: m.group(0) + "{}", text)
    return _MARK_QUOTE.sub(r"\1{}`", text) if "`" in text else text


def _name_part(text: str) -> str:
    escaped = escape(text)
    # A comma or the word 'and' would split the name; braces keep it whole.
    if "," in text or re.search(r"(?i)(^|\s)and(\s|$)", text):
        return "{" + escaped + "}"
    return escaped


def format_names(people: list[Person]) -> str:
    out = []
    for person in people:
        if "literal" in person:
            out.append("{" + escape(person["literal"]) + "}")
        else:
            given = person.get("given")
            family = _name_part(person["family"])
            out.append(f"{family}, {_name_part(given)}" if given else family)
    return " and ".join(out)
