"""What is done to this library just before a merge changes it, and the trash's part of the merge
question: one implementation for `pair`, `account login`/`signup` and the web app's pages.

Before a merge: the backup (store/backup.BackupChoice), then, if the user chose to leave the trash
out (`--skip-trash`, the second question, a page's tick box), this library's trash is emptied.

What "leave the trash out" means, precisely: after the backup, every reference in THIS library's
trash (the joining side: the one that runs `pair CODE`, or logs in to an account holding another
library) is deleted for good here, exactly as `p2psync trash empty` deletes it, before its content
is set aside to be merged (store/rebase.py). So those references are never sent anywhere, and the
merged library holds none of them. The other library's trash is that library's: it stays as it is
on its devices (and so in the merged library); empty it there, or after the merge, with
`p2psync trash empty`. The backup keeps the deleted ones, so nothing is lost for good.

Convergence holds because nothing out of the ordinary travels: the deletions are written to this
library's old change log, which the rebase discards with the rest of its old identity, and what
this library brings to the merge is simply what it holds after them. Every device then receives
the same change sets as for any merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2psync.store.backup import BackupChoice, Reason, backed_up_sentence
from p2psync.store.library import Library


def trash_sentence(ours: int, theirs: int) -> str:
    """The merge question's words about the two trashes."""
    said = f"In the trash: {ours} here, {theirs} in the other library."
    if ours:
        said += " This library's trashed references can be left out of the merge (deleted here after the backup)."
    return said


def leave_out_question(ours: int) -> str:
    """The second question, asked when this library's trash is not empty and no flag answered it."""
    return (
        f"Leave the {ours} reference(s) in this library's trash out of the merge? They are deleted here for good "
        "after the backup (which keeps them) and never sent."
    )


@dataclass
class BeforeMerge:
    """Called with this library before a sync changes it (link_rules.BackUp, pair_join.BeforeMerge):
    the backup as `backup` decides, then, before a merge and if `skip_trash`, the trash emptied.
    `manifest` is the backup's, `left_out` counts the references deleted so."""

    backup: BackupChoice
    skip_trash: bool = False
    left_out: int = 0
    manifest: dict[str, Any] | None = None  # the backup made

    @property
    def made(self) -> str | None:
        return str(self.manifest["path"]) if self.manifest else None

    def sentences(self) -> list[str]:
        """Where the backup went and what was left out (for a page: the command line says the
        first as it happens)."""
        said = [backed_up_sentence(self.manifest)] if self.manifest else []
        if self.left_out:
            said.append(f"Left {self.left_out} reference(s) of this library's trash out of the merge.")
        return said

    def __call__(self, library: Library, reason: Reason = Reason.MERGE) -> dict[str, Any] | None:
        manifest = self.backup(library, reason)  # first: the backup keeps what is deleted next
        if manifest is not None:
            self.manifest = manifest
        if reason is Reason.MERGE and self.skip_trash:
            self.left_out += library.empty_trash()
        return manifest
