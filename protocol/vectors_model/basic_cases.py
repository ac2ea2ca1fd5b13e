"""Vectors (a) canonical JSON, (b) identities and (c) introductions."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from vectors_model.canonical_text import encode
from vectors_model.spec import LIB, A, B, C, D, E, b64, device_add, introduction_message, seed


def canonical_vectors() -> dict[str, Any]:
    valid = [
        ("null", "null"),
        ("true", "true"),
        ("false", "false"),
        ("zero", "0"),
        ("negative integer", "-42"),
        ("2^53, the largest integer the protocol uses", "9007199254740992"),
        ("integer 2^53 + 1 (exact, no exponent)", "9007199254740993"),
        ("2^63 - 1: outside the protocol's range, still written exactly", "9223372036854775807"),
        ("minus zero is the integer 0", "-0"),
        ("empty string", '""'),
        ("ASCII text", '"Neuronal plasticity"'),
        ("non-ASCII kept as raw UTF-8 (2, 3 and 4 bytes)", '"Müller \\u2013 \\u6f22 \\ud83d\\ude00"'),
        ("escaped input is written raw", '"\\u00e9\\u0041"'),
        ("short escapes", '"quote \\" backslash \\\\ b\\b f\\f n\\n r\\r t\\t"'),
        ("other control characters as \\u00XX, lowercase hex", '"\\u0000\\u0001\\u001f"'),
        ("DEL, U+2028 and solidus are not escaped", '"\\u007f \\u2028 \\/"'),
        ("empty array", "[ ]"),
        ("empty object", "{ }"),
        ("nested, white space removed", '[ 1, [ 2, { "b" : [ ], "a" : { } } ], null ]'),
        ("keys sorted by code point: upper case before lower case", '{"b": 1, "a": 2, "B": 3, "A": 4}'),
        ('keys: "B" < "a" < "é"', '{"\\u00e9": 1, "a": 2, "B": 3}'),
        ("keys: a prefix sorts first", '{"ab": 1, "a\\u0000": 2, "a": 3, "": 4}'),
        ('keys: "10" < "9" (strings, not numbers)', '{"9": 1, "10": 2, "_": 3, "Z": 4}'),
        ("keys: code point order, not UTF-16 order (U+FB01 < U+1F600)", '{"\\ud83d\\ude00": 1, "\\ufb01": 2}'),
        ("keys sorted at every level", '{"z": {"y": 1, "x": [{"b": 2, "a": 1}]}, "a": null}'),
    ]
    cases = []
    for name, text in valid:
        value = json.loads(text)
        data = encode(value)
        cases.append(
            {"name": name, "input_json": text, "canonical_text": data.decode("utf-8"), "canonical_hex": data.hex()}
        )
    invalid = [
        ("NaN has no canonical form", "NaN"),
        ("Infinity has no canonical form", "[Infinity]"),
        ("a lone surrogate cannot be written in UTF-8", '"\\ud800"'),
    ]
    for _name, text in invalid:
        try:
            encode(json.loads(text))
        except (TypeError, ValueError):  # a float, or a lone surrogate that UTF-8 cannot hold
            continue
        raise SystemExit(f"the model's canonical encoding accepted {text}")
    return {
        "description": "canonical(value): parse input_json (a JSON text, deliberately not canonical), encode "
        "canonically, compare with canonical_hex (the bytes) and canonical_text (the same bytes as UTF-8).",
        "valid": cases,
        "invalid": [{"name": n, "input_json": t} for n, t in invalid],
    }


# --- (b) identity, (c) introductions --------------------------------------------------------------


def identity_vectors() -> dict[str, Any]:
    devices = []
    for dev in (A, B, C, D, E):
        digest = hashlib.sha256(dev.public).digest()
        devices.append(
            {
                "name": dev.name,
                "seed_input": f"p2psync/1 test vector seed {dev.name}",
                "seed_hex": seed(dev.name).hex(),
                "public_key_hex": dev.public.hex(),
                "public_key_base64": b64(dev.public),
                "sha256_public_key_hex": digest.hex(),
                "base32_sha256": base64.b32encode(digest).decode("ascii"),
                "device_id": dev.id,
                "short_id": dev.id[:7],
            }
        )
    founder_input = b"p2psync/1 library\x00" + A.public
    digest = hashlib.sha256(founder_input).digest()
    return {
        "description": "seed -> Ed25519 key pair (RFC 8032) -> device id; library id from the founder's public key.",
        "devices": devices,
        "library": {
            "founder": "A",
            "input_hex": founder_input.hex(),
            "sha256_hex": digest.hex(),
            "first_10_bytes_hex": digest[:10].hex(),
            "library_id": LIB,
        },
    }


def introduction_vectors() -> dict[str, Any]:
    cases = []
    for new, introducer in ((B, A), (C, A), (D, A)):
        message = introduction_message(LIB, new.id, new.public)
        signature = introducer.sign(message)
        op = device_add(new, introducer)
        cases.append(
            {
                "library": LIB,
                "device": new.name,
                "device_id": new.id,
                "public_key_hex": new.public.hex(),
                "introducer": introducer.name,
                "introducer_id": introducer.id,
                "message_hex": message.hex(),
                "signature_hex": signature.hex(),
                "signature_base64": b64(signature),
                "op": op,
                "op_canonical_text": encode(op).decode("utf-8"),
            }
        )
    founder = device_add(A, None)
    return {
        "description": "introduction(lib, device, key) = 'p2psync/1 device introduction' 00 lib 00 device 00 key; "
        "signed by the introducer; carried in a device.add operation.",
        "founder_op": founder,
        "founder_op_canonical_text": encode(founder).decode("utf-8"),
        "introductions": cases,
    }
