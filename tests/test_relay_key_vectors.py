"""p2psync/relay/keyring.py against protocol/vectors/relay_keys.json (relay.md §5), which
protocol/relay_key_vectors.py writes from the spec alone: device proofs, agreement keys, key
checks, the chain to the previous key, sealed copies for members, rotation and revocation messages."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from p2psync.relay import crypto, keyring

VECTORS = json.loads((Path(__file__).resolve().parent.parent / "protocol/vectors/relay_keys.json").read_text())
LIBRARY, EMAIL = VECTORS["library_id"], VECTORS["email"]


def h(name: str, section: str) -> bytes:
    return bytes.fromhex(VECTORS[section][name])


def device() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(h("seed", "device"))


def test_a_device_proof_and_its_agreement_key() -> None:
    made = keyring.make_proof(device(), EMAIL, VECTORS["proof"]["time"])
    assert made.public_key == h("public_key", "device") and made.device == VECTORS["device"]["device_id"]
    assert made.agreement_key == h("agreement_key", "device")
    assert keyring.proof_message(EMAIL, made.time, made.agreement_key) == h("message", "proof")
    assert made.signature == h("signature", "proof") and made.as_json() == VECTORS["proof"]["json"]
    parsed = keyring.parse_proof(VECTORS["proof"]["json"])
    assert parsed == made and parsed.verifies(EMAIL) and not parsed.verifies("eve@example.org")


def test_a_key_epoch_its_chain_and_its_signature() -> None:
    key0, key1 = h("key_0", "epochs"), h("key_1", "epochs")
    assert keyring.key_check(key1) == h("check_1", "epochs")
    nonce = h("previous_nonce", "epochs")
    assert keyring.wrap_previous(key1, key0, LIBRARY, 1, nonce) == h("previous_1", "epochs")
    assert keyring.unwrap_previous(key1, h("previous_1", "epochs"), LIBRARY, 1) == key0
    message = keyring.rotation_message(LIBRARY, 1, h("check_1", "epochs"))
    assert message == h("rotation_message_1", "epochs")
    assert device().sign(message) == h("rotation_signature_1", "epochs")


def test_a_copy_sealed_for_a_member_and_the_accounts_copy() -> None:
    key1, section = h("key_1", "epochs"), VECTORS["sealed"]
    ephemeral = X25519PrivateKey.from_private_bytes(bytes.fromhex(section["ephemeral_secret"]))
    member = VECTORS["device"]["device_id"]
    sealed = keyring.seal_for_member(
        h("agreement_key", "device"), key1, LIBRARY, member, 1, ephemeral, bytes.fromhex(section["nonce"])
    )
    assert sealed == bytes.fromhex(section["sealed"])
    assert keyring.open_as_member(device(), sealed, LIBRARY, member, 1) == key1
    assert keyring.open_as_member(device(), sealed, LIBRARY, member, 2) is None  # the epoch is bound in
    account = VECTORS["account_copy"]
    wrapped = bytes.fromhex(account["wrapped_key_1"])
    assert crypto.unwrap_library_key(bytes.fromhex(account["wrap_key"]), wrapped, LIBRARY) == key1


def test_a_revocation_message() -> None:
    revoke = VECTORS["revoke"]
    message = keyring.revoke_message(LIBRARY, revoke["device"], revoke["upto"])
    assert message == bytes.fromhex(revoke["message"]) and device().sign(message).hex() == revoke["signature"]
