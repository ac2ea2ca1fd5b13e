"""The code against the committed protocol vectors (protocol/vectors/, made by protocol/make_vectors.py).

Every value is re-derived with the real code: keys and ids, canonical bytes, signatures, change sets;
the scenario's change sets are replayed through the real store (sync.receive into empty libraries)
and the tables are compared with the expected state that make_vectors.py computed with the engine's
pure functions. The last test regenerates the vectors and requires byte-identical files.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2psync.crypto.identity import DeviceIdentity, introduction_message, verify
from p2psync.engine import canonical, changesets, merge, ops, registers
from p2psync.errors import InvalidInput
from p2psync.model import attachments, chunking, fields
from p2psync.model.devices import device_id_for, library_id_for, short_id
from p2psync.net import chunks as net_chunks
from p2psync.net import tls
from p2psync.net.protocol import LIBRARY_HEADER, PREFIX, VERSION_HEADER
from p2psync.node import Node
from p2psync.store import sync
from p2psync.store.library import Library, device_add_op
from tests.sync_support import founded, joined

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "protocol"
VECTORS = PROTOCOL / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


SCENARIO = load("scenario.json")
REJECTIONS = load("rejections.json")
CHUNKING = load("chunking.json")


def private_key(seed_hex: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def wire_bytes(item: dict[str, Any]) -> bytes:
    if "wire_runs" in item:
        return "".join(text * count for text, count in item["wire_runs"]).encode("utf-8")
    if "wire_hex" in item:
        return bytes.fromhex(item["wire_hex"])
    return str(item["wire_text"]).encode("utf-8")


def keys_by_device() -> dict[str, Ed25519PrivateKey]:
    return {d["device_id"]: private_key(d["seed_hex"]) for d in load("identity.json")["devices"]}


# --- canonical JSON, identities, introductions -------------------------------------------------


def test_canonical_encoding() -> None:
    vectors = load("canonical.json")
    for case in vectors["valid"]:
        value = json.loads(case["input_json"])
        assert canonical.encode(value).hex() == case["canonical_hex"], case["name"]
        assert canonical.dumps(value) == case["canonical_text"], case["name"]
        assert case["canonical_text"].encode("utf-8").hex() == case["canonical_hex"]
    for case in vectors["invalid"]:
        with pytest.raises(ValueError):
            canonical.encode(canonical.loads(case["input_json"]))


def test_identity_derivations() -> None:
    vectors = load("identity.json")
    for device in vectors["devices"]:
        assert hashlib.sha256(device["seed_input"].encode("ascii")).hexdigest() == device["seed_hex"]
        key = private_key(device["seed_hex"])
        public = public_bytes(key)
        assert public.hex() == device["public_key_hex"]
        assert base64.b64encode(public).decode("ascii") == device["public_key_base64"]
        assert device_id_for(public) == device["device_id"] == DeviceIdentity(key).device_id
        assert short_id(device["device_id"]) == device["short_id"]
    founder = next(d for d in vectors["devices"] if d["name"] == vectors["library"]["founder"])
    assert library_id_for(bytes.fromhex(founder["public_key_hex"])) == vectors["library"]["library_id"]


def test_introductions() -> None:
    vectors = load("introduction.json")
    keys = keys_by_device()
    founder = vectors["founder_op"]
    founder_identity = DeviceIdentity(keys[founder["device"]])
    assert device_add_op(founder_identity, founder["name"], None, None) == founder
    assert canonical.dumps(founder) == vectors["founder_op_canonical_text"]
    for case in vectors["introductions"]:
        new_key, introducer_key = keys[case["device_id"]], keys[case["introducer_id"]]
        public = public_bytes(new_key)
        message = changesets.introduction(case["library"], case["device_id"], public)
        assert message.hex() == case["message_hex"]
        assert introduction_message(case["library"], case["device_id"], public) == message
        assert introducer_key.sign(message).hex() == case["signature_hex"]  # Ed25519 is deterministic
        assert verify(public_bytes(introducer_key), bytes.fromhex(case["signature_hex"]), message)
        op = device_add_op(
            DeviceIdentity.from_public(public), case["op"]["name"], DeviceIdentity(introducer_key), case["library"]
        )
        assert op == case["op"]
        assert ops.check(copy.deepcopy(op)) == op
        assert canonical.dumps(op) == case["op_canonical_text"]


# --- change sets -------------------------------------------------------------------------------------


def test_single_changesets_byte_for_byte() -> None:
    keys = keys_by_device()
    for case in load("changeset.json")["changesets"]:
        entries = [(seq, ts, op) for seq, ts, op in case["entries"]]
        cs = changesets.build(
            case["library"], case["author_id"], case["prev"], case["deps"], entries, keys[case["author_id"]].sign
        )
        assert cs.body_bytes.hex() == case["body_hex"]
        texts = [changesets.entry_item(seq, ts, canonical.encode(op)) for seq, ts, op in entries]
        assembled = changesets.assemble_body(case["library"], case["author_id"], case["prev"], case["deps"], texts)
        assert assembled.hex() == case["body_hex"]  # how the store seals and sends
        assert cs.body_bytes.decode("utf-8") == case["body_text"] == canonical.dumps(case["body"])
        assert changesets.signature_input(case["library"], cs.body_bytes).hex() == case["signature_input_hex"]
        assert cs.signature.hex() == case["signature_hex"]
        assert base64.b64encode(cs.signature).decode("ascii") == case["signature_base64"]
        assert cs.id == case["id"] == hashlib.sha256(bytes.fromhex(case["body_hex"])).hexdigest()
        assert cs.wire().hex() == case["wire_hex"]
        assert cs.wire().decode("utf-8") == case["wire_text"]
        parsed = changesets.parse(bytes.fromhex(case["wire_hex"]), case["library"])
        assert (parsed.id, parsed.author, parsed.first, parsed.last, parsed.prev, parsed.deps) == (
            case["id"],
            case["author_id"],
            case["first"],
            case["last"],
            case["prev"],
            case["deps"],
        )
        assert [list(e) for e in parsed.entries] == case["entries"]


def test_split_limits() -> None:
    for case in load("changeset.json")["split"]:
        lengths = [length for length, count in case["entries"] for _ in range(count)]
        entries = [
            (
                i + 1,
                1,
                {"op": "ref.put", "ref": case["op_template"]["ref"], "fields": {"notes": case["char"] * n}, "seen": {}},
            )
            for i, n in enumerate(lengths)
        ]
        costs = [cost for cost, count in case["entry_costs"] for _ in range(count)]
        assert [len(canonical.encode(e[2])) + 32 for e in entries] == costs, case["name"]
        assert [len(piece) for piece in changesets.split(entries)] == case["pieces"], case["name"]


def split_params() -> list[Any]:
    params = []
    for case in load("changeset.json")["split"]:
        params.append(pytest.param(case, id=case["name"]))
    return params


@pytest.mark.parametrize("case", split_params())
def test_the_store_seals_by_the_split_rule(tmp_path: Path, case: dict[str, Any]) -> None:
    """What sync.seal makes of the same entries: the same pieces, each within MAX_BYTES."""
    library = Library.create(tmp_path / "s", "s")
    try:
        sync.seal(library)  # the founding entry in a change set of its own
        with library.writing() as writer:
            for length, count in case["entries"]:
                for _ in range(count):
                    writer.log(
                        {
                            "op": "ref.put",
                            "ref": case["op_template"]["ref"],
                            "fields": {"notes": case["char"] * length},
                            "seen": {},
                        }
                    )
        sync.seal(library)
        rows = library.db.execute("SELECT first, last FROM changesets WHERE first > 1 ORDER BY first").fetchall()
        assert [last - first + 1 for first, last in rows] == case["pieces"]
        assert all(len(wire) <= changesets.MAX_BYTES for wire in sync.changesets_since(library, {}))
    finally:
        library.close()


def test_limits() -> None:
    limits = load("changeset.json")["limits"]
    assert limits == {
        "MAX_BYTES": changesets.MAX_BYTES,
        "MAX_ENTRIES": changesets.MAX_ENTRIES,
        "TARGET_BYTES": changesets.TARGET_BYTES,
        "MAX_DEPS": changesets.MAX_DEPS,
        "MAX_TS": changesets.MAX_TS,
        "MAX_INT": ops.MAX_INT,
        "MAX_OP_BYTES": ops.MAX_OP_BYTES,
        "MAX_DOTS": ops.MAX_DOTS,
        "MAX_REFS_PER_OP": ops.MAX_REFS_PER_OP,
    }
    assert limits["MAX_TS"] == limits["MAX_INT"] == 2**53


def test_a_writer_logs_no_operation_over_max_op_bytes(tmp_path: Path) -> None:
    """A valid ref.put can exceed MAX_OP_BYTES (here 4 MB of 4-byte characters); it is refused locally."""
    library = Library.create(tmp_path / "w", "w")
    try:
        ref = library.add_reference({"title": "T"})
        with pytest.raises(InvalidInput):
            library.edit_reference(ref, {"notes": "\U0001f600" * fields.MAX_LONG})
        library.edit_reference(ref, {"notes": "\U0001f600" * (ops.MAX_OP_BYTES // 4 - 200)})
    finally:
        library.close()


def test_scenario_changesets_parse_verify_and_rebuild() -> None:
    vectors = SCENARIO
    keys = keys_by_device()
    for name, item in vectors["changesets"].items():
        raw = wire_bytes(item)
        cs = changesets.parse(raw, vectors["library_id"])
        assert cs.id == item["id"], name
        assert (cs.first, cs.last, cs.prev, cs.deps, cs.author) == (
            item["first"],
            item["last"],
            item["prev"],
            item["deps"],
            item["author_id"],
        )
        assert cs.wire() == raw  # canonical on the wire
        key = keys[cs.author]
        assert verify(public_bytes(key), cs.signature, changesets.signature_input(cs.library, cs.body_bytes))
        rebuilt = changesets.build(cs.library, cs.author, cs.prev, cs.deps, cs.entries, key.sign)
        assert rebuilt.wire() == raw, name


# --- the scenario through the real store -------------------------------------------------------------


def store_state(library: Library) -> dict[str, Any]:
    """The replicated tables in the vectors' form (registers unpacked; storage columns left out)."""
    db = library.db
    refs: dict[str, Any] = {}
    for ref_id, data_text, state_text, deleted, conflict in db.execute(
        "SELECT id, data, state, deleted, conflict FROM refs ORDER BY id"
    ):
        data = json.loads(data_text)
        state = registers.unpack(json.loads(state_text), data)
        refs[ref_id] = {
            "registers": {name: sorted(entries) for name, entries in sorted(state.items())},
            "data": {k: v for k, v in data.items() if k != merge.DELETED},
            "deleted": bool(deleted),
            "conflict": bool(conflict),
            "conflicts": None if deleted else library.get_reference(ref_id).get("conflicts", []),
        }
    groups = {
        g: {"name": n, "conflict": bool(c), "registers": {k: sorted(v) for k, v in sorted(json.loads(s).items())}}
        for g, n, c, s in db.execute("SELECT id, name, conflict, state FROM groups ORDER BY id")
    }
    members: dict[str, dict[str, Any]] = {}
    for g, r, dots in db.execute("SELECT group_id, ref_id, dots FROM memberships ORDER BY group_id, ref_id"):
        members.setdefault(g, {})[r] = sorted(json.loads(dots))
    attachments: dict[str, dict[str, Any]] = {}
    for r, n, size, sha, c, s in db.execute(
        "SELECT ref_id, name, size, sha256, conflict, state FROM attachments ORDER BY ref_id, name"
    ):
        attachments.setdefault(r, {})[n] = {
            "size": size,
            "sha256": sha,
            "conflict": bool(c),
            "register": sorted(json.loads(s)),
        }
    devices = {
        d: {"public_key": k, "name": n, "introducer": i, "signature": s, "dot": [a, q]}
        for d, k, n, i, s, q, a in db.execute(
            "SELECT id, public_key, name, introducer, signature, seq, author FROM devices ORDER BY id"
        )
    }
    revocations = dict(db.execute("SELECT device, upto FROM revocations ORDER BY device").fetchall())
    device_names = {
        d: {"name": n, "seq": q} for d, n, q in db.execute("SELECT device, name, seq FROM device_names ORDER BY device")
    }
    return {
        "refs": refs,
        "groups": groups,
        "memberships": members,
        "attachments": attachments,
        "devices": devices,
        "revocations": revocations,
        "device_names": device_names,
    }


