"""The trash: a reference moved there is hidden from the library; emptying it deletes for good.

Trash is a field (`trashed`), so moving a reference in or out is an ordinary edit. Emptying it
writes `ref.delete`, which marks rather than erases (engine/merge.py): an edit the delete had not
seen makes a conflict on `deleted` instead of a silent loss. The files of a deleted reference go
at once on this machine (store/transfers.py removes them at the next sync on the others).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from p2psync.engine import ops, registers
from p2psync.errors import Conflict
from p2psync.store import folder, transfers
from p2psync.store.db import write_transaction
from p2psync.store.library.references import BATCH

if TYPE_CHECKING:
    from p2psync.store.library import Library


class Trash:
    def __init__(self, library: Library) -> None:
        self.library = library

    def put(self, ref: str) -> bool:
        """Move a reference to the trash; return whether it was not there yet."""
        refs = self.library.refs
        with self.library.writing() as writer:
            ref_id = refs.resolve(ref)
            op = ops.put_fields(ops.REF_PUT, "ref", ref_id, refs.state(ref_id), {"trashed": True})
            if op is None:
                return False
            writer.log(op)
        return True

    def put_many(self, refs: Iterable[str]) -> list[str]:
        """Move references to the trash in one transaction; return the ids of those not there yet.
        An unknown id changes nothing."""
        moved = []
        with self.library.writing() as writer:
            for ref_id in dict.fromkeys(self.library.refs.resolve(r) for r in refs):
                op = ops.put_fields(ops.REF_PUT, "ref", ref_id, self.library.refs.state(ref_id), {"trashed": True})
                if op is not None:
                    writer.log(op)
                    moved.append(ref_id)
        return moved

    def restore_many(self, refs: Iterable[str]) -> list[str]:
        """Bring references back from the trash in one transaction; return their ids. One that is
        unknown or not in the trash changes nothing."""
        with self.library.writing() as writer:
            ids = list(dict.fromkeys(self.library.refs.resolve(r) for r in refs))
            for ref_id in ids:
                writer.log(self._restore_op(ref_id))
        return ids

    def restore(self, ref: str) -> None:
        with self.library.writing() as writer:
            writer.log(self._restore_op(self.library.refs.resolve(ref)))

    def _restore_op(self, ref_id: str) -> dict[str, Any]:
        state = self.library.refs.state(ref_id)
        if registers.resolve(state.get("trashed", [])).value is not True:
            raise Conflict(f"Reference {ref_id} is not in the trash.")
        op = ops.put_fields(ops.REF_PUT, "ref", ref_id, state, {"trashed": None})
        assert op is not None
        return op

    def empty(self, progress: Callable[[int], None] | None = None) -> int:
        """Delete every reference in the trash for good (tombstones, so it propagates)."""
        db = self.library.db
        deleted = 0
        while True:
            with self.library.writing() as writer:
                ids = [
                    r[0] for r in db.execute("SELECT id FROM refs WHERE deleted = 0 AND trashed = 1 LIMIT ?", [BATCH])
                ]
                for ref_id in ids:
                    writer.log(self.delete_op(ref_id))
            for ref_id in ids:
                self._forget_files(ref_id)
            deleted += len(ids)
            if progress and ids:
                progress(len(ids))
            if len(ids) < BATCH:
                return deleted

    def delete_op(self, ref_id: str) -> dict[str, Any]:
        """The operation that deletes a reference for good, having seen all of it."""
        # Groups and attachment manifests stay (hidden with the reference), so that keeping the
        # reference after a delete-vs-edit conflict brings back all of it.
        return ops.delete_ref(ref_id, self.library.refs.state(ref_id))

    def _forget_files(self, ref_id: str) -> None:
        with write_transaction(self.library.db):
            transfers.forget_ref(self.library.db, ref_id)
        folder.remove_ref_files(self.library, ref_id)
