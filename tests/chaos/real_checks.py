"""The end checks of a real-process chaos run, on the folders after every process stopped:
(1) every device holds the same library, (2) every database passes SQLite's own checks and every
attachment file here holds the bytes its manifest names, (3) no acknowledged write vanished.

(3) is kept simple and sound: a write is checked only when no later write (acknowledged or not:
a failed command may still have written) touched the same field anywhere. Such a write must be
the field's value or one of its conflict versions on every device. Every reference whose
`ref add` was acknowledged must exist (in the library or its trash).
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from p2psync.store.library import Library
from tests.sync_support import digest


@dataclass
class Write:
    """One write the harness attempted: key is (ref index, field); acked when the command said so."""

    seq: int
    device: int
    ref: int
    field: str
    value: str
    acked: bool


@dataclass
class Ledger:
    writes: list[Write] = field(default_factory=list)
    ref_ids: dict[int, str] = field(default_factory=dict)  # harness index -> id the CLI printed
    added: dict[int, bool] = field(default_factory=dict)  # harness index -> was the add acknowledged

    def record(self, seq: int, device: int, ref: int, name: str, value: str, acked: bool) -> None:
        self.writes.append(Write(seq, device, ref, name, value, acked))

    def last_writes(self) -> list[Write]:
        """Per (ref, field), the write no other write came after, if it was acknowledged."""
        last: dict[tuple[int, str], Write] = {}
        for write in sorted(self.writes, key=lambda w: w.seq):
            last[(write.ref, write.field)] = write
        return [w for _, w in sorted(last.items()) if w.acked]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def database_problems(path: Path) -> list[str]:
    """PRAGMA integrity_check and foreign_key_check of one SQLite file (opened read-write so that
    a WAL left by a killed process is taken in, as the next open by p2psync would)."""
    problems = []
    db = sqlite3.connect(path)
    try:
        rows = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
        if rows != ["ok"]:
            problems.append(f"{path}: integrity_check says {rows[:5]}")
        bad = db.execute("PRAGMA foreign_key_check").fetchall()
        if bad:
            problems.append(f"{path}: foreign_key_check finds {len(bad)} rows, e.g. {bad[:3]}")
    finally:
        db.close()
    return problems


def attachment_problems(library: Library) -> list[str]:
    """Every attachment file the library says is here must hold the bytes of its manifest."""
    problems = []
    for record in [*library.list_references(), *library.list_references(trashed=True)]:
        for item in library.list_attachments(record["id"], scan=False):
            if item["present"]:
                actual = sha256_file(Path(item["path"]))
                if actual != item["sha256"]:
                    problems.append(
                        f"{library.path.name}: {record['id']}/{item['name']} holds {actual[:12]}, "
                        f"its manifest says {item['sha256'][:12]}"
                    )
    return problems


def field_values(library: Library, ref_id: str, name: str) -> tuple[object, list[object]]:
    """The value shown and every conflict version of one field (attachments: their hashes)."""
    if name.startswith("attachment:"):
        file = name.split(":", 1)[1]
        for item in library.list_attachments(ref_id, scan=False):
            if item["name"] == file:
                return item["sha256"], [v.get("sha256") for v in item.get("versions", [])]
        return None, []
    record = library.get_reference(ref_id)
    versions = library.reference_versions(ref_id).get(name, []) if record.get("conflicts") else []
    return record.get(name), [v.get("value") for v in versions]


def lost_writes(library: Library, ledger: Ledger) -> list[str]:
    problems = []
    where = library.path.name
    for index, acked in sorted(ledger.added.items()):
        ref_id = ledger.ref_ids.get(index)
        if acked and ref_id is not None:
            try:
                library.get_reference(ref_id)
            except Exception as exc:
                problems.append(f"{where}: ref #{index} ({ref_id}), added and acknowledged, is gone: {exc}")
    for write in ledger.last_writes():
        if write.field == "library.name":
            if library.name != write.value:
                problems.append(
                    f"{where}: the last rename (step {write.seq}) to {write.value!r} shows {library.name!r}"
                )
            continue
        ref_id = ledger.ref_ids.get(write.ref)
        if ref_id is None:
            continue
        try:
            shown, versions = field_values(library, ref_id, write.field)
        except Exception as exc:
            problems.append(f"{where}: ref #{write.ref} ({ref_id}) cannot be read: {exc}")
            continue
        if write.value != shown and write.value not in versions:
            problems.append(
                f"{where}: step {write.seq} wrote {write.field}={write.value!r} on device {write.device} "
                f"(ref #{write.ref}, {ref_id}), the last write there; it shows {shown!r}, versions {versions!r}"
            )
    return problems


@dataclass
class Verdict:
    digests: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check(libraries: list[Path], relay_data: Path, ledger: Ledger) -> Verdict:
    """All three checks, on folders no process uses any more."""
    problems: list[str] = []
    digests = []
    for path in libraries:
        problems += database_problems(path / "library.sqlite3")
        with Library.open(path) as library:
            digests.append(digest(library))
            problems += attachment_problems(library)
            problems += lost_writes(library, ledger)
    if len(set(digests)) != 1:
        problems.insert(0, "the devices did not converge: digests " + ", ".join(d[:12] for d in digests))
    relay_db = relay_data / "relay.sqlite3"
    if relay_db.exists():
        problems += database_problems(relay_db)
    else:
        problems.append(f"the relay's database {relay_db} is missing")
    return Verdict(digests, problems)


def digests_now(libraries: list[Path]) -> list[str] | None:
    """Each library's digest while the daemons run (None if one cannot be read just now)."""
    out = []
    try:
        for path in libraries:
            with Library.open(path) as library:
                out.append(digest(library))
    except Exception:
        return None
    return out