def assert_state(library: Library, expected: dict[str, Any], where: str) -> None:
    got = store_state(library)
    assert set(got["refs"]) == set(expected["refs"]), where
    for ref_id, want in expected["refs"].items():
        have = got["refs"][ref_id]
        assert have["registers"] == want["registers"], (where, ref_id)
        assert have["data"] == want["data"], (where, ref_id)
        assert have["deleted"] == want["deleted"], (where, ref_id)
        assert have["conflict"] == bool(want["conflicts"]), (where, ref_id)
        if not want["deleted"]:
            assert have["conflicts"] == want["conflicts"], (where, ref_id)
    assert got["groups"] == {
        g: {"name": v["name"], "conflict": v["conflict"], "registers": v["registers"]}
        for g, v in expected["groups"].items()
    }, where
    assert got["memberships"] == expected["memberships"], where
    assert got["attachments"] == {
        r: {
            n: {
                "size": (v["value"] or {}).get("size"),
                "sha256": (v["value"] or {}).get("sha256"),
                "conflict": v["conflict"],
                "register": v["register"],
            }
            for n, v in items.items()
        }
        for r, items in expected["attachments"].items()
    }, where
    assert got["devices"] == expected["devices"], where
    assert got["revocations"] == expected["revocations"], where
    assert got["device_names"] == expected.get("device_names", {}), where


