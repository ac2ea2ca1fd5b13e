"""What the simulation expects, and the end checks.

Every log entry a device writes is a `Write`, named by its (author, seq) and carrying `seen`: the
entries its device held when it was made (for an attachment edited in place: the version the file
held, and what that version had seen). The checks, after the network healed and quiesced:

1. every device still a member shows the same library (tests.sync_support.digest);
2. no write vanished without a conflict: the values a reference field or an attachment holds are
   exactly the writes no later write had seen (multi-value register semantics, protocol/merge.md),
   and a reference deleted for good had every write to it seen by some delete;
3. no removed device holds any write made by a member that had already seen the removal, nor can
   read one in what the relay still hands it (relay_actor.RelayWorld.snoop).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from p2psync.store import logtext
from p2psync.store.apply import load_ref
from p2psync.store.library import Library
from tests.chaos.schedule import FIELDS
from tests.sync_support import digest

EntryId = tuple[str, int]  # (author device id, seq)


class ChaosFailure(Exception):
    """A check failed. `kind` groups failures for the shrinker (a cut must keep the same kind)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class Write:
    id: EntryId
    ref: str | None  # the reference (or None: a group, a device, the library's name...)
    key: str | None  # a field name, "@name" for an attachment, "delete", or None (not checked)
    value: str | None  # a field's value (as text), an attachment's sha256, None for a clear
    seen: frozenset[EntryId]
    revokes: str | None = None  # the device this entry removes
    upto: int = 0  # and its cut-off


@dataclass
class Model:
    writes: list[Write] = field(default_factory=list)
    by_id: dict[EntryId, Write] = field(default_factory=dict)

    def add(self, write: Write) -> None:
        self.writes.append(write)
        self.by_id[write.id] = write

    def attachment_base(self, ref: str, name: str, sha: str) -> frozenset[EntryId]:
        """What an edit of the file holding `sha` has seen: that version's writes and their past."""
        seen: set[EntryId] = set()
        for w in self.writes:
            if w.ref == ref and w.key == "@" + name and w.value == sha:
                seen |= w.seen | {w.id}
        return frozenset(seen)


def new_entries(library: Library, after: int) -> list[tuple[int, dict[str, object]]]:
    """This device's own log entries past seq `after`, with their operations."""
    rows = library.db.execute(
        f"SELECT c.seq, {logtext.OP_TEXT} FROM {logtext.LOG_ROWS} WHERE c.device = ? AND c.seq > ? ORDER BY c.seq",
        [library.device_id, after],
    ).fetchall()
    return [(int(seq), json.loads(op)) for seq, op in rows]


def held(library: Library) -> set[EntryId]:
    return {(d, int(s)) for d, s in library.db.execute("SELECT device, seq FROM changelog")}


def writes_of(entry: EntryId, op: dict[str, object], seen: frozenset[EntryId]) -> list[Write]:
    """The model's writes for one log entry (one per checked field; one unchecked otherwise)."""
    kind = op.get("op")
    ref = op.get("ref")
    ref = ref if isinstance(ref, str) else None
    out: list[Write] = []
    if kind == "ref.put" and isinstance(op.get("fields"), dict):
        fields: dict[str, object] = op["fields"]  # type: ignore[assignment]
        out += [Write(entry, ref, f, _text(fields[f]), seen) for f in FIELDS if f in fields]
    elif kind == "attachment.put":
        value = op.get("value")
        sha = value.get("sha256") if isinstance(value, dict) else None
        out.append(Write(entry, ref, "@" + str(op.get("name")), sha, seen))
    elif kind == "ref.delete":
        out.append(Write(entry, ref, "delete", None, seen))
    elif kind == "device.revoke":
        upto = op.get("upto")
        out.append(Write(entry, None, None, None, seen, str(op.get("device")), upto if isinstance(upto, int) else 0))
    return out or [Write(entry, ref, None, None, seen)]


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def members_of(libraries: dict[int, Library]) -> dict[int, Library]:
    """The devices still members: listed and not removed in the view of the first device that most
    devices count as a member (a removed device may not know it was removed)."""
    listed = {i: {d["device_id"]: d["revoked"] for d in lib.devices()} for i, lib in libraries.items()}
    ids = {i: lib.device_id for i, lib in libraries.items()}
    votes = {i: sum(r.get(ids[i]) is False for r in listed.values()) for i in libraries}
    judge = max(sorted(libraries), key=lambda i: votes[i])
    # (a newcomer whose introduction never committed, its introducer crashing, is no member)
    return {i: lib for i, lib in libraries.items() if listed[judge].get(ids[i]) is False and not listed[i].get(ids[i])}


