"""Authors, editors and translators: ordered lists of people or institutions.

A person is {"family": ..., "given": ...}; an institution (a corporate author such as
"World Health Organization") is {"literal": ...}. On the command line a person is written
"Last, First" and an institution without a comma; wrap a name in braces to keep a comma in an
institution's name: "{Smith, Jones and Partners}".
"""

from __future__ import annotations

from typing import Any

from p2psync.errors import InvalidValue

Person = dict[str, str]


def parse_person(text: str) -> Person:
    """Parse "Last, First" (a person) or "Name" (an institution)."""
    text = " ".join(text.split())
    if not text:
        raise InvalidValue("A name is empty; write a person as 'Last, First' or an institution as its name.")
    if text.startswith("{") and text.endswith("}"):
        return {"literal": text[1:-1].strip()}
    if "," in text:
        family, given = (part.strip() for part in text.split(",", 1))
        if not family:
            raise InvalidValue(f"The name {text!r} has no family name before the comma; write 'Last, First'.")
        person = {"family": family}
        if given:
            person["given"] = given
        return person
    return {"literal": text}


def format_person(person: Person) -> str:
    """The inverse of parse_person."""
    if "literal" in person:
        literal = person["literal"]
        return "{" + literal + "}" if "," in literal else literal
    given = person.get("given")
    return f"{person['family']}, {given}" if given else f"{person['family']},"


def display_person(person: Person) -> str:
    """A short human form: "Family, G." style is left to formatters; here "Family, Given"."""
    if "literal" in person:
        return person["literal"]
    given = person.get("given")
    return f"{person['family']}, {given}" if given else person["family"]


def validate_person(value: Any) -> Person:
    """Check a person value that came from a file or a peer and return it normalised."""
    if isinstance(value, str):
        return parse_person(value)
    if not isinstance(value, dict):
        raise InvalidValue(f"A person must be a name or an object, not {type(value).__name__}.")
    keys = set(value)
    if keys == {"literal"} and isinstance(value["literal"], str) and value["literal"].strip():
        return {"literal": " ".join(value["literal"].split())}
    if "family" in keys and keys <= {"family", "given"}:
        out: Person = {}
        for key in ("family", "given"):
            part = value.get(key)
            if part is None:
                continue
            if not isinstance(part, str):
                raise InvalidValue(f"A person's {key} name must be text.")
            part = " ".join(part.split())
            if part:
                out[key] = part
        if "family" not in out:
            raise InvalidValue("A person needs a family name (or use an institution's name).")
        return out
    raise InvalidValue("A person must have 'family' (and optionally 'given'), or 'literal' for an institution.")