@pytest.mark.parametrize("order", list(SCENARIO["delivery_orders"]))
def test_scenario_replayed_through_the_store(tmp_path: Path, order: str) -> None:
    """Deliver the change sets in one exchange per stretch between checkpoints; compare at each."""
    wires = {name: wire_bytes(item) for name, item in SCENARIO["changesets"].items()}
    sequence = SCENARIO["delivery_orders"][order]
    stops = {}
    for checkpoint in SCENARIO["checkpoints"]:
        for k in range(1, len(sequence) + 1):
            if set(sequence[:k]) == set(checkpoint["after"]):
                stops[k] = checkpoint
    assert len(sequence) in stops
    library = Library.create(tmp_path / "observer", "observer", found=False, library_id=SCENARIO["library_id"])
    try:
        start = 0
        for stop, checkpoint in sorted(stops.items()):
            batch = sequence[start:stop]
            report = sync.receive(library, [wires[n] for n in batch])
            assert (report.applied, report.rejected, report.waiting) == (len(batch), [], 0), checkpoint["name"]
            assert_state(library, checkpoint["state"], f"{order}: {checkpoint['name']}")
            start = stop
        expected_vv: dict[str, int] = {}
        for item in SCENARIO["changesets"].values():
            expected_vv[item["author_id"]] = max(expected_vv.get(item["author_id"], 0), item["last"])
        assert sync.version_vector(library) == expected_vv
        # forwarded exactly as the authors signed them, in an order a receiver can apply (changesets.md 9)
        sent = list(sync.changesets_since(library, {}))
        assert sorted(sent) == sorted(wires[n] for n in sequence)
        held: dict[str, int] = {}
        for wire in sent:
            cs = changesets.parse(wire, SCENARIO["library_id"])
            assert cs.first == held.get(cs.author, 0) + 1
            assert all(held.get(device, 0) >= seq for device, seq in cs.deps.items())
            held[cs.author] = cs.last
    finally:
        library.close()


