"""The operation check of merge.md §2, modelled from the spec's words: is_valid(op) says whether a
receiver accepts an operation (inside a change set, a refused one is the rejection `schema`).
The causality rule (seen dots within the change set's deps) needs the entry's place and is
checked with the change set (changesets.py, P17)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from vectors_model import rules

# §2.3: white space as Python's str.split() sees it (29 code points)
WHITE = frozenset(
    [chr(c) for c in range(0x09, 0x0E)]
    + [chr(c) for c in range(0x1C, 0x21)]
    + ["\u0085", "\u00a0", "\u1680"]
    + [chr(c) for c in range(0x2000, 0x200B)]
    + ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
)
assert len(WHITE) == 29

TEXT = (
    "title short_title journal journal_abbrev book_title series volume issue pages number edition publisher "
    "place isbn issn url language label call_number database archive " + " ".join(f"custom{i}" for i in range(1, 9))
).split()
KINDS_OF_FIELDS: dict[str, str] = {
    "type": "type",
    **dict.fromkeys(TEXT, "text"),
    "doi": "doi",
    **dict.fromkeys(["authors", "editors", "translators"], "people"),
    "year": "year",
    **dict.fromkeys(["date", "accessed"], "date"),
    **dict.fromkeys(["abstract", "notes", "research_notes"], "long"),
    "keywords": "list",
}
SYSTEM = ("added", "trashed", "deleted")
REFERENCE_TYPES = frozenset(
    [
        "journal_article",
        "book",
        "edited_book",
        "book_section",
        "conference_paper",
        "conference_proceedings",
        "thesis",
        "report",
        "web_page",
        "dataset",
        "patent",
        "magazine_article",
        "newspaper_article",
        "encyclopedia_entry",
        "manuscript",
        "preprint",
        "software",
        "standard",
        "presentation",
        "interview",
        "letter",
        "audiovisual",
        "map",
        "legal_case",
        "statute",
        "generic",
    ]
)
MAX_TEXT, MAX_LONG, MAX_PEOPLE, MAX_LIST_ITEMS, MAX_GROUP_NAME, MAX_DEVICE_NAME = (
    4_000,
    1_000_000,
    5_000,
    1_000,
    200,
    100,
)
MAX_SMART_QUERY, MAX_LIBRARY_NAME = 500, 200

KEYS = {
    rules.REF_PUT: {"op", "ref", "fields", "seen"},
    rules.REF_DELETE: {"op", "ref", "seen"},
    rules.GROUP_PUT: {"op", "group", "fields", "seen"},
    rules.GROUP_DELETE: {"op", "group", "seen", "members"},
    rules.MEMBER_ADD: {"op", "group", "refs"},
    rules.MEMBER_REMOVE: {"op", "group", "seen"},
    rules.ATTACHMENT_PUT: {"op", "ref", "name", "value", "seen"},
    rules.DEVICE_ADD: {"op", "device", "key", "name", "introducer", "signature"},
    rules.DEVICE_REVOKE: {"op", "device", "upto"},
    rules.DEVICE_NAME: {"op", "name"},
    rules.GROUPSET_PUT: {"op", "set", "fields", "seen"},
    rules.GROUPSET_DELETE: {"op", "set", "seen"},
    rules.LIBRARY_NAME: {"op", "name", "seen"},
}
GROUP_FIELDS = ("name", "query", "set")


def is_int(value: Any, low: int, high: int = rules.MAX_INT) -> bool:
    return type(value) is int and low <= value <= high


def is_object_id(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[a-z2-7]{16}", value) is not None


def is_device_id(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Z2-7]{32}", value) is not None


def is_dot_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= rules.MAX_DOTS
        and all(isinstance(d, list) and len(d) == 2 and is_device_id(d[0]) and is_int(d[1], 1) for d in value)
    )


def is_seen_map(value: Any, key_ok: Any) -> bool:
    return isinstance(value, dict) and all(key_ok(k) and is_dot_list(v) for k, v in value.items())


def space_normal(value: Any, most: int | None = None) -> bool:
    return (
        isinstance(value, str)
        and value != ""
        and not any(c in WHITE and c != " " for c in value)
        and value[0] != " "
        and value[-1] != " "
        and "  " not in value
        and (most is None or len(value) <= most)
    )


def canonical_b64(value: Any, size: int) -> bool:
    if not isinstance(value, str):
        return False
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == size and base64.b64encode(raw).decode("ascii") == value


def is_field_value(name: str, value: Any) -> bool:
    """§2.3: a value in normal form, or null (every catalogued field but type)."""
    if name == "added":
        return is_int(value, 0)
    if name == "trashed":
        return value is True or value is None
    if name == "deleted":
        return value is None
    kind = KINDS_OF_FIELDS[name]
    if value is None:
        return kind != "type"
    if kind == "type":
        return value in REFERENCE_TYPES
    if kind == "text":
        return space_normal(value, MAX_TEXT)
    if kind == "doi":
        return space_normal(value, MAX_TEXT) and value.startswith("10.")
    if kind == "long":
        return (
            isinstance(value, str)
            and 0 < len(value) <= MAX_LONG
            and value[0] not in WHITE
            and value[-1] not in WHITE
            and "\r\n" not in value
        )
    if kind == "people":
        return isinstance(value, list) and 0 < len(value) <= MAX_PEOPLE and all(map(is_person, value))
    if kind == "list":
        return (
            isinstance(value, list)
            and 0 < len(value) <= MAX_LIST_ITEMS
            and all(space_normal(v, MAX_TEXT) for v in value)
            and len(set(value)) == len(value)
        )
    if kind == "year":
        return isinstance(value, str) and (
            re.fullmatch(r"[0-9]{1,4}[A-Za-z]?", value) is not None
            or (value.isascii() and value.lower() in ("in press", "forthcoming", "n.d.", "submitted"))
        )
    if kind == "date":
        found = isinstance(value, str) and re.fullmatch(r"([0-9]{4})(-([0-9]{2})(-([0-9]{2}))?)?", value)
        if not found:
            return False
        month, day = found.group(3), found.group(5)
        return (month is None or 1 <= int(month) <= 12) and (day is None or 1 <= int(day) <= 31)
    raise AssertionError(kind)


def is_person(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) in ({"literal"}, {"family"}, {"family", "given"})
        and all(space_normal(v) for v in value.values())
    )


def is_attachment_name(value: Any) -> bool:
    """§2.4."""
    return (
        isinstance(value, str)
        and value not in ("", ".", "..")
        and not any(ord(c) < 0x20 or c == "\x7f" or c in '/\\:*?"<>|' for c in value)
        and value[0] not in WHITE
        and value[-1] not in WHITE
        and not value.endswith(".")
        and len(value.encode("utf-8")) <= 255
        and not value.casefold().startswith(".p2psync")
    )


def is_manifest(value: Any) -> bool:
    """§2.4: {"size", "sha256"[, "chunks"]}: hex digests, chunk sizes in [1, 131072] summing to
    size, at most 36,000 chunks."""

    def is_digest(text: Any) -> bool:
        return isinstance(text, str) and re.fullmatch(r"[0-9a-f]{64}", text) is not None

    if not isinstance(value, dict) or set(value) not in ({"size", "sha256"}, {"size", "sha256", "chunks"}):
        return False
    if not is_int(value["size"], 0, 2**40) or not is_digest(value["sha256"]):
        return False
    if "chunks" not in value:
        return True
    chunks = value["chunks"]
    return (
        isinstance(chunks, list)
        and len(chunks) <= 36_000
        and all(isinstance(c, list) and len(c) == 2 and is_digest(c[0]) and is_int(c[1], 1, 131_072) for c in chunks)
        and sum(c[1] for c in chunks) == value["size"]
    )


def device_id_for(public_key: bytes) -> str:
    return base64.b32encode(hashlib.sha256(public_key).digest()).decode("ascii")[:32]


def is_valid(op: Any) -> bool:
    """merge.md §2: the operation's kind, its exact keys, and every rule of its kind."""
    if not isinstance(op, dict) or op.get("op") not in KEYS or set(op) != KEYS[op["op"]]:
        return False
    kind = op["op"]
    if any(key in op and not is_object_id(op[key]) for key in ("ref", "group", "set")):
        return False
    if kind == rules.REF_PUT:
        fields = op["fields"]
        return (
            isinstance(fields, dict)
            and len(fields) > 0
            and all((n in KINDS_OF_FIELDS or n in SYSTEM) and is_field_value(n, v) for n, v in fields.items())
            and is_seen_map(op["seen"], lambda k: k in fields)
        )
    if kind == rules.REF_DELETE:
        return is_seen_map(op["seen"], lambda k: k in KINDS_OF_FIELDS or k in SYSTEM)
    if kind == rules.GROUP_PUT:
        fields = op["fields"]
        return (
            isinstance(fields, dict)
            and len(fields) > 0
            and set(fields) <= set(GROUP_FIELDS)
            and ("name" not in fields or space_normal(fields["name"], MAX_GROUP_NAME))
            and ("query" not in fields or is_smart_query(fields["query"]))
            and ("set" not in fields or fields["set"] is None or is_object_id(fields["set"]))
            and is_seen_map(op["seen"], lambda k: k in fields)
        )
    if kind == rules.GROUP_DELETE:
        return is_seen_map(op["seen"], lambda k: k in GROUP_FIELDS) and is_seen_map(op["members"], is_object_id)
    if kind == rules.GROUPSET_PUT:
        fields = op["fields"]
        return (
            isinstance(fields, dict)
            and set(fields) == {"name"}
            and space_normal(fields["name"], MAX_GROUP_NAME)
            and is_seen_map(op["seen"], lambda k: k == "name")
        )
    if kind == rules.GROUPSET_DELETE:
        return is_seen_map(op["seen"], lambda k: k == "name")
    if kind == rules.LIBRARY_NAME:
        return space_normal(op["name"], MAX_LIBRARY_NAME) and not has_control(op["name"]) and is_dot_list(op["seen"])
    if kind == rules.MEMBER_ADD:
        refs = op["refs"]
        return (
            isinstance(refs, list)
            and 0 < len(refs) <= rules.MAX_REFS_PER_OP
            and all(map(is_object_id, refs))
            and len(set(refs)) == len(refs)
        )
    if kind == rules.MEMBER_REMOVE:
        return is_seen_map(op["seen"], is_object_id)
    if kind == rules.ATTACHMENT_PUT:
        return (
            is_attachment_name(op["name"])
            and (op["value"] is None or is_manifest(op["value"]))
            and is_dot_list(op["seen"])
        )
    if kind == rules.DEVICE_ADD:
        key_ok = canonical_b64(op["key"], 32)
        return (
            key_ok
            and device_id_for(base64.b64decode(op["key"])) == op["device"]
            and isinstance(op["name"], str)
            and 0 < len(op["name"]) <= MAX_DEVICE_NAME
            and (
                (op["introducer"] is None and op["signature"] is None)
                or (is_device_id(op["introducer"]) and canonical_b64(op["signature"], 64))
            )
        )
    if kind == rules.DEVICE_NAME:
        return is_device_name(op["name"])
    return is_device_id(op["device"]) and is_int(op["upto"], 0)  # device.revoke


