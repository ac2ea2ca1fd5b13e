"""Group names, smart-group queries, group-set names and the library's name.

A group is plain (its members are stored, an add-wins set) or smart (a saved search: its members
are the references that match its query now, worked out when it is read, never stored). The
query is the same words `ref search` takes (store/library/references.fts_query): every word must
match, each as a word or the start of one. Its normal form is its words joined by one space, so
that two devices that type the same search store the same bytes. A group set is a named folder
of groups; a group, plain or smart, is in at most one.
"""

from __future__ import annotations

from typing import Any

from p2psync.errors import InvalidValue

MAX_GROUP_NAME = 200
MAX_LIBRARY_NAME = 200
MAX_SMART_QUERY = 500  # characters, as a search of the library list (store/library/listing.MAX_QUERY)
SYNC_CONFLICTS = "Sync Conflicts"  # the system group of conflicted references (sync engine)
SYNC_CONFLICTS_ID = "sync-conflicts"  # derived from the conflicts themselves, never stored


def _has_control(text: str) -> bool:
    # C0 and C1 control characters and DEL (line breaks and tabs are white space, made spaces first)
    return any(ord(ch) <= 0x1F or 0x7F <= ord(ch) <= 0x9F for ch in text)


def _clean(name: Any, what: str, limit: int) -> str:
    if not isinstance(name, str):
        raise InvalidValue(f"A {what} must be text.")
    clean = " ".join(name.split())
    if not clean:
        raise InvalidValue(f"A {what} cannot be empty.")
    if len(clean) > limit:
        raise InvalidValue(f"A {what} can be at most {limit} characters.")
    return clean


def validate_group_name(name: Any) -> str:
    return _clean(name, "group name", MAX_GROUP_NAME)


def validate_set_name(name: Any) -> str:
    """A group set's name: the rules of a group's name (sets and groups are named apart)."""
    return _clean(name, "group set name", MAX_GROUP_NAME)


def validate_library_name(name: Any) -> str:
    clean = _clean(name, "library name", MAX_LIBRARY_NAME)
    if _has_control(clean):
        raise InvalidValue("A library name cannot contain control characters.")
    return clean


def query_words(text: str) -> list[str]:
    """The words of a search, as `ref search` counts them (a word of quotes only is none)."""
    return [w for w in text.split() if w.strip('"')]


def validate_smart_query(query: Any) -> str:
    """A smart group's search in normal form, or one sentence saying what is wrong with it.

    Bounded and plain text: it only ever becomes an FTS5 string per word, passed as a parameter
    (store/library/references.fts_query), never SQL."""
    if not isinstance(query, str):
        raise InvalidValue("A smart group's search must be text.")
    if len(query) > 4 * MAX_SMART_QUERY:  # not worth splitting
        raise InvalidValue(f"A smart group's search is at most {MAX_SMART_QUERY} characters.")
    clean = " ".join(query.split())
    if len(clean) > MAX_SMART_QUERY:
        raise InvalidValue(f"A smart group's search is at most {MAX_SMART_QUERY} characters.")
    if _has_control(clean):
        raise InvalidValue("A smart group's search cannot contain control characters.")
    if not query_words(clean):
        raise InvalidValue("A smart group's search needs some words to search for.")
    return clean