# --- operations and registers ------------------------------------------------------------------------


def test_operations() -> None:
    vectors = load("ops.json")
    for case in vectors["valid"]:
        op = copy.deepcopy(case["op"])
        assert ops.check(op) == case["op"], case["name"]
    for case in vectors["invalid"]:
        try:
            ops.check(copy.deepcopy(case["op"]))
        except InvalidInput:
            continue
        pytest.fail(f"ops.check accepted an invalid operation: {case['name']}")


def test_registers_and_reference_view() -> None:
    vectors = load("registers.json")
    for case in vectors["resolve"]:
        resolved = registers.resolve(case["entries"])
        assert (resolved.value, resolved.conflict) == (case["value"], case["conflict"]), case["name"]
    for case in vectors["write"]:
        dot = (case["dot"][0], case["dot"][1])
        result = registers.write(copy.deepcopy(case["entries"]), dot, case["ts"], case["value"], case["seen"])
        assert result == case["result"], case["name"]
    for case in vectors["remove"]:
        assert registers.remove(case["entries"], case["seen"]) == case["result"], case["name"]
    for case in vectors["covered_dots"]:
        assert merge.covered_dots(case["seen"]) == case["result"], case["name"]
    for case in vectors["reference_view"]:
        view = merge.reference_view(case["state"])
        assert (view.data, view.conflicts, view.deleted) == (case["data"], case["conflicts"], case["deleted"]), case[
            "name"
        ]


# --- rejections ----------------------------------------------------------------------------------------


def receiver_from(context: dict[str, Any]) -> changesets.Receiver:
    known = {(author, first): cs_id for author, first, cs_id in context["known_change_sets"]}
    return changesets.Receiver(
        version_vector=context["version_vector"],
        chain_heads=context["chain_heads"],
        member_keys={d: base64.b64decode(k) for d, k in context["member_keys"].items()},
        revoked_upto=context["revoked_upto"],
        known_id=lambda author, first: known.get((author, first)),
        founder_check=lambda key: library_id_for(key) == context["library"],
    )


