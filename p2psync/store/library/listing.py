"""The reference list as a screen shows it: one view of the library (everything, a group, the
Sync Conflicts, the duplicates to review, the trash), optionally narrowed by a search, sorted by
a column, one page at a time.

Never the whole library: a page is at most MAX_PAGE rows, found through an index for every sort
order (schema 13), by its place in the list (keyset paging: the id of the row before or after
it), so the thousandth page costs what the first does. A search narrows the list and keeps its
order (as EndNote's and Zotero's quick search do): its hits are found once in the full-text
index, then read in the list's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from p2psync.errors import InvalidValue, UnknownGroup, UnknownReference
from p2psync.model.ids import is_id_prefix
from p2psync.store.db import Database
from p2psync.store.library import duplicates
from p2psync.store.library.records import ReferenceRow
from p2psync.store.library.references import CONFLICTED, IN_CONFLICT, fts_query, rows

if TYPE_CHECKING:
    from p2psync.store.library import Library


class View(StrEnum):
    ALL = "all"
    GROUP = "group"
    CONFLICTS = "conflicts"
    DUPLICATES = "duplicates"
    TRASH = "trash"


# Sort column -> the expression its index (schema 13) is built on, word for word.
SORTS: dict[str, str] = {
    "author": "coalesce(r.first_author, '') COLLATE NOCASE",
    "year": "coalesce(r.year, '')",
    "title": "coalesce(r.title, '') COLLATE NOCASE",
    "journal": "coalesce(json_extract(r.data, '$.journal'), '') COLLATE NOCASE",
    "added": "coalesce(r.added, 0)",
}
MAX_PAGE = 500
MAX_PAGE_NUMBER = 100_000
MAX_QUERY = 500  # characters of a search


@dataclass(frozen=True)
class Listing:
    """What to list: a view, a search in it, an order."""

    view: View = View.ALL
    group: str | None = None  # the group's id, for View.GROUP
    query: str = ""
    sort: str = "added"
    descending: bool = True

    def check(self) -> None:
        if self.sort not in SORTS:
            raise InvalidValue(f"Cannot sort by {self.sort[:40]!r}: sort by author, year, title, journal or added.")
        if (self.view is View.GROUP) != (self.group is not None):
            raise InvalidValue("Say which group to list.")
        if len(self.query) > MAX_QUERY:
            raise InvalidValue(f"A search is at most {MAX_QUERY} characters.")


@dataclass(frozen=True)
class ReferencePage:
    rows: tuple[ReferenceRow, ...]
    total: int  # in the view (and search)
    in_conflict: frozenset[str]  # ids of the rows with a field or an attachment in conflict
    next_after: str | None = None  # the id to continue after (keyset), when more follow
    previous_before: str | None = None  # the id to go back before (keyset), when rows come before


@dataclass
class _Scope:
    """The rows of a view (and search), over `refs r`: `where` always says which; `driver`, when
    set, is a FROM that reaches them from a small set (a group's members, the conflicts, the
    duplicates, a search's hits) instead of walking every row's index entry."""

    where: str
    params: list[Any]
    driver: str | None = None
    driver_params: list[Any] = field(default_factory=list)
    search: str = ""  # a smart group's search: its rows are those that match it (with the list's)

    def count(self, db: Database) -> int:
        if self.driver is not None:
            sql = f"SELECT count(*) FROM {self.driver} WHERE {self.where}"
            return int(db.execute(sql, [*self.driver_params, *self.params]).fetchone()[0])
        # (refs_by_added: the narrowest index that has deleted and trashed first)
        sql = f"SELECT count(*) FROM refs r INDEXED BY refs_by_added WHERE {self.where}"
        return int(db.execute(sql, self.params).fetchone()[0])


def _view(library: Library, listing: Listing) -> _Scope:
    scope = _Scope("r.deleted = 0 AND r.trashed = ?", [1 if listing.view is View.TRASH else 0])
    if listing.view is View.GROUP:
        group_id = str(listing.group)
        if (
            not is_id_prefix(group_id)
            or not library.db.execute("SELECT 1 FROM groups WHERE id = ? AND name IS NOT NULL", [group_id]).fetchone()
        ):
            raise UnknownGroup("There is no such group (it may have been deleted, here or on another device).")
        smart = library.groups.query_of(group_id)
        if smart is not None:
            scope.search = smart
            return scope
        scope.where += " AND r.id IN (SELECT ref_id FROM memberships WHERE group_id = ?)"
        scope.params.append(group_id)
        scope.driver = "memberships m CROSS JOIN refs r ON r.id = m.ref_id AND m.group_id = ?"
        scope.driver_params = [group_id]
    elif listing.view is View.CONFLICTS:
        scope.where += f" AND r.{IN_CONFLICT}"
        scope.driver = f"({CONFLICTED}) c CROSS JOIN refs r ON r.id = c.id"
    elif listing.view is View.DUPLICATES:
        duplicates.catch_up(library.db)
        scope.where += " AND r.num IN (SELECT num FROM duplicate_refs)"
        scope.driver = "duplicate_refs d CROSS JOIN refs r ON r.num = d.num"
    return scope


def page(
    library: Library,
    listing: Listing,
    after: str | None = None,
    before: str | None = None,
    page_number: int = 1,
    size: int = 50,
) -> ReferencePage:
    """One page of `listing`: the first, the one after or before the row with that id, or the
    numbered one (counted from the first)."""
    listing.check()
    if not 1 <= size <= MAX_PAGE:
        raise InvalidValue(f"A page holds 1 to {MAX_PAGE} references.")
    if not 1 <= page_number <= MAX_PAGE_NUMBER:
        raise InvalidValue("The page number must be a whole number from 1.")
    scope = _view(library, listing)
    db = library.db
    words = " ".join(w for w in (scope.search, listing.query) if w)
    total = _search(library, listing.view, words, scope) if words else scope.count(db)
    where, params = scope.where, scope.params
    key = SORTS[listing.sort]
    backwards = before is not None
    # Walking back from `before` is walking forward in the opposite order, then turning the rows round.
    descending = listing.descending != backwards
    direction = "DESC" if descending else "ASC"
    # Few rows: read them and sort them; many: walk the sort order's index, keeping the view's.
    few = scope.driver is not None and total <= FEW_ROWS
    source = str(scope.driver) if few else "refs r"
    source_params = scope.driver_params if few else []
    sql = f"SELECT r.* FROM {source} WHERE {where}"
    place = after if after is not None else before
    query_params = [*source_params, *params]
    if place is not None:
        sql += _beyond(key, descending)
        value = _place(library, key, place)
        query_params += [value, value, place]
    sql += f" ORDER BY {key} {direction}, r.id {direction} LIMIT ? OFFSET ?"
    found = list(rows(db, sql, [*query_params, size + 1, (page_number - 1) * size]))
    more = len(found) > size
    found = found[:size]
    if backwards:
        found.reverse()
    if not found:
        return ReferencePage((), total, frozenset())
    # Rows beyond the page on each side: known from the query on one side, asked for on the other.
    if backwards:
        later, earlier = True, more
    else:
        later = more
        base_params = [*source_params, *params]
        earlier = page_number > 1 or (
            place is not None and _any_before(library, listing, source, where, base_params, key, found[0].id)
        )
    return ReferencePage(
        tuple(found),
        total,
        _in_conflict(library, found),
        next_after=found[-1].id if later else None,
        previous_before=found[0].id if earlier else None,
    )


def _beyond(key: str, descending: bool) -> str:
    """Rows after (value, id) in the order: the first part is a range on the sort's index."""
    if descending:
        return f" AND {key} <= ? AND ({key} < ? OR r.id < ?)"
    return f" AND {key} >= ? AND ({key} > ? OR r.id > ?)"


def _place(library: Library, key: str, ref_id: str) -> Any:
    """The sort value of the row a page starts after (or ends before)."""
    if not is_id_prefix(ref_id):
        raise InvalidValue("This page's place in the list is not a reference id; start from the first page.")
    row = library.db.execute(f"SELECT {key} FROM refs r WHERE r.id = ?", [ref_id]).fetchone()
    if row is None:
        raise UnknownReference("The reference this page started from is gone; start again from the first page.")
    return row[0]


def _any_before(
    library: Library, listing: Listing, source: str, where: str, params: list[Any], key: str, first: str
) -> bool:
    value = _place(library, key, first)
    sql = f"SELECT 1 FROM {source} WHERE {where}{_beyond(key, not listing.descending)} LIMIT 1"
    return library.db.execute(sql, [*params, value, value, first]).fetchone() is not None


# Up to this many rows, a page is sorted from the view's own set (or a search's hits); beyond,
# read in the order's index (and the set only asked whether it holds each row).
FEW_ROWS = 2_000


def _search(library: Library, view: View, text: str, scope: _Scope) -> int:
    """Put the references that match the search in temp.search_hits (this connection's own table)
    and narrow the scope to them; return how many are in the view.

    The hits are found once per page: counting them in the view and finding the page's rows
    both read the table, where a subquery would run the full-text search twice."""
    match = fts_query(text)
    library.refs.index_now()
    db = library.db
    db.execute("CREATE TEMP TABLE IF NOT EXISTS search_hits (num INTEGER PRIMARY KEY)")
    db.execute("DELETE FROM temp.search_hits")
    db.execute("INSERT INTO temp.search_hits (num) SELECT rowid FROM refs_fts WHERE refs_fts MATCH ?", [match])
    hits = int(db.execute("SELECT count(*) FROM temp.search_hits").fetchone()[0])
    scope.where += " AND r.num IN temp.search_hits"
    if hits <= FEW_ROWS:
        scope.driver, scope.driver_params = "temp.search_hits h CROSS JOIN refs r ON r.num = h.num", []
    elif view is View.ALL:
        # Deleted references leave the index, trashed ones stay: take away what the trash holds.
        trashed = "SELECT count(*) FROM refs r WHERE r.deleted = 0 AND r.trashed = 1 AND r.num IN temp.search_hits"
        return hits - int(db.execute(trashed).fetchone()[0])
    return scope.count(db)


def _in_conflict(library: Library, found: list[ReferenceRow]) -> frozenset[str]:
    """Rows in conflict: a field (the row says so) or an attachment (one indexed look-up)."""
    ids = [row.id for row in found]
    marks = ", ".join("?" * len(ids))
    attachments = library.db.execute(
        f"SELECT DISTINCT ref_id FROM attachments WHERE conflict = 1 AND ref_id IN ({marks})", ids
    )
    return frozenset(row.id for row in found if row.conflicts) | frozenset(r for (r,) in attachments)


def count(library: Library, view: View, group: str | None = None) -> int:
    scope = _view(library, Listing(view=view, group=group))
    return _search(library, view, scope.search, scope) if scope.search else scope.count(library.db)