def has_control(value: str) -> bool:
    """A control character: U+0000-U+001F or U+007F-U+009F."""
    return any(ord(ch) <= 0x1F or 0x7F <= ord(ch) <= 0x9F for ch in value)


def is_smart_query(value: Any) -> bool:
    """merge.md §2.3, a smart group's query: white-space normal text of at most 500 code points,
    no control character, and at least one word (between spaces) that is not only double quotes."""
    return (
        space_normal(value, MAX_SMART_QUERY)
        and not has_control(value)
        and any(word.strip('"') for word in value.split(" "))
    )


def is_device_name(value: Any) -> bool:
    """merge.md §2.5, device.name: 1 to 100 code points, none a control character (U+0000-U+001F,
    U+007F-U+009F), and no space first or last."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_DEVICE_NAME or value[0] == " " or value[-1] == " ":
        return False
    return all(not (ord(ch) <= 0x1F or 0x7F <= ord(ch) <= 0x9F) for ch in value)


def seen_dots(op: dict[str, Any]) -> list[list[Any]]:
    """changesets.md §8.1, P17: the dots an operation has seen."""
    if op["op"] in (rules.ATTACHMENT_PUT, rules.LIBRARY_NAME):
        return list(op["seen"])
    found = [d for lst in op.get("seen", {}).values() for d in lst]
    if op["op"] == rules.GROUP_DELETE:
        found += [d for lst in op["members"].values() for d in lst]
    return found
