"""References: adding, editing, finding one by an id prefix, listing, counting and searching.

A reference is one register per catalogue field, plus `added` and `trashed` (engine/ops.py);
its row in `refs` holds the provisional value of each (`data`) and the registers (`state`), and
`refs_fts` indexes its words. Lists and searches stream rows from SQLite, so memory stays flat at
any library size; what they yield is a `records.ReferenceRow` of each row (`get`, a `ReferenceDetail`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from p2psync.engine import clock, ops
from p2psync.errors import AmbiguousId, InvalidValue, UnknownReference
from p2psync.model import fields as catalogue
from p2psync.model.groups import SYNC_CONFLICTS, SYNC_CONFLICTS_ID
from p2psync.model.ids import is_id_prefix
from p2psync.store import search_build
from p2psync.store.apply import index_backlog, load_ref
from p2psync.store.db import Database
from p2psync.store.folder import DB_FILE
from p2psync.store.library.records import GroupName, ReferenceDetail, ReferenceRow

if TYPE_CHECKING:
    from p2psync.store.library import Library

# A reference is in conflict when a field or one of its attachments is (the "Sync Conflicts" group).
# (Asked as a list of ids, so that SQLite reads the partial indexes of schema 13, not every row.)
CONFLICTED = "SELECT id FROM refs WHERE conflict = 1 UNION SELECT ref_id FROM attachments WHERE conflict = 1"
IN_CONFLICT = f"id IN ({CONFLICTED})"
BATCH = 500  # references per transaction in bulk work, so other writers wait well under a second


def list_sorts() -> dict[str, str]:
    """The orders a reference list can take (`ref list --sort`): the web app's sort columns
    (listing.SORTS, each on its index), and `modified` (the time of the last edit, no index)."""
    from p2psync.store.library.listing import SORTS  # (listing.py imports this module)

    return {**SORTS, "modified": "r.modified"}


def new_reference_values(record: dict[str, Any]) -> dict[str, Any]:
    """A new reference's fields: validated against the catalogue, empty ones dropped, a type set."""
    values = catalogue.validate_fields({k: v for k, v in record.items()})
    values = {k: v for k, v in values.items() if v is not None}
    values.setdefault("type", catalogue.DEFAULT_TYPE)
    return values