@pytest.mark.parametrize("case", REJECTIONS["cases"], ids=[c["name"] for c in REJECTIONS["cases"]])
def test_rejection_case(case: dict[str, Any]) -> None:
    context = REJECTIONS["receivers"][case["receiver"]]
    raw = wire_bytes(case)
    expected = case["expected"]
    if expected.get("stage") == "parse":
        with pytest.raises(changesets.ChangeSetRejected) as caught:
            changesets.parse(raw, context["library"])
        assert caught.value.reason == expected["reason"]
        return
    cs = changesets.parse(raw, context["library"])
    if "reason" in expected:
        with pytest.raises(changesets.ChangeSetRejected) as caught:
            changesets.check(cs, receiver_from(context), verify)
        assert caught.value.reason == expected["reason"]
    else:
        assert changesets.check(cs, receiver_from(context), verify) == expected["outcome"]


def test_every_reason_code_has_a_case() -> None:
    reasons = {c["expected"].get("reason") for c in REJECTIONS["cases"]} - {None}
    assert reasons == {
        "malformed",
        "oversized",
        "version",
        "library",
        "chain",
        "gap",
        "fork",
        "schema",
        "signature",
        "unknown_author",
        "revoked",
        "membership",
    }


# Exchanges the reference gets wrong (protocol/changesets.md, "Reference implementation notes").
KNOWN_EXCHANGE_DEFECTS: dict[str, str] = {}


def exchange_params() -> list[Any]:
    params = []
    for exchange in REJECTIONS["exchanges"]:
        reason = KNOWN_EXCHANGE_DEFECTS.get(exchange["name"])
        marks = [pytest.mark.xfail(reason=reason, raises=sqlite3.IntegrityError, strict=True)] if reason else []
        params.append(pytest.param(exchange, id=exchange["name"], marks=marks))
    return params


@pytest.mark.parametrize("exchange", exchange_params())
def test_exchange_through_the_store(tmp_path: Path, exchange: dict[str, Any]) -> None:
    library = Library.create(tmp_path / "x", "x", found=False, library_id=exchange["library_id"])
    try:
        for step in exchange["steps"]:
            report = sync.receive(library, [wire_bytes(item) for item in step["deliver"]])
            got = report.as_dict()
            got["rejected"] = [r["reason"] for r in got["rejected"]]
            assert got == step["report"], step["what"]
            assert sync.version_vector(library) == step["version_vector_after"], step["what"]
    finally:
        library.close()


# --- attachments: chunking and the /chunks endpoint (protocol/attachments.md) -----------------------

_U64 = (1 << 64) - 1
# attachments.md §2.2: SHA-256 of the 256 gear values, 8 bytes big-endian each, in order.
GEAR_TABLE_SHA256 = "9df0a720752a7d211fdebaf39bed01610983756fc340a1cfef41052b7356ae73"


def built_input(pieces: list[dict[str, Any]]) -> bytes:
    """A chunking input from its recipe (chunking.json 'description'), written here from the text."""
    out = bytearray()
    for piece in pieces:
        if "zeros" in piece:
            out += b"\x00" * piece["zeros"]
        elif "hex" in piece:
            out += bytes.fromhex(piece["hex"])
        elif "text" in piece:
            out += piece["text"].encode("utf-8") * piece.get("repeat", 1)
        else:
            label, size, counter = piece["stream"].encode("ascii"), piece["bytes"], 0
            run = bytearray()
            while len(run) < size:
                run += hashlib.sha256(label + counter.to_bytes(4, "big")).digest()
                counter += 1
            out += run[:size]
    return bytes(out)


def gear_by_recipe() -> list[int]:
    return [int.from_bytes(hashlib.md5(bytes([b]) * 64).digest()[:8], "big") for b in range(256)]


def cut_by_the_text(data: bytes, start: int, gear: list[int], mask_s: int, mask_l: int) -> int:
    """attachments.md §2.3, transcribed from the pseudocode."""
    minimum, average, maximum = chunking.MIN_SIZE, chunking.AVG_SIZE, chunking.MAX_SIZE
    n = len(data) - start
    if n <= minimum:
        return n
    center = average
    if n > maximum:
        n = maximum
    elif n < center:
        center = n
    middle, end = center - center % 2, n - n % 2
    h = 0
    for i in range(minimum, end):
        h = (2 * h + gear[data[start + i]]) & _U64
        if h & (mask_s if i < middle else mask_l) == 0:
            return i
    return n


