"""The schedule of a real-process chaos run, made from the seed alone: which CLI edit on which
device, and which fault from outside, at which second of the run. Nothing here looks at the
processes, so the same seed gives the same schedule step for step (what the processes then do
with it is up to the kernel's timing; the timeline printed on failure shows both).

A step names references by the harness's own index (the n-th `ref add` of the run), never by the
id the CLI printed, so the schedule does not depend on any outcome.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DEVICES = (1, 2, 3)
MACHINES = (1, 2, 3, 4)  # 4 is the relay's
FIELDS = ("title", "journal", "year", "abstract")
ATTACHMENTS = ("paper.pdf", "notes.txt")
GROUPS = ("Reading", "Methods", "To cite")
EDIT_EVERY = 0.6  # seconds between edits, on average (each CLI call takes about that long again)
FAULT_EVERY = 3.5  # seconds between faults, on average


@dataclass(frozen=True)
class Step:
    """One thing to do at `at` seconds into the run. kind is an edit ("add", "edit", ...) or a fault
    ("kill", "restart", "cut", "heal", ...); the other fields are what it needs."""

    at: float
    seq: int
    kind: str
    device: int = 0  # the device (edits, kill/restart of a daemon) or machine (network faults); 4: relay
    ref: int = -1  # the harness's index of the reference
    field: str = ""
    value: str = ""
    size: int = 0  # bytes: of an attachment made or appended

    def describe(self) -> str:
        parts = [self.kind, f"device {self.device}" if self.device else ""]
        if self.ref >= 0:
            parts.append(f"ref #{self.ref}")
        if self.field:
            parts.append(self.field)
        if self.value:
            parts.append(repr(self.value))
        if self.size:
            parts.append(f"{self.size} B")
        return " ".join(p for p in parts if p)


FAULT_KINDS = ("kill", "relay_kill", "relay_restart", "cut", "netem", "rate", "disk_full")
EDIT_KINDS = ("add", "edit", "trash", "restore", "group_add", "group_remove", "attach", "append", "rename")


def plan(seed: int, seconds: float) -> list[Step]:
    """Every step of a run of `seconds` seconds, in the order they are done."""
    rng = random.Random(seed)
    steps: list[tuple[float, str, dict[str, object]]] = []
    refs = 0
    t = 0.0
    # The first references exist before anything else happens, so edits have something to act on.
    for _ in range(3):
        steps.append((t, "add", {"device": rng.choice(DEVICES), "ref": refs, "value": f"Paper {refs}"}))
        refs += 1
    attached: set[tuple[int, str]] = set()
    trashed: set[int] = set()
    while True:
        t += rng.expovariate(1 / EDIT_EVERY)
        if t >= seconds:
            break
        kind = rng.choices(EDIT_KINDS, weights=(14, 36, 5, 5, 7, 3, 8, 14, 3))[0]
        device = rng.choice(DEVICES)
        ref = rng.randrange(refs)
        if kind == "trash":
            trashed.add(ref)
        elif kind == "restore" and trashed:  # restore what was trashed (else it is a no-op)
            ref = sorted(trashed)[rng.randrange(len(trashed))]
            trashed.discard(ref)
        args: dict[str, object] = {"device": device, "ref": ref}
        if kind == "add":
            args.update(ref=refs, value=f"Paper {refs}")
            refs += 1
        elif kind == "edit":
            name = rng.choice(FIELDS)
            value = str(rng.randint(1900, 2030)) if name == "year" else f"{name} {seq_word(rng)}"
            args.update(field=name, value=value)
        elif kind in ("group_add", "group_remove"):
            args.update(value=rng.choice(GROUPS))
        elif kind == "attach":
            name = rng.choice(ATTACHMENTS)
            attached.add((ref, name))
            args.update(field="attachment:" + name, size=rng.randint(1, 64) * 1024, value=f"{rng.getrandbits(64):016x}")
        elif kind == "append":
            if not attached:
                continue
            ref, name = sorted(attached)[rng.randrange(len(attached))]
            args.update(
                ref=ref, field="attachment:" + name, size=rng.randint(64, 4096), value=f"{rng.getrandbits(64):016x}"
            )
        elif kind == "rename":
            args.update(ref=-1, field="library.name", value=f"Library {seq_word(rng)}")
        steps.append((t, kind, args))
    steps += faults(rng, seconds)
    ordered = sorted(steps, key=lambda s: s[0])  # stable: equal times keep the order they were made in
    return [Step(at=round(at, 3), seq=i, kind=kind, **args) for i, (at, kind, args) in enumerate(ordered)]  # type: ignore[arg-type]


def seq_word(rng: random.Random) -> str:
    return "".join(rng.choice("bcdfghjklmnprstvz") + rng.choice("aeiou") for _ in range(3))


def faults(rng: random.Random, seconds: float) -> list[tuple[float, str, dict[str, object]]]:
    """Faults and their ends; at most one of each kind per machine at a time (one qdisc per eth0:
    netem and rate limits take turns), everything over before `seconds`."""
    out: list[tuple[float, str, dict[str, object]]] = []
    busy: dict[tuple[str, int], float] = {}  # (what, machine) -> until when
    t = 1.0
    while True:
        t += rng.expovariate(1 / FAULT_EVERY)
        kind = rng.choices(FAULT_KINDS, weights=(30, 8, 6, 20, 14, 10, 8))[0]
        length = rng.uniform(0.5, 4.0) if kind in ("kill", "relay_kill") else rng.uniform(2.0, 10.0)
        if t >= seconds - 1.0:
            break
        if t + length >= seconds - 1.0:
            continue
        machine = 4 if kind.startswith("relay") else 3 if kind == "disk_full" else rng.choice(MACHINES)
        if kind == "kill":
            machine = rng.choice(DEVICES)
        slot = {"kill": "proc", "relay_kill": "proc", "relay_restart": "proc", "netem": "qdisc", "rate": "qdisc"}
        key = (slot.get(kind, kind), machine)
        if busy.get(key, 0.0) > t:
            continue
        busy[key] = t + length
        if kind == "netem":
            spec = f"delay {rng.randint(5, 200)}ms {rng.randint(0, 80)}ms loss {rng.choice((0, 1, 5, 20, 50))}%"
            out.append((t, "netem", {"device": machine, "value": spec}))
            out.append((t + length, "netem_clear", {"device": machine}))
        elif kind == "rate":
            out.append((t, "rate", {"device": machine, "value": rng.choice(("64kbit", "256kbit", "1mbit"))}))
            out.append((t + length, "rate_clear", {"device": machine}))
        elif kind == "cut":
            out.append((t, "cut", {"device": machine}))
            out.append((t + length, "heal", {"device": machine}))
        elif kind == "disk_full":
            out.append((t, "disk_full", {"device": machine}))
            out.append((t + length, "disk_free", {"device": machine}))
        elif kind == "relay_restart":
            out.append((t, "relay_restart", {"device": 4}))
        else:  # a SIGKILL, restarted after `length`
            out.append((t, "kill", {"device": machine}))
            out.append((t + length, "restart", {"device": machine}))
    return out
