"""The cryptography of devices and key epochs on the relay (protocol/relay.md §5): pure functions,
no network, no database. The relay server and the devices both use them.

How the parts move. Every device that logs in proves its device key (Ed25519, the one that signs
its change sets) with a *device proof*: a signature over the account's e-mail, the time and the
device's *agreement key*, an X25519 key derived from the device key's seed. The relay ties the
token to that device and keeps the proof, so that any member can check, with the device key it
knows from the library's membership, that an agreement key really is that device's.

The library key has *epochs*: 0 is the key the account was bound with; removing a device makes a
member draw a new key for epoch n+1 and publish it as
- `previous`: the key of epoch n encrypted under the new key (so whoever holds the newest key can
  walk back and read all history, and nobody learns a newer key from an older one),
- `check`: HKDF of the new key, signed with the rotating member's device key together with the
  library id and the epoch (so a key that opens is known to be the one that member made),
- one `sealed` copy per remaining member (X25519 with a fresh ephemeral key, HKDF, AES-256-GCM),
- and the account's copy, wrapped with the password's wrap key exactly as in relay.md §1 (the
  account says in the clear which epoch its copy is; `check` tells a wrong claim).
The removed device holds only the older keys; the relay refuses it everything, including these.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from p2psync.model.devices import device_id_for
from p2psync.relay.crypto import KEY_BYTES, NONCE_BYTES, TAG_BYTES, aead_open, aead_seal, hkdf

PROOF_SECONDS = 3600  # how far a device's clock may be from the relay's when it proves its key
AGREEMENT_INFO = b"p2psync/1 relay agreement key"
DEVICE_PROOF = b"p2psync/1 relay device\x00"
REVOKE = b"p2psync/1 relay revoke\x00"
ROTATION = b"p2psync/1 key rotation\x00"
CHECK_INFO = b"p2psync/1 key check"
SEAL_INFO = b"p2psync/1 member key wrap"
SEAL_AAD = b"p2psync/1 member key\x00"
PREVIOUS_AAD = b"p2psync/1 previous key\x00"
SEALED_BYTES = 32 + NONCE_BYTES + KEY_BYTES + TAG_BYTES


class ProofError(ValueError):
    """A device proof, signature or wrapped key that does not check; the message says which."""


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ProofError(f"'{what}' must be a base64 string.")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProofError(f"'{what}' is not standard base64 with padding.") from None
    if size is not None and len(data) != size:
        raise ProofError(f"'{what}' must decode to {size} bytes.")
    return data


# --- a device's keys -----------------------------------------------------------------------------


def agreement_private(device_key: Ed25519PrivateKey) -> X25519PrivateKey:
    """The device's X25519 key, derived from its Ed25519 seed (nothing more to keep)."""
    seed = device_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return X25519PrivateKey.from_private_bytes(hkdf(seed, AGREEMENT_INFO))


def _raw_public(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def proof_message(email: str, time: int, agreement_key: bytes) -> bytes:
    return DEVICE_PROOF + email.encode("utf-8") + b"\x00" + b"%d" % time + b"\x00" + agreement_key


@dataclass(frozen=True)
class DeviceProof:
    """A device's proof of its key, as sent at login (relay.md §5.1) and kept by the relay."""

    public_key: bytes
    agreement_key: bytes
    time: int
    signature: bytes

    @property
    def device(self) -> str:
        return device_id_for(self.public_key)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": b64(self.public_key),
            "agreement_key": b64(self.agreement_key),
            "time": self.time,
            "signature": b64(self.signature),
        }

    def verifies(self, email: str) -> bool:
        return verify(self.public_key, self.signature, proof_message(email, self.time, self.agreement_key))


def make_proof(device_key: Ed25519PrivateKey, email: str, now: float) -> DeviceProof:
    agreement = _raw_public(agreement_private(device_key))
    time = int(now)
    return DeviceProof(_raw_public(device_key), agreement, time, device_key.sign(proof_message(email, time, agreement)))


def parse_proof(value: Any) -> DeviceProof:
    """A device proof from JSON; ProofError says what is wrong with it (not yet verified)."""
    if not isinstance(value, dict):
        raise ProofError("'device' must be an object with key, agreement_key, time and signature.")
    time = value.get("time")
    if type(time) is not int or not 0 <= time <= 2**53:
        raise ProofError("'device.time' must be a whole number of seconds.")
    return DeviceProof(
        unb64(value.get("key"), "device.key", 32),
        unb64(value.get("agreement_key"), "device.agreement_key", 32),
        time,
        unb64(value.get("signature"), "device.signature", 64),
    )


# --- key epochs ----------------------------------------------------------------------------------


def key_check(key: bytes) -> bytes:
    """What the relay may know of a key: enough to recognise it, nothing to use it."""
    return hkdf(key, CHECK_INFO)


def rotation_message(library_id: str, epoch: int, check: bytes) -> bytes:
    return ROTATION + library_id.encode("ascii") + b"\x00" + b"%d" % epoch + b"\x00" + check


def revoke_message(library_id: str, device: str, upto: int) -> bytes:
    return REVOKE + library_id.encode("ascii") + b"\x00" + device.encode("ascii") + b"\x00" + b"%d" % upto


def _previous_aad(library_id: str, epoch: int) -> bytes:
    return PREVIOUS_AAD + library_id.encode("ascii") + b"\x00" + b"%d" % epoch


def wrap_previous(new_key: bytes, old_key: bytes, library_id: str, epoch: int, nonce: bytes | None = None) -> bytes:
    """The key of epoch-1 under the key of `epoch`."""
    return aead_seal(new_key, old_key, _previous_aad(library_id, epoch), nonce)


def unwrap_previous(new_key: bytes, blob: bytes, library_id: str, epoch: int) -> bytes:
    key = aead_open(new_key, blob, _previous_aad(library_id, epoch))
    if key is None or len(key) != KEY_BYTES:
        raise ProofError(f"the previous key of epoch {epoch} does not open with the key of that epoch")
    return key


def _seal_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return hkdf(shared, SEAL_INFO, salt=ephemeral + recipient)


def _seal_aad(library_id: str, device: str, epoch: int) -> bytes:
    return SEAL_AAD + library_id.encode("ascii") + b"\x00" + device.encode("ascii") + b"\x00" + b"%d" % epoch


def seal_for_member(
    agreement_key: bytes,
    key: bytes,
    library_id: str,
    device: str,
    epoch: int,
    ephemeral: X25519PrivateKey | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """ephemeral public key || nonce || AES-256-GCM(HKDF(X25519(ephemeral, member)), key)."""
    ephemeral = ephemeral or X25519PrivateKey.generate()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(agreement_key))
    public = _raw_public(ephemeral)
    return public + aead_seal(
        _seal_key(shared, public, agreement_key), key, _seal_aad(library_id, device, epoch), nonce
    )


def open_as_member(
    device_key: Ed25519PrivateKey, sealed: bytes, library_id: str, device: str, epoch: int
) -> bytes | None:
    if len(sealed) != SEALED_BYTES:
        return None
    mine = agreement_private(device_key)
    try:
        shared = mine.exchange(X25519PublicKey.from_public_bytes(sealed[:32]))
    except ValueError:  # a low-order point: nothing can be agreed with it
        return None
    key = aead_open(
        _seal_key(shared, sealed[:32], _raw_public(mine)), sealed[32:], _seal_aad(library_id, device, epoch)
    )
    return key if key is not None and len(key) == KEY_BYTES else None
