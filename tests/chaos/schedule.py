"""The steps of a simulated run, and the seeded generator of schedules.

Every step names devices by index (in the order they joined) and references by index (in the
order they were created, world-wide), never by id: a step that refers to something that does not
exist (yet, or any more, or in a cut-down schedule) is a no-op, so any sub-list of a schedule
still runs. That is what the shrinker relies on. Steps are frozen dataclasses whose repr is the
Python that builds them, so a minimized schedule prints as a test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FIELDS = ("title", "year", "abstract")
GROUPS = ("Reading", "Thesis", "Later")
SETS = ("Work", "Home")
PEOPLE = (("Curie, Marie",), ("Noether, Emmy", "Hopper, Grace"), ("Lovelace, Ada",))
QUERIES = ("1", "2", "v")


@dataclass(frozen=True)
class AddRef:
    dev: int


@dataclass(frozen=True)
class Edit:
    dev: int
    ref: int
    field: str
    value: str | None  # None clears the field


@dataclass(frozen=True)
class Authors:
    dev: int
    ref: int
    names: tuple[str, ...]


@dataclass(frozen=True)
class Trash:
    dev: int
    ref: int


@dataclass(frozen=True)
class Restore:
    dev: int
    ref: int


@dataclass(frozen=True)
class EmptyTrash:
    dev: int


@dataclass(frozen=True)
class GroupCreate:
    dev: int
    name: str


@dataclass(frozen=True)
class GroupRename:
    dev: int
    name: str
    new: str


@dataclass(frozen=True)
class GroupDelete:
    dev: int
    name: str


@dataclass(frozen=True)
class GroupMember:
    dev: int
    name: str
    ref: int
    add: bool


@dataclass(frozen=True)
class SmartGroup:
    dev: int
    name: str
    query: str


@dataclass(frozen=True)
class SetCreate:
    dev: int
    name: str


@dataclass(frozen=True)
class SetFile:
    dev: int
    group: str
    group_set: str | None  # None takes the group out of its set


@dataclass(frozen=True)
class SetDelete:
    dev: int
    name: str


@dataclass(frozen=True)
class LibraryRename:
    dev: int
    name: str


@dataclass(frozen=True)
class Attach:
    dev: int
    ref: int
    content: bytes


@dataclass(frozen=True)
class Annotate:
    """New bytes written into the attachment's file in the library's folder, the library not told
    (what a PDF reader does); the next seal or receive on that device notices it."""

    dev: int
    ref: int
    content: bytes


@dataclass(frozen=True)
class FetchFiles:
    """dev fetches the attachment files it lacks from src, chunk by verified chunk (in-process)."""

    dev: int
    src: int


@dataclass(frozen=True)
class Scan:
    """The daemon's periodic look for attachment files edited in place (node.py: every
    SCAN_SECONDS, library.scan_attachments), between its sync rounds."""

    dev: int


@dataclass(frozen=True)
class RemoveDevice:
    dev: int
    target: int


@dataclass(frozen=True)
class PairNewDevice:
    dev: int  # the introducer; the newcomer takes the next index


@dataclass(frozen=True)
class Send:
    """dst asks src for what its version vector lacks; the answer is queued on the network."""

    src: int
    dst: int


@dataclass(frozen=True)
class Deliver:
    index: int  # into the queue, modulo its length: any index reorders


@dataclass(frozen=True)
class Duplicate:
    index: int


@dataclass(frozen=True)
class Drop:
    index: int


@dataclass(frozen=True)
class Partition:
    groups: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Heal:
    pass


@dataclass(frozen=True)
class Skew:
    dev: int
    hours: int


@dataclass(frozen=True)
class Crash:
    """The device's next SQL dies after `after` progress ticks (of 50 VM steps): it is dead until
    Restart, its uncommitted work rolled back, its files left as they are."""

    dev: int
    after: int


@dataclass(frozen=True)
class Restart:
    dev: int


@dataclass(frozen=True)
class RelaySync:
    """One relay sync round of the device (its first: sign-up of the account, or a login to it)."""

    dev: int


@dataclass(frozen=True)
class AccountReset:
    """The device forgets its relay account (#!resetLocalSync) and logs in again."""

    dev: int


@dataclass(frozen=True)
class RelayRestart:
    pass


Step = (
    AddRef
    | Edit
    | Authors
    | Trash
    | Restore
    | EmptyTrash
    | GroupCreate
    | GroupRename
    | GroupDelete
    | GroupMember
    | SmartGroup
    | SetCreate
    | SetFile
    | SetDelete
    | LibraryRename
    | Attach
    | Annotate
    | FetchFiles
    | Scan
    | RemoveDevice
    | PairNewDevice
    | Send
    | Deliver
    | Duplicate
    | Drop
    | Partition
    | Heal
    | Skew
    | Crash
    | Restart
    | RelaySync
    | AccountReset
    | RelayRestart
)

STEP_TYPES = (
    AddRef, Edit, Authors, Trash, Restore, EmptyTrash, GroupCreate, GroupRename, GroupDelete, GroupMember,
    SmartGroup, SetCreate, SetFile, SetDelete, LibraryRename, Attach, Annotate, FetchFiles, Scan, RemoveDevice,
    PairNewDevice,
    Send, Deliver, Duplicate, Drop, Partition, Heal, Skew, Crash, Restart, RelaySync, AccountReset, RelayRestart,
)  # fmt: skip


@dataclass(frozen=True)
class Schedule:
    seed: int
    devices: int  # at the start (PairNewDevice adds more)
    steps: list[Step]
    relay: bool  # whether the steps use the relay (a real one: slower, so in some seeds only)


RELAY_SHARE = 0.12  # of seeds that use the relay


def generate(seed: int, devices: tuple[int, int] = (3, 6), steps: int = 60) -> Schedule:
    """A schedule from `seed` alone. Edits go to a few references and fields on several devices
    between deliveries, so that conflicts actually happen."""
    rng = random.Random(seed)
    n = rng.randint(*devices)
    relay = rng.random() < RELAY_SHARE
    out: list[Step] = []
    refs = 0  # references added so far (an upper bound: an AddRef on a dead device adds none)
    total = n
    counter = 0

    def value() -> str:
        nonlocal counter
        counter += 1
        return f"v{counter}"

    def dev() -> int:
        return rng.randrange(total)

    def ref() -> int:
        return rng.randrange(max(refs, 1)) if rng.random() < 0.3 else max(refs - 1 - rng.randrange(3), 0)

    def aref() -> int:  # attachments mostly on one reference, so that versions of one file meet
        return 0 if rng.random() < 0.6 else ref()

    # edits and the network dominate
    def make() -> Step:
        nonlocal refs, total
        roll = rng.random() * 100
        if roll < 7 or refs == 0:
            refs += 1
            return AddRef(dev())
        if roll < 30:
            name = rng.choice(FIELDS)
            text = value()
            if name == "year":
                text = str(1900 + counter)
            return Edit(dev(), ref(), name, None if rng.random() < 0.1 and name != "title" else text)
        if roll < 32:
            return Authors(dev(), ref(), rng.choice(PEOPLE))
        if roll < 34:
            return Trash(dev(), ref())
        if roll < 35.5:
            return Restore(dev(), ref())
        if roll < 36.5:
            return EmptyTrash(dev())
        if roll < 38:
            return GroupCreate(dev(), rng.choice(GROUPS))
        if roll < 39:
            return GroupRename(dev(), rng.choice(GROUPS), rng.choice(GROUPS))
        if roll < 39.7:
            return GroupDelete(dev(), rng.choice(GROUPS))
        if roll < 42:
            return GroupMember(dev(), rng.choice(GROUPS), ref(), rng.random() < 0.7)
        if roll < 42.7:
            return SmartGroup(dev(), rng.choice(GROUPS), rng.choice(QUERIES))
        if roll < 43.4:
            return SetCreate(dev(), rng.choice(SETS))
        if roll < 44.4:
            return SetFile(dev(), rng.choice(GROUPS), rng.choice((*SETS, None)))
        if roll < 44.8:
            return SetDelete(dev(), rng.choice(SETS))
        if roll < 45.5:
            return LibraryRename(dev(), rng.choice(("Lab", "Papers", "Shared")))
        if roll < 49:
            return Attach(dev(), aref(), value().encode() * rng.randint(1, 3))
        if roll < 53:
            return Annotate(dev(), aref(), b"note " + value().encode())
        if roll < 53.5:  # rare: a concurrent removal leaves members differing by design (limitation 2)
            return RemoveDevice(dev(), dev())
        if roll < 54.2:
            total += 1
            return PairNewDevice(dev())
        if roll < 58:
            return FetchFiles(dev(), dev())
        if roll < 60:
            return Scan(dev())
        if relay and 62 <= roll < 72:
            pick = rng.random()
            return AccountReset(dev()) if pick < 0.05 else RelayRestart() if pick < 0.1 else RelaySync(dev())
        if roll < 75:
            return Send(dev(), dev())
        if roll < 89:
            return Deliver(rng.randrange(8))
        if roll < 90.5:
            return Duplicate(rng.randrange(8))
        if roll < 92:
            return Drop(rng.randrange(8))
        if roll < 93.5:
            members = list(range(total))
            rng.shuffle(members)
            cut = rng.randint(1, max(total - 1, 1))
            return Partition((tuple(sorted(members[:cut])), tuple(sorted(members[cut:]))))
        if roll < 95:
            return Heal()
        if roll < 96.5:
            return Skew(dev(), rng.randint(-30, 30))
        if roll < 98:
            return Crash(dev(), rng.randint(1, 60))
        return Restart(dev())

    for _ in range(steps):
        out.append(make())
    return Schedule(seed, n, out, relay)
