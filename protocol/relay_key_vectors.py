"""Known answers for devices and library-key epochs on the relay (protocol/relay.md §5), for
make_vectors.py.

Written from the spec alone, independent of p2psync: HKDF is written out with HMAC (RFC 5869);
Ed25519, X25519 and AES-256-GCM come from `cryptography`. Every input is fixed (seeds, keys,
nonces, the ephemeral X25519 key, the time), and Ed25519 signatures are deterministic, so two runs
write the same bytes. tests/test_relay_key_vectors.py checks p2psync/relay/keyring.py against them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

LIBRARY = "vhvoj6d6uw4d37ae"
EMAIL = "ada@example.org"
TIME = 1_700_000_000


def _fixed(name: str) -> bytes:
    return hashlib.sha256(b"p2psync/1 test vector seed " + name.encode("ascii")).digest()


def hkdf(secret: bytes, info: bytes, salt: bytes = b"", size: int = 32) -> bytes:
    """RFC 5869 with SHA-256; an absent salt is 32 zero bytes."""
    prk = hmac.new(salt or b"\x00" * 32, secret, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < size:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:size]


def _raw(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def device_id(public_key: bytes) -> str:
    return base64.b32encode(hashlib.sha256(public_key).digest()).decode("ascii")[:32]


def dec(number: int) -> bytes:
    return str(number).encode("ascii")


def key_vectors() -> dict[str, Any]:
    seed = _fixed("relay device")
    device = Ed25519PrivateKey.from_private_bytes(seed)
    public = _raw(device)
    member = device_id(public)
    agreement_secret = hkdf(seed, b"p2psync/1 relay agreement key")
    agreement = _raw(X25519PrivateKey.from_private_bytes(agreement_secret))
    proof_message = b"p2psync/1 relay device\x00" + EMAIL.encode() + b"\x00" + dec(TIME) + b"\x00" + agreement

    key0, key1, wrap_key = _fixed("library key epoch 0"), _fixed("library key epoch 1"), _fixed("wrap key")
    check1 = hkdf(key1, b"p2psync/1 key check")
    previous_nonce = _fixed("previous nonce")[:12]
    previous_aad = b"p2psync/1 previous key\x00" + LIBRARY.encode() + b"\x00" + dec(1)
    previous = previous_nonce + AESGCM(key1).encrypt(previous_nonce, key0, previous_aad)
    rotation = b"p2psync/1 key rotation\x00" + LIBRARY.encode() + b"\x00" + dec(1) + b"\x00" + check1

    ephemeral_secret = _fixed("ephemeral")
    ephemeral = X25519PrivateKey.from_private_bytes(ephemeral_secret)
    ephemeral_public = _raw(ephemeral)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(agreement))
    seal_key = hkdf(shared, b"p2psync/1 member key wrap", salt=ephemeral_public + agreement)
    seal_nonce = _fixed("sealed nonce")[:12]
    seal_aad = b"p2psync/1 member key\x00" + LIBRARY.encode() + b"\x00" + member.encode() + b"\x00" + dec(1)
    sealed = ephemeral_public + seal_nonce + AESGCM(seal_key).encrypt(seal_nonce, key1, seal_aad)

    account_nonce = _fixed("account nonce")[:12]
    account_aad = b"p2psync/1 library key\x00" + LIBRARY.encode()
    account_copy = account_nonce + AESGCM(wrap_key).encrypt(account_nonce, key1, account_aad)

    removed = device_id(_raw(Ed25519PrivateKey.from_private_bytes(_fixed("removed device"))))
    revoke = b"p2psync/1 relay revoke\x00" + LIBRARY.encode() + b"\x00" + removed.encode() + b"\x00" + dec(7)
    return {
        "description": "Devices and library-key epochs on the relay (relay.md §5). Byte strings are hex. "
        "HKDF is HKDF-SHA256 (an absent salt: 32 zero bytes); AES-256-GCM outputs are nonce || ciphertext || tag; "
        "sealed is ephemeral X25519 public key || nonce || ciphertext || tag.",
        "library_id": LIBRARY,
        "email": EMAIL,
        "device": {
            "seed": seed.hex(),
            "public_key": public.hex(),
            "device_id": member,
            "agreement_secret": agreement_secret.hex(),
            "agreement_key": agreement.hex(),
        },
        "proof": {
            "time": TIME,
            "message": proof_message.hex(),
            "signature": device.sign(proof_message).hex(),
            "json": {
                "key": base64.b64encode(public).decode(),
                "agreement_key": base64.b64encode(agreement).decode(),
                "time": TIME,
                "signature": base64.b64encode(device.sign(proof_message)).decode(),
            },
        },
        "epochs": {
            "key_0": key0.hex(),
            "key_1": key1.hex(),
            "check_1": check1.hex(),
            "previous_nonce": previous_nonce.hex(),
            "previous_1": previous.hex(),
            "rotation_message_1": rotation.hex(),
            "rotation_signature_1": device.sign(rotation).hex(),
        },
        "sealed": {
            "epoch": 1,
            "ephemeral_secret": ephemeral_secret.hex(),
            "nonce": seal_nonce.hex(),
            "shared": shared.hex(),
            "key": seal_key.hex(),
            "sealed": sealed.hex(),
        },
        "account_copy": {"wrap_key": wrap_key.hex(), "nonce": account_nonce.hex(), "wrapped_key_1": account_copy.hex()},
        "revoke": {
            "device": removed,
            "upto": 7,
            "message": revoke.hex(),
            "signature": device.sign(revoke).hex(),
        },
    }
