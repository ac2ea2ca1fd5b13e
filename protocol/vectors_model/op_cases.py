"""Vectors: valid and invalid operations (protocol/changesets.md, the operation schema)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from vectors_model import op_schema, rules
from vectors_model.scenario import (
    MANIFEST_1,
)
from vectors_model.spec import (
    RA,
    RB,
    T0,
    A,
    B,
    C,
    G,
    S,
    b64,
    device_add,
)
from vectors_model.wires import (
    non_canonical_b64,
)

# --- operations and registers -----------------------------------------------------------------------


def op_vectors() -> dict[str, Any]:
    dot = [A.id, 4]
    rp = {"op": rules.REF_PUT, "ref": RA, "seen": {}}
    digest = hashlib.sha256(b"x").hexdigest()
    valid: list[tuple[str, dict[str, Any]]] = [
        (
            "ref.put: a new reference",
            rp
            | {
                "fields": {
                    "type": "journal_article",
                    "title": "Neuronal plasticity",
                    "short_title": "Plasticity",
                    "authors": [{"family": "Müller", "given": "Jörg"}, {"literal": "World Health Organization"}],
                    "editors": [{"family": "Curie"}],
                    "year": "2021a",
                    "date": "2021-02-30",
                    "accessed": "2024-01-31",
                    "doi": "10.1000/XYZ",
                    "abstract": "First line.\n\n  Indented second paragraph.",
                    "keywords": ["a b", "c"],
                    "custom8": "x",
                    "added": T0,
                }
            },
        ),
        ("ref.put: clear a field, having seen its value", rp | {"fields": {"title": None}, "seen": {"title": [dot]}}),
        ("ref.put: trash", rp | {"fields": {"trashed": True}}),
        ("ref.put: restore from the trash", rp | {"fields": {"trashed": None}, "seen": {"trashed": [dot]}}),
        (
            "ref.put: keep a deleted reference (resolution)",
            rp | {"fields": {"deleted": None}, "seen": {"deleted": [dot]}},
        ),
        ("ref.put: years", rp | {"fields": {"year": "in press"}}),
        ("ref.put: year case kept", rp | {"fields": {"year": "N.D."}}),
        ("ref.put: date year-month", rp | {"fields": {"date": "2021-02"}}),
        ("ref.put: long text keeps inner white space and a lone CR", rp | {"fields": {"notes": "a\r b\n\n\tc"}}),
        (
            "ref.put: the largest integers, 2^53, in added and in a dot",
            rp | {"fields": {"title": "T", "added": rules.MAX_INT}, "seen": {"title": [[B.id, rules.MAX_INT]]}},
        ),
        (
            "ref.delete (only a mark: no members or attachments)",
            {"op": rules.REF_DELETE, "ref": RA, "seen": {"title": [dot], "deleted": [[B.id, 2]]}},
        ),
        ("ref.delete of an unknown reference", {"op": rules.REF_DELETE, "ref": RA, "seen": {}}),
        ("group.put", {"op": rules.GROUP_PUT, "group": G, "fields": {"name": "Reading list"}, "seen": {"name": [dot]}}),
        ("group.delete", {"op": rules.GROUP_DELETE, "group": G, "seen": {"name": [dot]}, "members": {RA: [dot]}}),
        ("member.add", {"op": rules.MEMBER_ADD, "group": G, "refs": [RA, RB]}),
        ("member.remove", {"op": rules.MEMBER_REMOVE, "group": G, "seen": {RA: [dot]}}),
        ("member.remove of nothing", {"op": rules.MEMBER_REMOVE, "group": G, "seen": {}}),
        (
            "attachment.put with chunks",
            {"op": rules.ATTACHMENT_PUT, "ref": RA, "name": "paper.pdf", "value": MANIFEST_1, "seen": []},
        ),
        (
            "attachment.put of an empty file",
            {
                "op": rules.ATTACHMENT_PUT,
                "ref": RA,
                "name": "empty.txt",
                "value": {"size": 0, "sha256": hashlib.sha256(b"").hexdigest(), "chunks": []},
                "seen": [],
            },
        ),
        (
            "attachment.put removing",
            {"op": rules.ATTACHMENT_PUT, "ref": RA, "name": "Ünïcode name.pdf", "value": None, "seen": [dot]},
        ),
        (
            "attachment.put whose name holds .p2psync, not at its start",
            {"op": rules.ATTACHMENT_PUT, "ref": RA, "name": "notes.p2psync-versions", "value": None, "seen": []},
        ),
        ("device.add: founder", device_add(A, None)),
        ("device.add: introduced", device_add(B, A)),
        ("device.revoke", {"op": rules.DEVICE_REVOKE, "device": C.id, "upto": 0}),
        ("device.revoke with upto 2^53", {"op": rules.DEVICE_REVOKE, "device": C.id, "upto": rules.MAX_INT}),
        ("device.name", {"op": rules.DEVICE_NAME, "name": "Ana's laptop"}),
        ("device.name of one character", {"op": rules.DEVICE_NAME, "name": "x"}),
        ("device.name of 100 characters, spaces inside", {"op": rules.DEVICE_NAME, "name": "a" + " " * 98 + "b"}),
        ("device.name in another script", {"op": rules.DEVICE_NAME, "name": "Λάπτοπ της Άννας"}),
        ("device.name with a no-break space at the end", {"op": rules.DEVICE_NAME, "name": "lab\u00a0"}),
        (
            "group.put: a smart group, filed in a set",
            {
                "op": rules.GROUP_PUT,
                "group": G,
                "fields": {"name": "Neuro", "query": "neur cortex", "set": S},
                "seen": {},
            },
        ),
        (
            "group.put: a smart group's rename writes its query again",
            {
                "op": rules.GROUP_PUT,
                "group": G,
                "fields": {"name": "Brain", "query": "neur cortex"},
                "seen": {"name": [dot], "query": [dot]},
            },
        ),
        (
            "group.put: a query of 500 characters",
            {"op": rules.GROUP_PUT, "group": G, "fields": {"query": "q" * 500}, "seen": {}},
        ),
        (
            "group.put: a query with quotes",
            {"op": rules.GROUP_PUT, "group": G, "fields": {"query": 'say "hi"'}, "seen": {}},
        ),
        ("group.put: move to a set", {"op": rules.GROUP_PUT, "group": G, "fields": {"set": S}, "seen": {"set": [dot]}}),
        (
            "group.put: out of its set",
            {"op": rules.GROUP_PUT, "group": G, "fields": {"set": None}, "seen": {"set": [dot]}},
        ),
        (
            "group.delete of a smart group in a set",
            {
                "op": rules.GROUP_DELETE,
                "group": G,
                "seen": {"name": [dot], "query": [dot], "set": [dot]},
                "members": {},
            },
        ),
        ("groupset.put", {"op": rules.GROUPSET_PUT, "set": S, "fields": {"name": "Projects"}, "seen": {"name": [dot]}}),
        ("groupset.delete", {"op": rules.GROUPSET_DELETE, "set": S, "seen": {"name": [dot]}}),
        ("groupset.delete of nothing", {"op": rules.GROUPSET_DELETE, "set": S, "seen": {}}),
        ("library.name", {"op": rules.LIBRARY_NAME, "name": "Ana's library", "seen": [dot]}),
        ("library.name, the first", {"op": rules.LIBRARY_NAME, "name": "Βιβλιοθήκη", "seen": []}),
    ]
    invalid: list[tuple[str, Any]] = [
        ("not an object", ["ref.put"]),
        ("unknown kind", {"op": "ref.move", "ref": RA}),
        ("a missing key", {"op": rules.REF_PUT, "ref": RA, "fields": {"title": "T"}}),
        ("an extra key", rp | {"fields": {"title": "T"}, "ts": 1}),
        ("id with upper case", rp | {"ref": RA.upper(), "fields": {"title": "T"}}),
        ("id of 15 characters", rp | {"ref": RA[:15], "fields": {"title": "T"}}),
        ("id with 0, 1, 8 or 9", rp | {"ref": "refaaaaaaaaaaaa1", "fields": {"title": "T"}}),
        ("id with a trailing newline", rp | {"ref": RA + "\n", "fields": {"title": "T"}}),
        ("ref.put without fields", rp | {"fields": {}}),
        ("unknown field", rp | {"fields": {"colour": "red"}}),
        ("text with leading space", rp | {"fields": {"title": " T"}}),
        ("text with two spaces", rp | {"fields": {"title": "a  b"}}),
        ("text with a tab", rp | {"fields": {"title": "a\tb"}}),
        ("text with a no-break space", rp | {"fields": {"title": "a\u00a0b"}}),
        ("empty text (the normal form is null)", rp | {"fields": {"title": ""}}),
        ("text of 4001 characters", rp | {"fields": {"title": "x" * 4001}}),
        ("integer for a text field", rp | {"fields": {"volume": 12}}),
        ("long text with CR LF", rp | {"fields": {"abstract": "a\r\nb"}}),
        ("long text with a trailing newline", rp | {"fields": {"abstract": "a\n"}}),
        ("people as a string", rp | {"fields": {"authors": "Curie, Marie"}}),
        ("person as a string", rp | {"fields": {"authors": ["Curie, Marie"]}}),
        ("empty people list (the normal form is null)", rp | {"fields": {"authors": []}}),
        ("person with an empty given name", rp | {"fields": {"authors": [{"family": "Curie", "given": ""}]}}),
        ("person without a family name", rp | {"fields": {"authors": [{"given": "Marie"}]}}),
        ("person with both literal and family", rp | {"fields": {"authors": [{"literal": "X", "family": "Y"}]}}),
        ("keywords with a duplicate", rp | {"fields": {"keywords": ["a", "a"]}}),
        ("keywords with an empty item", rp | {"fields": {"keywords": ["a", ""]}}),
        ("year of five digits", rp | {"fields": {"year": "12345"}}),
        ("year with two letters", rp | {"fields": {"year": "2021ab"}}),
        ("year in Arabic-Indic digits", rp | {"fields": {"year": "\u0662\u0660\u0662\u0661"}}),
        ("year with a Kelvin sign (U+212A) for a letter", rp | {"fields": {"year": "2021\u212a"}}),
        ("date with month 13", rp | {"fields": {"date": "2021-13"}}),
        ("date with one-digit month", rp | {"fields": {"date": "2021-1"}}),
        ("date in full-width digits", rp | {"fields": {"date": "\uff12\uff10\uff12\uff11"}}),
        ("type not in normal form", rp | {"fields": {"type": "Journal Article"}}),
        ("type cleared", rp | {"fields": {"type": None}}),
        ("DOI with its URL prefix", rp | {"fields": {"doi": "https://doi.org/10.1000/xyz"}}),
        ("DOI not starting 10.", rp | {"fields": {"doi": "11.1000/xyz"}}),
        ("added negative", rp | {"fields": {"added": -1}}),
        ("added as text", rp | {"fields": {"added": "1"}}),
        ("added as a boolean", rp | {"fields": {"added": True}}),
        ("added written with a fraction (1.0)", rp | {"fields": {"added": 1.0}}),
        ("added above 2^53", rp | {"fields": {"added": rules.MAX_INT + 1}}),
        ("trashed false", rp | {"fields": {"trashed": False}}),
        ("trashed 1", rp | {"fields": {"trashed": 1}}),
        ("deleted set by ref.put", rp | {"fields": {"deleted": []}}),
        ("seen names a field the op does not write", rp | {"fields": {"title": "T"}, "seen": {"year": [dot]}}),
        ("dot with sequence 0", rp | {"fields": {"title": "T"}, "seen": {"title": [[A.id, 0]]}}),
        ("dot with an empty device", rp | {"fields": {"title": "T"}, "seen": {"title": [["", 1]]}}),
        ("dot with a device that is not a device id", rp | {"fields": {"title": "T"}, "seen": {"title": [["x", 1]]}}),
        ("dot with a lower-case device id", rp | {"fields": {"title": "T"}, "seen": {"title": [[A.id.lower(), 1]]}}),
        (
            "dot with a device id and a trailing newline",
            rp | {"fields": {"title": "T"}, "seen": {"title": [[A.id + "\n", 1]]}},
        ),
        (
            "dot with sequence above 2^53",
            rp | {"fields": {"title": "T"}, "seen": {"title": [[A.id, rules.MAX_INT + 1]]}},
        ),
        ("dot with sequence written 1.0", rp | {"fields": {"title": "T"}, "seen": {"title": [[A.id, 1.0]]}}),
        ("dot as an object", rp | {"fields": {"title": "T"}, "seen": {"title": [{"device": A.id, "seq": 1}]}}),
        ("ref.delete seen naming an unknown field", {"op": rules.REF_DELETE, "ref": RA, "seen": {"colour": [dot]}}),
        (
            "ref.delete with members and attachments (an earlier draft)",
            {"op": rules.REF_DELETE, "ref": RA, "seen": {}, "members": {G: [dot]}, "attachments": {}},
        ),
        (
            "group.put with another field",
            {"op": rules.GROUP_PUT, "group": G, "fields": {"name": "X", "colour": "red"}, "seen": {}},
        ),
        (
            "group name not in normal form",
            {"op": rules.GROUP_PUT, "group": G, "fields": {"name": "To  read"}, "seen": {}},
        ),
        (
            "group name of 201 characters",
            {"op": rules.GROUP_PUT, "group": G, "fields": {"name": "x" * 201}, "seen": {}},
        ),
        ("group name null", {"op": rules.GROUP_PUT, "group": G, "fields": {"name": None}, "seen": {}}),
        ("member.add of nothing", {"op": rules.MEMBER_ADD, "group": G, "refs": []}),
        ("member.add naming a reference twice", {"op": rules.MEMBER_ADD, "group": G, "refs": [RA, RA]}),
        (
            "attachment name with a slash",
            {"op": rules.ATTACHMENT_PUT, "ref": RA, "name": "a/b.pdf", "value": None, "seen": []},
        ),
        ("attachment name '..'", {"op": rules.ATTACHMENT_PUT, "ref": RA, "name": "..", "value": None, "seen": []}),
        (
            "attachment name ending with a dot",
            {"op": rules.ATTACHMENT_PUT, "ref": RA, "name": "paper.", "value": None, "seen": []},
        ),
        (
            "attachment name of 256 UTF-8 bytes",
            {"op": rules.ATTACHMENT_PUT, "ref": RA, "name": "é" * 128, "value": None, "seen": []},
        ),
        (
            "attachment name with the reserved prefix .p2psync",
            {"op": rules.ATTACHMENT_PUT, "ref": RA, "name": ".p2psync-versions", "value": None, "seen": []},
        ),
        (
            "attachment name with the reserved prefix in another case",
            {"op": rules.ATTACHMENT_PUT, "ref": RA, "name": ".P2PSync-partial-x.pdf", "value": None, "seen": []},
        ),
        (
            "attachment name with the reserved prefix after case folding (U+017F LONG S)",
            {"op": rules.ATTACHMENT_PUT, "ref": RA, "name": ".p2p\u017fync", "value": None, "seen": []},
        ),
        (
            "manifest in upper-case hex",
            {
                "op": rules.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 1, "sha256": digest.upper()},
            },
        ),
        (
            "manifest sha256 with a trailing newline",
            {
                "op": rules.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 1, "sha256": digest + "\n"},
            },
        ),
        (
            "manifest with an unknown key",
            {
                "op": rules.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 1, "sha256": digest, "mtime": 1},
            },
        ),
        (
            "manifest larger than 1 TiB",
            {
                "op": rules.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 2**40 + 1, "sha256": digest},
            },
        ),
        (
            "chunks not adding up to the size",
            {
                "op": rules.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 2, "sha256": digest, "chunks": [[digest, 1]]},
            },
        ),
        (
            "chunk of size 0",
            {
                "op": rules.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 0, "sha256": digest, "chunks": [[digest, 0]]},
            },
        ),
        (
            "chunk longer than MAX_SIZE",
            {
                "op": rules.ATTACHMENT_PUT,
                "ref": RA,
                "name": "x",
                "seen": [],
                "value": {"size": 131_073, "sha256": digest, "chunks": [[digest, 131_073]]},
            },
        ),
        ("attachment seen as a map", {"op": rules.ATTACHMENT_PUT, "ref": RA, "name": "x", "value": None, "seen": {}}),
        ("device.add with a 31-byte key", device_add(B, A) | {"key": b64(B.public[:31])}),
        ("device.add key in non-canonical base64", device_add(B, A) | {"key": non_canonical_b64(b64(B.public))}),
        (
            "device.add signature in non-canonical base64",
            device_add(B, A) | {"signature": non_canonical_b64(str(device_add(B, A)["signature"]))},
        ),
        ("device.add introducer in lower case", device_add(B, A) | {"introducer": A.id.lower()}),
        ("device.add whose id does not match its key", device_add(B, A) | {"device": C.id}),
        ("device.add founder with a signature", device_add(A, None) | {"signature": b64(bytes(64))}),
        ("device.add introduced without a signature", device_add(B, A) | {"signature": None}),
        ("device.add with an empty name", device_add(B, A) | {"name": ""}),
        ("device.add with a name of 101 characters", device_add(B, A) | {"name": "x" * 101}),
        ("device.revoke of a 31-character id", {"op": rules.DEVICE_REVOKE, "device": C.id[:31], "upto": 0}),
        ("device.revoke with negative upto", {"op": rules.DEVICE_REVOKE, "device": C.id, "upto": -1}),
        ("device.revoke with upto true", {"op": rules.DEVICE_REVOKE, "device": C.id, "upto": True}),
        ("device.revoke with upto above 2^53", {"op": rules.DEVICE_REVOKE, "device": C.id, "upto": rules.MAX_INT + 1}),
        (
            "device.revoke of a device id with a trailing newline",
            {"op": rules.DEVICE_REVOKE, "device": C.id + "\n", "upto": 0},
        ),
        ("device.name empty", {"op": rules.DEVICE_NAME, "name": ""}),
        ("device.name of 101 characters", {"op": rules.DEVICE_NAME, "name": "x" * 101}),
        ("device.name with a line break", {"op": rules.DEVICE_NAME, "name": "lab\nlaptop"}),
        ("device.name with a tab", {"op": rules.DEVICE_NAME, "name": "lab\tlaptop"}),
        ("device.name with DEL", {"op": rules.DEVICE_NAME, "name": "lab\u007f"}),
        ("device.name with a C1 control character", {"op": rules.DEVICE_NAME, "name": "lab\u0085laptop"}),
        ("device.name with a space first", {"op": rules.DEVICE_NAME, "name": " lab"}),
        ("device.name with a space last", {"op": rules.DEVICE_NAME, "name": "lab "}),
        ("device.name that is a number", {"op": rules.DEVICE_NAME, "name": 7}),
        ("device.name naming a device", {"op": rules.DEVICE_NAME, "name": "lab", "device": B.id}),
        ("group.put setting nothing", {"op": rules.GROUP_PUT, "group": G, "fields": {}, "seen": {}}),
        (
            "group.put: a query of 501 characters",
            {"op": rules.GROUP_PUT, "group": G, "fields": {"query": "q" * 501}, "seen": {}},
        ),
        (
            "group.put: a query not in normal form",
            {"op": rules.GROUP_PUT, "group": G, "fields": {"query": "neur  cat"}, "seen": {}},
        ),
        ("group.put: an empty query", {"op": rules.GROUP_PUT, "group": G, "fields": {"query": ""}, "seen": {}}),
        ("group.put: a query null", {"op": rules.GROUP_PUT, "group": G, "fields": {"query": None}, "seen": {}}),
        (
            "group.put: a query of quotes only",
            {"op": rules.GROUP_PUT, "group": G, "fields": {"query": '"" """'}, "seen": {}},
        ),
        (
            "group.put: a query with a control character",
            {"op": rules.GROUP_PUT, "group": G, "fields": {"query": "a\u0000b"}, "seen": {}},
        ),
        (
            "group.put: a set that is no id",
            {"op": rules.GROUP_PUT, "group": G, "fields": {"set": "Projects"}, "seen": {}},
        ),
        (
            "group.put seen naming a field it does not set",
            {"op": rules.GROUP_PUT, "group": G, "fields": {"set": S}, "seen": {"name": [dot]}},
        ),
        (
            "group.delete seen naming another field",
            {"op": rules.GROUP_DELETE, "group": G, "seen": {"colour": [dot]}, "members": {}},
        ),
        ("groupset.put without a name", {"op": rules.GROUPSET_PUT, "set": S, "fields": {}, "seen": {}}),
        (
            "groupset.put with a query",
            {"op": rules.GROUPSET_PUT, "set": S, "fields": {"name": "P", "query": "x"}, "seen": {}},
        ),
        (
            "groupset.put name not in normal form",
            {"op": rules.GROUPSET_PUT, "set": S, "fields": {"name": " P"}, "seen": {}},
        ),
        (
            "groupset.put of a set that is no id",
            {"op": rules.GROUPSET_PUT, "set": "P", "fields": {"name": "P"}, "seen": {}},
        ),
        ("groupset.delete naming groups", {"op": rules.GROUPSET_DELETE, "set": S, "seen": {}, "members": {}}),
        ("library.name empty", {"op": rules.LIBRARY_NAME, "name": "", "seen": []}),
        ("library.name of 201 characters", {"op": rules.LIBRARY_NAME, "name": "x" * 201, "seen": []}),
        ("library.name with a control character", {"op": rules.LIBRARY_NAME, "name": "lab\u0085x", "seen": []}),
        ("library.name without seen", {"op": rules.LIBRARY_NAME, "name": "Lab"}),
        ("library.name with a seen map", {"op": rules.LIBRARY_NAME, "name": "Lab", "seen": {"name": [dot]}}),
    ]
    for name, op in valid:
        if not op_schema.is_valid(copy.deepcopy(op)):
            raise SystemExit(f"the model refuses the valid op {name!r}")
    for name, op in invalid:
        if op_schema.is_valid(copy.deepcopy(op)):
            raise SystemExit(f"the model accepts the invalid op {name!r}")
    return {
        "description": "ops.check(op) accepts every op in 'valid' unchanged and raises InvalidInput for every op "
        "in 'invalid'; inside a change set an invalid op is the rejection reason 'schema'.",
        "valid": [{"name": n, "op": o} for n, o in valid],
        "invalid": [{"name": n, "op": o} for n, o in invalid],
    }