def cutoffs(model: Model, effective: set[EntryId]) -> dict[str, int]:
    """device -> its smallest revocation cut-off among the removals in `effective` (a removal
    written by a device removed first is itself refused): its entries past that are refused."""
    cutoff: dict[str, int] = {}
    for w in model.writes:
        if w.revokes is not None and w.id in effective:
            cutoff[w.revokes] = min(cutoff.get(w.revokes, w.upto), w.upto)
    return cutoff


def revocation_diverges(model: Model, members: dict[int, Library]) -> bool:
    """Whether a member holds change sets of a removed device past a cut-off it did not know of
    when it applied them: protocol/changesets.md, known limitation 2 (revocation is not
    convergent). Members may then differ for good, by design."""
    holdings = [held(lib) for lib in members.values()]
    cutoff = cutoffs(model, set().union(*holdings))
    return any(author in cutoff and seq > cutoff[author] for has in holdings for author, seq in has)


def check(
    model: Model, libraries: dict[int, Library], refs: list[str], snooped: dict[int, set[EntryId]] | None = None
) -> bool:
    """Raise ChaosFailure if a check fails; return False if the members' sameness could not be
    checked (known limitation 2), True otherwise."""
    members = members_of(libraries)
    digests = {i: digest(lib) for i, lib in members.items()}
    if len(set(digests.values())) > 1 and revocation_diverges(model, members):
        _check_removed(model, libraries, members, snooped or {})
        return False
    if len(set(digests.values())) > 1:
        groups: dict[str, list[int]] = {}
        for i, d in sorted(digests.items()):
            groups.setdefault(d, []).append(i)
        raise ChaosFailure("diverged", f"members differ after quiescing: devices {sorted(groups.values())}")
    lib = members[min(members)]
    _check_registers(model, lib, refs)
    _check_removed(model, libraries, members, snooped or {})
    return True


def _check_registers(model: Model, lib: Library, refs: list[str]) -> None:
    cutoff = cutoffs(model, held(lib))
    valid = [w for w in model.writes if w.id[1] <= cutoff.get(w.id[0], w.id[1])]  # (the rest is refused)
    for ref in sorted(set(refs)):
        ref_writes = [w for w in valid if w.ref == ref and w.key is not None]
        stored = load_ref(lib.db, ref)
        deleted = stored.num is None or bool(stored.deleted)
        if deleted:  # its fields were all seen by the deletes; its attachments stay, hidden (merge.md §5)
            seen_by_deletes: set[EntryId] = set()
            for w in ref_writes:
                if w.key == "delete":
                    seen_by_deletes |= w.seen
            fields = [w for w in ref_writes if w.key in FIELDS]
            lost = [w.id for w in fields if w.id not in seen_by_deletes]
            if lost and any(w.key == "delete" for w in ref_writes):
                raise ChaosFailure(
                    "lost", f"ref {ref}: writes {lost[:3]} vanished with a delete that had not seen them"
                )
        for key in sorted({w.key for w in ref_writes if w.key and w.key != "delete"}):
            if deleted and not key.startswith("@"):
                continue
            writes = [w for w in ref_writes if w.key == key]
            frontier = sorted(str(w.value) for w in writes if not any(w.id in o.seen for o in writes))
            if key.startswith("@"):
                entries = lib.attachments.entries(ref, key[1:])
                now = sorted(str(e[3]["sha256"] if isinstance(e[3], dict) else None) for e in entries)
            else:
                now = sorted(str(e[3]) for e in stored.state.get(key, []))
            if frontier != now:
                raise ChaosFailure("lost", f"ref {ref} {key}: holds {now}, the writes no one saw are {frontier}")


def _check_removed(
    model: Model, libraries: dict[int, Library], members: dict[int, Library], snooped: dict[int, set[EntryId]]
) -> None:
    """Check 3, on what each removed device holds and on what the relay still hands it (snoop)."""
    member_ids = {lib.device_id for lib in members.values()}
    for i, lib in sorted(libraries.items()):
        if i in members:
            continue
        removal = {w.id for w in model.writes if w.revokes == lib.device_id}
        has = held(lib) | snooped.get(i, set())
        leaked = [
            w.id
            for w in model.writes
            if w.id[0] in member_ids and w.seen & removal and w.id in has and w.id[0] != lib.device_id
        ]
        if leaked:
            raise ChaosFailure(
                "leaked", f"removed device {i} holds {len(leaked)} writes made after its removal was seen"
            )
