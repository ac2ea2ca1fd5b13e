"""The spec's recipes, written apart from the code: canonical JSON, ids, the signed inputs, the
test devices and their device.add. Every other module of the model builds on these.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vectors_model import rules

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z, in milliseconds
TS = T0 + 300_000  # the timestamp of the entries made up for the rejection cases

# Object ids: 16 characters of a-z2-7 (model/ids.py ID_PATTERN).
RA, RB, RC, RD, RE = "refaaaaaaaaaaaaa", "refbbbbbbbbbbbbb", "refccccccccccccc", "refddddddddddddd", "refeeeeeeeeeeeee"
RX = "refxxxxxxxxxxxxx"  # only in the rejection exchanges
G, H = "grpggggggggggggg", "grphhhhhhhhhhhhh"
S = "setsssssssssssss"  # a group set


# --- recipes (as written in the spec) --------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def seed(name: str) -> bytes:
    return hashlib.sha256(b"p2psync/1 test vector seed " + name.encode("ascii")).digest()


def device_id_for(public_key: bytes) -> str:
    return base64.b32encode(hashlib.sha256(public_key).digest()).decode("ascii")[:32]


def library_id_for(founder_key: bytes) -> str:
    digest = hashlib.sha256(b"p2psync/1 library\x00" + founder_key).digest()
    return base64.b32encode(digest[:10]).decode("ascii").lower()


def introduction_message(library: str, device: str, public_key: bytes) -> bytes:
    return b"p2psync/1 device introduction\x00" + library.encode() + b"\x00" + device.encode() + b"\x00" + public_key


def signature_input(library: str, body_bytes: bytes) -> bytes:
    return b"p2psync/1 change set\x00" + library.encode("ascii") + b"\x00" + hashlib.sha256(body_bytes).digest()


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Device:
    name: str
    label: str  # the device name carried by its device.add
    key: Ed25519PrivateKey

    @property
    def public(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def id(self) -> str:
        return device_id_for(self.public)

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


def make_device(name: str, label: str) -> Device:
    return Device(name, label, Ed25519PrivateKey.from_private_bytes(seed(name)))


A = make_device("A", "laptop-a")
B = make_device("B", "laptop-b")
C = make_device("C", "desktop-c")
D = make_device("D", "tablet-d")  # joins by introducing itself (signed by A)
E = make_device("E", "stranger-e")  # never a member
LIB = library_id_for(A.public)
DEVICES = {d.id: d for d in (A, B, C, D, E)}
NAMES = {d.id: d.name for d in (A, B, C, D, E)}


def device_add(new: Device, introducer: Device | None, library: str = LIB) -> dict[str, Any]:
    signature = None
    if introducer is not None:
        signature = b64(introducer.sign(introduction_message(library, new.id, new.public)))
    return {
        "op": rules.DEVICE_ADD,
        "device": new.id,
        "key": b64(new.public),
        "name": new.label,
        "introducer": introducer.id if introducer else None,
        "signature": signature,
    }
