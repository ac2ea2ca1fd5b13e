"""Vectors (e): the three-device scenario (A founds, introduces B and C; concurrent edits, a
resolution, a revocation), its change sets, delivery orders and checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from vectors_model import rules
from vectors_model.changesets import ChangeSet
from vectors_model.replica import Replica, model_receive, sync
from vectors_model.spec import (
    LIB,
    NAMES,
    RA,
    RB,
    RC,
    RD,
    T0,
    A,
    B,
    C,
    G,
    H,
    b64,
    device_add,
    seed,
    signature_input,
)


@dataclass
class Scenario:
    replicas: dict[str, Replica]
    sets: dict[str, ChangeSet]  # "A1" -> change set, in the order they were sealed
    order: list[str]
    checkpoints: list[dict[str, Any]]
    story: list[dict[str, Any]]


MANIFEST_1 = {
    "size": 300_000,
    "sha256": hashlib.sha256(b"p2psync vectors: paper.pdf version 1").hexdigest(),
    "chunks": [
        [hashlib.sha256(b"p2psync vectors: paper.pdf chunk 1").hexdigest(), 130_000],
        [hashlib.sha256(b"p2psync vectors: paper.pdf chunk 2").hexdigest(), 70_000],
        [hashlib.sha256(b"p2psync vectors: paper.pdf chunk 3").hexdigest(), 100_000],
    ],
}
MANIFEST_2 = {"size": 310_000, "sha256": hashlib.sha256(b"p2psync vectors: paper.pdf version 2").hexdigest()}


def run_scenario() -> Scenario:
    a, b, c = Replica(A), Replica(B), Replica(C)
    replicas = {"A": a, "B": b, "C": c}
    sealed: list[ChangeSet] = []
    story: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []

    def note(text: str) -> None:
        story.append({"step": len(story) + 1, "what": text})

    def do_sync(x: Replica, y: Replica) -> None:
        before = {(cs.author, cs.first) for r in (x, y) for cs in r.held}
        sync(x, y)
        for r in (x, y):
            for cs in r.held:
                if r.device is not None and cs.author == r.device.id and (cs.author, cs.first) not in before:
                    sealed.append(cs)
                    before.add((cs.author, cs.first))
        _number_chains(sealed)

    # Round 1: A founds the library and introduces B and C; B and C receive the membership.
    a.log(T0, device_add(A, None))
    a.log(T0 + 10, device_add(B, A))
    a.log(T0 + 20, device_add(C, A))
    note("A founds the library (device.add of itself, no introducer) and introduces B and C.")
    do_sync(a, b)
    do_sync(a, c)
    note("sync A-B, sync A-C: A seals A1 (seq 1-3); B and C receive it.")

    # Round 2: A adds references, a group with two members and an attachment.
    w = T0 + 60_000
    a.add_ref(
        w,
        RA,
        {
            "type": "journal_article",
            "title": "Neuronal plasticity",
            "authors": [{"family": "Müller", "given": "Jörg"}, {"family": "Smith", "given": "Ann"}],
            "year": "2021",
            "journal": "Journal of Neuroscience",
            "doi": "10.1523/jneurosci.0001-21.2021",
            "keywords": ["plasticity", "synapse"],
        },
    )
    a.add_ref(
        w + 1,
        RB,
        {
            "type": "book",
            "title": "Deep learning",
            "year": "2016",
            "publisher": "MIT Press",
            "authors": [{"family": "Goodfellow", "given": "Ian"}],
        },
    )
    a.add_ref(
        w + 2,
        RC,
        {
            "type": "report",
            "title": "World health statistics 2020",
            "authors": [{"literal": "World Health Organization"}],
            "year": "2020",
        },
    )
    a.add_ref(w + 3, RD, {"type": "generic", "title": "Old draft"})
    a.create_group(w + 4, G, "Reading list")
    a.add_members(w + 5, G, [RA, RB, RC, RD])
    a.attach(w + 6, RA, "paper.pdf", MANIFEST_1)
    note("A adds references RA, RB, RC, RD, creates group G 'Reading list' with all four, attaches paper.pdf to RA.")
    do_sync(a, b)
    do_sync(a, c)
    note("sync A-B, sync A-C: A seals A2 (seq 4-10, prev = id(A1)); B and C receive it.")

    # Round 3: concurrent edits on all three machines (no sync in between).
    w = T0 + 120_000
    b.edit(w, RA, {"title": "Neuronal plasticity in vivo"})
    b.edit(w + 1, RB, {"year": "2017"})
    b.edit(w + 2, RC, {"notes": "Check against the 2021 edition."})
    b.remove_members(w + 3, G, [RB])
    b.add_members(w + 4, G, [RB])
    b.attach(w + 5, RA, "paper.pdf", MANIFEST_2)
    note(
        "B: RA.title = 'Neuronal plasticity in vivo'; RB.year = '2017'; RC.notes set; removes RB from G and adds it "
        "back; replaces RA's paper.pdf (seen A's version)."
    )
    c.edit(w, RA, {"title": "Neuronal Plasticity"})
    c.edit(w + 1, RB, {"edition": "2nd"})
    c.remove_members(w + 2, G, [RB])
    c.rename_group(w + 3, G, "To read")
    c.edit(w + 4, RD, {"trashed": True})
    note(
        "C (same moment): RA.title = 'Neuronal Plasticity' (same timestamp as B's); RB.edition = '2nd'; removes RB "
        "from G; renames G 'To read'; moves RD to the trash."
    )
    a.create_group(w, H, "Temp")
    a.add_members(w + 1, H, [RB])
    a.edit(w + 2, RC, {"trashed": True})
    a.delete_ref(w + 3, RC)
    note(
        "A: creates group H 'Temp' with RB; moves RC to the trash and empties the trash (ref.delete RC: only a mark; "
        "RC's membership of G stays)."
    )
    do_sync(a, b)
    do_sync(a, c)
    do_sync(a, b)
    note("sync A-B, A-C, A-B: A3, B1 and C1 reach everyone.")
    checkpoints.append({"name": "after concurrent edits", "after": [cs_name(cs) for cs in sealed]})
    _check_converged(replicas)
    checkpoints[-1]["state"] = a.world.export()

    # Round 4: B keeps RC (resolves the delete-vs-edit conflict) and deletes H; C empties its trash.
    w = T0 + 180_000
    assert rules.reference_view(b.world.refs[RC]).conflicts == [rules.DELETED]
    keep = {
        "op": rules.REF_PUT,
        "ref": RC,
        "fields": {rules.DELETED: None},
        "seen": {rules.DELETED: rules.dots(b.world.refs[RC][rules.DELETED])},
    }
    b.log(w, keep)
    b.delete_group(w + 1, H)
    note(
        "B resolves RC's delete-vs-edit conflict by keeping it (ref.put deleted = null over the delete): RC is back "
        "with its membership of G. B deletes group H."
    )
    c.delete_ref(w, RD)
    note("C empties its trash: ref.delete RD. RD's membership of G stays in the state, hidden while RD is deleted.")
    do_sync(a, b)
    do_sync(a, c)
    do_sync(a, b)
    note("sync A-B, A-C, A-B: B2 and C2 reach everyone.")

    # Round 5: A removes C from the library; B renames itself twice, the later name wins.
    a.revoke(T0 + 240_000, C)
    note("A revokes C: device.revoke with upto = the last sequence of C that A holds.")
    b.log(T0 + 240_000, {"op": rules.DEVICE_NAME, "name": "laptop-b (old)"})
    note("B renames itself: device.name 'laptop-b (old)'.")
    do_sync(a, b)
    do_sync(a, c)
    note("sync A-B, A-C: A4 and B's rename reach everyone.")
    b.log(T0 + 250_000, {"op": rules.DEVICE_NAME, "name": "Ana's laptop"})
    note("B renames itself again: device.name 'Ana's laptop' (a larger seq of B: it replaces the first).")
    do_sync(a, b)
    do_sync(a, c)
    note("sync A-B, A-C: B's second name reaches everyone.")
    _check_converged(replicas)
    final = a.world
    assert not rules.reference_view(final.refs[RC]).deleted and (G, RC) in final.members
    assert rules.reference_view(final.refs[RD]).deleted and (G, RD) in final.members
    checkpoints.append({"name": "final", "after": [cs_name(cs) for cs in sealed], "state": final.export()})
    sets = {cs_name(cs): cs for cs in sealed}
    return Scenario(replicas, sets, list(sets), checkpoints, story)


def cs_name(cs: ChangeSet) -> str:
    """A1, A2, ... : the author's name and the change set's position in its chain."""
    return f"{NAMES[cs.author]}{chain_positions[cs.id]}"


chain_positions: dict[str, int] = {}


def _number_chains(sets: list[ChangeSet]) -> None:
    counts: dict[str, int] = {}
    for cs in sets:
        counts[cs.author] = counts.get(cs.author, 0) + 1
        chain_positions[cs.id] = counts[cs.author]


def _check_converged(replicas: dict[str, Replica]) -> None:
    states = [json.dumps(r.world.export(), sort_keys=True) for r in replicas.values()]
    if len(set(states)) != 1:
        raise SystemExit("the scenario's replicas did not converge")


def changeset_record(cs: ChangeSet, detailed: bool = False) -> dict[str, Any]:
    record: dict[str, Any] = {
        "author": NAMES[cs.author],
        "author_id": cs.author,
        "first": cs.first,
        "last": cs.last,
        "prev": cs.prev,
        "deps": cs.deps,
        "id": cs.id,
        "wire_text": cs.wire().decode("utf-8"),
    }
    if detailed:
        body = json.loads(cs.body_bytes)
        record.update(
            {
                "library": cs.library,
                "entries": [list(e) for e in cs.entries],
                "body": body,
                "body_text": cs.body_bytes.decode("utf-8"),
                "body_hex": cs.body_bytes.hex(),
                "signature_input_hex": signature_input(cs.library, cs.body_bytes).hex(),
                "signature_hex": cs.signature.hex(),
                "signature_base64": b64(cs.signature),
                "wire_hex": cs.wire().hex(),
            }
        )
    return record


def scenario_vectors(sc: Scenario) -> dict[str, Any]:
    early = ["A1", "B1", "C1", *[n for n in sc.order if n not in ("A1", "B1", "C1")]]
    replica = Replica(None)
    report = model_receive(replica, [sc.sets[n].wire() for n in early])
    assert report["applied"] == len(early) and report["waiting"] == 0, report
    if json.dumps(replica.world.export(), sort_keys=True) != json.dumps(sc.checkpoints[-1]["state"], sort_keys=True):
        raise SystemExit("another delivery order gave another state")
    return {
        "description": "Three devices: A founds the library and introduces B and C; concurrent edits; a "
        "resolution; a revocation. Deliver the change sets (wire_text encoded as UTF-8) to an empty library of "
        "library_id in one of the delivery orders (each is a single exchange); after the change sets listed in a "
        "checkpoint the library must hold exactly that checkpoint's state.",
        "library_id": LIB,
        "devices": {
            name: {"device_id": dev.id, "seed_hex": seed(name).hex()} for name, dev in (("A", A), ("B", B), ("C", C))
        },
        "story": sc.story,
        "changesets": {name: changeset_record(cs) for name, cs in sc.sets.items()},
        "delivery_orders": {"as sealed": sc.order, "B1 and C1 before A2 (they wait for it)": early},
        "checkpoints": sc.checkpoints,
    }