class References:
    def __init__(self, library: Library) -> None:
        self.library = library

    def add(self, values: dict[str, Any]) -> str:
        """Add one reference; return its id. Values are validated against the field catalogue."""
        return self.add_many([values])[0]

    def add_many(self, records: Iterable[dict[str, Any]], progress: Callable[[int], None] | None = None) -> list[str]:
        """Add many references, BATCH per transaction; return their ids in order.

        Every record is validated before its batch starts, so a bad record stops the work
        with nothing of its batch written.
        """
        ids: list[str] = []
        batch: list[dict[str, Any]] = []
        for record in records:
            batch.append(new_reference_values(record))
            if len(batch) >= BATCH:
                ids.extend(self._insert_batch(batch))
                if progress:
                    progress(len(batch))
                batch = []
        if batch:
            ids.extend(self._insert_batch(batch))
            if progress:
                progress(len(batch))
        return ids

    def _insert_batch(self, batch: list[dict[str, Any]]) -> list[str]:
        ids = []
        with self.library.writing() as writer:
            for values in batch:
                ref_id = writer.new_id()
                # "added" is the entry's own timestamp: unique and increasing per device.
                added = clock.tick(writer.ts)
                op = ops.ref_put(ref_id, {**values, "added": added})
                writer.log(op, checked=True)
                ids.append(ref_id)
        return ids

    def edit(self, ref: str, changes: dict[str, Any]) -> bool:
        """Set (or, with None, clear) fields of a reference; return whether anything changed."""
        changes = catalogue.validate_fields(changes)
        with self.library.writing() as writer:
            ref_id = self.resolve(ref)
            op = ops.put_fields(ops.REF_PUT, "ref", ref_id, self.state(ref_id), changes)
            if op is None:
                return False
            writer.log(op)
        return True

    def state(self, ref_id: str) -> ops.State:
        """The registers of a reference that exists (not deleted)."""
        ref = load_ref(self.library.db, ref_id)
        if ref.num is None or ref.deleted:
            raise UnknownReference(f"No reference with id {ref_id}; list them with 'p2psync ref list'.")
        return ref.state

    def resolve(self, ref: str) -> str:
        """The full id of the reference whose id is or starts with `ref`."""
        ref = ref.strip().lower()
        if not is_id_prefix(ref):
            raise UnknownReference(
                f"{ref!r} is not a reference id: ids are letters a-z and digits 2-7, like '74vmorehoj6dvnlf' or "
                "its start '74vm' (use your own, from 'p2psync ref list')."
            )
        rows = self.library.db.execute(
            "SELECT id FROM refs WHERE id >= ? AND id < ? AND deleted = 0 LIMIT 2", [ref, ref + "~"]
        ).fetchall()
        if not rows:
            raise UnknownReference(f"No reference with id {ref}; list them with 'p2psync ref list'.")
        if len(rows) > 1:
            raise AmbiguousId(f"More than one reference id starts with {ref!r}; type more of the id.")
        return str(rows[0][0])

    def get(self, ref: str) -> ReferenceDetail:
        """One reference with its groups, conflicts and attachments (for 'ref show')."""
        library = self.library
        ref_id = self.resolve(ref)
        [row] = self._rows("SELECT * FROM refs WHERE id = ?", [ref_id])
        groups = library.groups.of_reference(ref_id)
        attachment_conflicts = tuple(library.attachments.conflicts(ref_id))
        if row.conflicts or attachment_conflicts:
            groups.insert(0, GroupName(SYNC_CONFLICTS_ID, SYNC_CONFLICTS))
        return ReferenceDetail(
            **vars(row),
            groups=tuple(groups),
            attachment_conflicts=attachment_conflicts,
            attachments=tuple(library.attachments.listing(ref_id, scan=False)),
        )

    def show(self, ref: str) -> ReferenceDetail:
        """`get`, after noticing the reference's files edited in place (as 'attachment list'
        does), so that 'ref show' and the reference's web page show the sizes the files have."""
        self.library.scan_attachments(self.resolve(ref))
        return self.get(ref)

    def count(self, trashed: bool = False, group: str | None = None) -> int:
        db = self.library.db
        group_id = self.library.groups.find(group).id if group is not None else None
        if group_id == SYNC_CONFLICTS_ID:
            sql = f"SELECT count(*) FROM refs WHERE {IN_CONFLICT} AND deleted = 0 AND trashed = ?"
            return int(db.execute(sql, [int(trashed)]).fetchone()[0])
        smart = self.library.groups.query_of(group_id) if group_id is not None else None
        if smart is not None:  # a smart group: what matches its search now
            return self.library.groups.smart_count(smart) if not trashed else 0
        if group_id is not None:
            row = db.execute(
                "SELECT count(*) FROM memberships m JOIN refs r ON r.id = m.ref_id "
                "WHERE m.group_id = ? AND r.trashed = ? AND r.deleted = 0",
                [group_id, int(trashed)],
            ).fetchone()
        else:
            row = db.execute("SELECT count(*) FROM refs WHERE deleted = 0 AND trashed = ?", [int(trashed)]).fetchone()
        return int(row[0])

    def listing(
        self,
        trashed: bool = False,
        group: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        sort: str = "added",
        descending: bool = False,
    ) -> Iterator[ReferenceRow]:
        """References in the order of `sort` (one of LIST_SORTS; oldest first by default), streamed
        from the database (flat memory at any size)."""
        if sort not in list_sorts():
            raise InvalidValue(f"Cannot sort by {sort[:40]!r}: sort by {', '.join(list_sorts())}.")
        direction = "DESC" if descending else "ASC"
        order = f" ORDER BY {list_sorts()[sort]} {direction}, r.id {direction}"
        params: list[Any] = [int(trashed)]
        group_id = self.library.groups.find(group).id if group is not None else None
        smart = self.library.groups.query_of(group_id) if group_id is not None else None
        if smart is not None:  # a smart group: what matches its search now (the trash: nothing)
            if not trashed:
                yield from self.library.groups.smart_members(smart, limit, offset)
            return
        if group_id == SYNC_CONFLICTS_ID:
            sql = f"SELECT r.* FROM refs r WHERE r.deleted = 0 AND r.trashed = ? AND r.{IN_CONFLICT}"
        elif group_id is not None:
            sql = (
                "SELECT r.* FROM memberships m JOIN refs r ON r.id = m.ref_id "
                "WHERE r.deleted = 0 AND r.trashed = ? AND m.group_id = ?"
            )
            params.append(group_id)
        else:
            sql = "SELECT r.* FROM refs r WHERE r.deleted = 0 AND r.trashed = ?"
        sql += order + " LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]
        yield from self._rows(sql, params)

    def search(self, text: str, limit: int | None = None, trashed: bool = False) -> Iterator[ReferenceRow]:
        """Full-text search (FTS5) over title, authors, abstract, keywords and notes, best first.

        Every word must match; a word matches as a prefix ("neur" finds "neuron").
        """
        query = fts_query(text)
        self.index_now()
        sql = (
            "SELECT r.* FROM refs_fts f JOIN refs r ON r.num = f.rowid "
            "WHERE refs_fts MATCH ? AND r.trashed = ? ORDER BY bm25(refs_fts), r.id LIMIT ?"
        )
        yield from self._rows(sql, [query, int(trashed), -1 if limit is None else limit])

    def search_backlog(self) -> int:
        """How many references are waiting to be indexed for search (after a large sync)."""
        return int(self.library.db.execute("SELECT count(*) FROM search_backlog").fetchone()[0])

    def index_now(self) -> None:
        """Bring the search index up to date before a search, without progress (catch_up_search
        is the same work, batch by batch, for a progress bar)."""
        for _ in self.catch_up_search():
            pass

    def catch_up_search(self) -> Iterator[int]:
        """Index the references a sync left for later; yields progress (references per batch).

        A bulk receive writes references without their search rows (indexing is most of the cost
        of storing a reference); searching first brings the index up to date. What a first sync's
        build indexed on the other core meanwhile comes in first (store/search_build.py).
        """
        built = search_build.finish(self.library.db, self.library.path / DB_FILE)
        if built:
            yield built
        yield from index_backlog(self.library.db)

    def _rows(self, sql: str, params: list[Any]) -> Iterator[ReferenceRow]:
        return rows(self.library.db, sql, params)


def rows(db: Database, sql: str, params: list[Any]) -> Iterator[ReferenceRow]:
    """The records of the `refs` rows a query selects, streamed."""
    cursor = db.conn.cursor()
    cursor.execute(sql, params)
    columns = [d[0] for d in cursor.description]
    for row in cursor:
        yield ReferenceRow.from_row(dict(zip(columns, row, strict=True)))


def fts_query(text: str) -> str:
    """The FTS5 query for a search: every word must match, each as a word or the start of one
    ("neur" finds "neuron"). The same for `ref search` and the web app's list."""
    words = [w for w in text.split() if w.strip('"')]
    if not words:
        raise InvalidValue("Give some words to search for.")
    return " ".join('"' + w.replace('"', '""') + '"*' for w in words)