def test_chunking_parameters_are_the_codes() -> None:
    params = CHUNKING["parameters"]
    assert (params["min_size"], params["avg_size"], params["max_size"]) == (
        chunking.MIN_SIZE,
        chunking.AVG_SIZE,
        chunking.MAX_SIZE,
    )
    assert params["normalization_level"] == chunking.NORMALIZATION and chunking.SEED == 0
    assert params["max_chunks"] == chunking.MAX_CHUNKS
    assert params["max_chunks_per_request"] == net_chunks.MAX_CHUNKS_PER_REQUEST
    gear = gear_by_recipe()
    assert params["gear_hex"] == [f"{g:016x}" for g in gear]
    assert hashlib.sha256(b"".join(g.to_bytes(8, "big") for g in gear)).hexdigest() == GEAR_TABLE_SHA256
    mask_s, mask_l = int(params["mask_s_hex"], 16), int(params["mask_l_hex"], 16)
    assert (bin(mask_s).count("1"), bin(mask_l).count("1")) == (16, 14)
    # The reference's chunker (pyfastcdc) derives the same table and masks from the module's parameters.
    from pyfastcdc.py import FastCDC as PurePythonFastCDC

    config = PurePythonFastCDC(
        chunking.AVG_SIZE,
        min_size=chunking.MIN_SIZE,
        max_size=chunking.MAX_SIZE,
        normalized_chunking=chunking.NORMALIZATION,
        seed=chunking.SEED,
    ).config
    assert (config.mask_s, config.mask_l, list(config.gear)) == (mask_s, mask_l, gear)


def test_a_manifest_of_max_chunks_fits_one_operation() -> None:
    """attachments.md §1.2: the largest attachment.put a writer can make is under MAX_OP_BYTES."""
    biggest = {
        "op": ops.ATTACHMENT_PUT,
        "ref": "refaaaaaaaaaaaaa",
        "name": "x" * attachments.MAX_NAME_BYTES,
        "value": {
            "size": chunking.MAX_CHUNKS * chunking.MAX_SIZE,
            "sha256": "0" * 64,
            "chunks": [["0" * 64, chunking.MAX_SIZE]] * chunking.MAX_CHUNKS,
        },
        "seen": [],
    }
    assert ops.check(copy.deepcopy(biggest)) == biggest
    assert len(canonical.encode(biggest)) == 2_736_438 <= ops.MAX_OP_BYTES


@pytest.mark.parametrize("case", CHUNKING["inputs"], ids=[c["name"] for c in CHUNKING["inputs"]])
def test_chunking_input(tmp_path: Path, case: dict[str, Any]) -> None:
    data = built_input(case["pieces"])
    manifest = case["manifest"]
    assert len(data) == manifest["size"] and hashlib.sha256(data).hexdigest() == manifest["sha256"]
    assert chunking.chunk_bytes(data) == manifest["chunks"]
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    assert chunking.manifest_of(path) == manifest
    assert attachments.validate_manifest(copy.deepcopy(manifest)) == manifest
    # The algorithm as the text of attachments.md §2.3 states it gives the same list.
    params = CHUNKING["parameters"]
    gear = [int(g, 16) for g in params["gear_hex"]]
    mask_s, mask_l = int(params["mask_s_hex"], 16), int(params["mask_l_hex"], 16)
    spec, at = [], 0
    while at < len(data):
        length = cut_by_the_text(data, at, gear, mask_s, mask_l)
        spec.append([hashlib.sha256(data[at : at + length]).hexdigest(), length])
        at += length
    assert spec == manifest["chunks"]
    lengths = [length for _, length in manifest["chunks"]]
    assert all(chunking.MIN_SIZE <= n <= chunking.MAX_SIZE for n in lengths[:-1])
    assert all(1 <= n <= chunking.MAX_SIZE for n in lengths[-1:])
    if "shared_with" in case:
        shared = case["shared_with"]
        base = next(c for c in CHUNKING["inputs"] if c["name"] == shared["input"])
        known = {name for name, _ in base["manifest"]["chunks"]}
        common = [c for c in manifest["chunks"] if c[0] in known]
        assert shared == {
            "input": base["name"],
            "chunks": len(common),
            "bytes": sum(n for _, n in common),
            "new_chunks": len(manifest["chunks"]) - len(common),
            "new_bytes": manifest["size"] - sum(n for _, n in common),
        }


def request_body(case: dict[str, Any]) -> bytes:
    if "body_runs" in case:
        return "".join(text * count for text, count in case["body_runs"]).encode("utf-8")
    return str(case["body_text"]).encode("utf-8")


def expected_response(case: dict[str, Any]) -> bytes:
    if "response_hex_runs" in case:
        return bytes.fromhex("".join(text * count for text, count in case["response_hex_runs"]))
    return bytes.fromhex(case["response_hex"])


def records(body: bytes) -> list[bytes | None]:
    """attachments.md §4.2: u32be(length) || bytes per name; length 0: not held."""
    out: list[bytes | None] = []
    at = 0
    while at < len(body):
        length = int.from_bytes(body[at : at + 4], "big")
        out.append(body[at + 4 : at + 4 + length] if length else None)
        at += 4 + length
    assert at == len(body)
    return out


def test_chunks_endpoint_answers_every_request_case(tmp_path: Path) -> None:
    """A real peer server (mutual TLS on 127.0.0.1) holding exactly server_chunks, asked by a member."""
    held = {name: bytes.fromhex(data) for name, data in CHUNKING["server_chunks"].items()}
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    ref = a.add_reference({"title": "Holds the vector chunks"})
    for name, data in held.items():
        source = tmp_path / f"{name[:8]}.bin"
        source.write_bytes(data)  # shorter than MIN_SIZE: one chunk, of that name
        a.attach(ref, source)
    assert {r[0] for r in a.db.execute("SELECT chunk FROM chunk_index")} == set(held)
    server_key, library_id = a.identity().public_bytes, a.library_id
    cert, key = tls.certificate_files(b.identity(), tmp_path / "b" / "device.key", tmp_path / "b")
    a.close()
    b.close()

    async def ask() -> dict[str, Any]:
        server = Node(tmp_path / "a")
        port = await server.serve("127.0.0.1", 0)
        url = f"https://127.0.0.1:{port}{PREFIX}/chunks"
        context = tls.client_context(cert, key, lambda shown: shown == server_key)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
        headers = {VERSION_HEADER: "1", LIBRARY_HEADER: library_id, "Content-Type": "application/json"}
        out: dict[str, Any] = {}
        try:
            for case in CHUNKING["requests"]:
                async with session.post(url, data=request_body(case), headers=headers) as r:
                    out[case["name"]] = (r.status, r.headers.get("Content-Type", ""), await r.read())
            async with session.get(url, headers=headers) as r:
                out["GET"] = (r.status, r.headers.get("Content-Type", ""), await r.read())

            async def chunked() -> AsyncIterator[bytes]:
                yield request_body(CHUNKING["requests"][0])

            async with session.post(url, data=chunked(), headers=headers) as r:
                out["no Content-Length"] = (r.status, r.headers.get("Content-Type", ""), await r.read())
        finally:
            await session.close()
            await server.close()
        return out

    answers = asyncio.run(ask())
    for case in CHUNKING["requests"]:
        status, content_type, body = answers[case["name"]]
        assert status == case["status"], case["name"]
        if status == 200:
            assert content_type == "application/x-p2psync-chunks", case["name"]
            assert body == expected_response(case), case["name"]
            names = json.loads(request_body(case))["chunks"]
            assert request_body(case) == canonical.encode({"chunks": names})  # what the reference client sends
            assert records(body) == [held.get(name) for name in names], case["name"]
        else:
            assert content_type.startswith("application/json"), case["name"]
            assert json.loads(body)["error"] == case["error"], case["name"]
    assert (answers["GET"][0], json.loads(answers["GET"][2])["error"]) == (405, "method")
    too_large = answers["no Content-Length"]
    assert (too_large[0], json.loads(too_large[2])["error"]) == (413, "too_large")


# --- schemas and the generator -------------------------------------------------------------------------

# Invalid operations that no JSON Schema can refuse: they need a hash, a sum, a byte count or a
# cross-reference between keys, or they tell 1.0 from 1, which JSON Schema treats as the same integer
# (checked by ops.check, see protocol/merge.md).
BEYOND_SCHEMA = {
    "device.add whose id does not match its key",
    "chunks not adding up to the size",
    "attachment name of 256 UTF-8 bytes",
    "seen names a field the op does not write",
    "group.put seen naming a field it does not set",
    "added written with a fraction (1.0)",
    "dot with sequence written 1.0",
}


# Parse-stage rejections that the change-set schema cannot see: a relation between two values (the
# causality rule P17 among them), the receiving library's id, 1.0 written for the integer 1, or a lone
# surrogate (JSON Schema validates code points, which a decoded "\ud800" is).
BEYOND_CHANGESET_SCHEMA = {
    "another library",
    "sequence range reversed",
    "deps name the author",
    "entries do not match the range",
    "entry sequence out of order",
    "protocol version 1.0 (not the integer 1)",
    "entry number written 1.0",
    "a field holding text that is not Unicode (an escaped lone surrogate)",
    "seen names an entry of another device that deps do not cover",
    "seen names one entry past deps",
    "seen names the entry itself",
    "group.delete members name an entry that deps do not cover",
}


def load_schema(name: str) -> Any:
    return json.loads((PROTOCOL / "schemas" / name).read_text(encoding="utf-8"))


def test_op_schema_follows_the_field_catalogue() -> None:
    op_schema = load_schema("op.schema.json")
    defs = op_schema["$defs"]
    assert [d["$ref"].split("/")[-1] for d in op_schema["oneOf"]] == list(ops.KINDS)
    assert set(defs["ref.put"]["properties"]["fields"]["properties"]) == set(fields.FIELDS) | fields.SYSTEM_FIELDS
    assert defs["type"]["enum"] == list(fields.REFERENCE_TYPES)
    assert defs["text"]["maxLength"] == fields.MAX_TEXT and defs["long"]["maxLength"] == fields.MAX_LONG
    assert defs["people"]["maxItems"] == fields.MAX_PEOPLE and defs["list"]["maxItems"] == fields.MAX_LIST_ITEMS
    assert defs["dots"]["maxItems"] == ops.MAX_DOTS
    assert defs["device.add"]["properties"]["name"]["maxLength"] == ops.MAX_DEVICE_NAME
    assert defs["device.name"]["properties"]["name"]["maxLength"] == ops.MAX_DEVICE_NAME
    cs_body = load_schema("changeset.schema.json")["properties"]["body"]["properties"]
    assert cs_body["entries"]["maxItems"] == changesets.MAX_ENTRIES
    assert cs_body["deps"]["maxProperties"] == changesets.MAX_DEPS
    assert cs_body["v"]["const"] == changesets.VERSION


def test_vectors_match_the_schemas() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    op_schema = load_schema("op.schema.json")
    cs_schema = load_schema("changeset.schema.json")
    registry = referencing.Registry().with_resources(
        [(s["$id"], referencing.Resource.from_contents(s)) for s in (op_schema, cs_schema)]
    )
    op_validator = jsonschema.Draft202012Validator(op_schema, registry=registry)
    cs_validator = jsonschema.Draft202012Validator(cs_schema, registry=registry)
    jsonschema.Draft202012Validator.check_schema(op_schema)
    jsonschema.Draft202012Validator.check_schema(cs_schema)
    for item in load("scenario.json")["changesets"].values():
        cs_validator.validate(json.loads(wire_bytes(item)))
    for item in load("changeset.json")["changesets"]:
        cs_validator.validate(json.loads(item["wire_text"]))
    ops_vectors = load("ops.json")
    for case in ops_vectors["valid"]:
        op_validator.validate(case["op"])
    for case in ops_vectors["invalid"]:
        assert op_validator.is_valid(case["op"]) == (case["name"] in BEYOND_SCHEMA), case["name"]
    for case in REJECTIONS["cases"]:
        try:
            value = json.loads(wire_bytes(case))
        except (ValueError, RecursionError):
            continue  # not JSON at all, or nested deeper than Python's parser goes
        parse_stage = case["expected"].get("stage") == "parse"
        if parse_stage and case["name"] not in BEYOND_CHANGESET_SCHEMA:
            assert not cs_validator.is_valid(value), case["name"]
        elif not parse_stage:
            assert cs_validator.is_valid(value), case["name"]


def test_generator_reproduces_the_committed_vectors(tmp_path: Path) -> None:
    out = tmp_path / "vectors"
    result = subprocess.run(
        [sys.executable, str(PROTOCOL / "make_vectors.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert len(result.stdout.splitlines()) == 1 and not result.stderr
    committed = sorted(p.name for p in VECTORS.iterdir())
    assert sorted(p.name for p in out.iterdir()) == committed
    for name in committed:
        assert (out / name).read_bytes() == (VECTORS / name).read_bytes(), name
