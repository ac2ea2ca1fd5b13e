"""The relay's device-side cryptography (protocol/relay.md sections 1 and 2), checked against an
independent reading of the spec (the standard library's scrypt and HMAC, HKDF written out), and
for what must fail: a wrong password, a blob altered, moved to other headers, or cut."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from p2psync.crypto.identity import verify
from p2psync.errors import InvalidValue, RelayTampered
from p2psync.model.devices import device_id_for
from p2psync.relay import crypto
from p2psync.relay.kdf import LEGACY, TEST_PARAMS

LIBRARY = "LIBRARYIDLIBRARYIDLIBRARYIDLIBRA"
DEVICE = "KOPFBJO5ZT3WQ7J2CDMRL4XYNAV6HEUS"


def _hkdf(secret: bytes, info: bytes) -> bytes:
    prk = hmac.new(b"\x00" * 32, secret, hashlib.sha256).digest()  # salt none: HashLen zero bytes
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_keys_follow_the_spec_and_depend_on_the_normalized_email_and_the_password() -> None:
    login_key, wrap_key = crypto.derive_keys("  Ada@Example.ORG ", "correct horse", LEGACY)
    master = hashlib.scrypt(
        b"correct horse",
        salt=b"p2psync/1 account\x00ada@example.org",
        n=2**15,
        r=8,
        p=1,
        maxmem=64 * 1024 * 1024,
        dklen=32,
    )
    assert login_key == _hkdf(master, b"p2psync/1 login")
    assert wrap_key == _hkdf(master, b"p2psync/1 wrap")
    assert login_key != wrap_key and len(login_key) == len(wrap_key) == 32
    assert crypto.derive_keys("ada@example.org", "correct horse", LEGACY) == (login_key, wrap_key)  # deterministic
    assert crypto.derive_keys("ada@example.org", "correct horsf", LEGACY)[0] != login_key
    assert crypto.derive_keys("bob@example.org", "correct horse", LEGACY)[0] != login_key


def test_email_is_checked_and_normalized() -> None:
    assert crypto.check_email(" Ada@Example.org\n") == "ada@example.org"
    for bad in ("", "ada", "@example.org", "ada@", "a da@example.org", "ada@example.org#!resetlocalsync"):
        with pytest.raises(InvalidValue):
            crypto.check_email(bad)


def test_library_key_wraps_and_unwraps_only_with_the_same_password_and_library() -> None:
    _, wrap_key = crypto.derive_keys("ada@example.org", "pw one", TEST_PARAMS)
    _, other_wrap = crypto.derive_keys("ada@example.org", "pw two", TEST_PARAMS)
    key = crypto.new_library_key()
    wrapped = crypto.wrap_library_key(wrap_key, key, LIBRARY)
    assert len(wrapped) == 12 + 32 + 16
    assert crypto.unwrap_library_key(wrap_key, wrapped, LIBRARY) == key
    assert crypto.wrap_library_key(wrap_key, key, LIBRARY) != wrapped  # a fresh nonce each time
    with pytest.raises(RelayTampered, match="does not open with this password"):
        crypto.unwrap_library_key(other_wrap, wrapped, LIBRARY)  # wrong password
    with pytest.raises(RelayTampered):
        crypto.unwrap_library_key(wrap_key, wrapped, "ANOTHERLIBRARYANOTHERLIBRARYANOT")  # AAD names the library
    flipped = bytes([wrapped[0]]) + bytes([wrapped[1] ^ 1]) + wrapped[2:]
    with pytest.raises(RelayTampered):
        crypto.unwrap_library_key(wrap_key, flipped, LIBRARY)
    with pytest.raises(RelayTampered):
        crypto.unwrap_library_key(wrap_key, wrapped[:20], LIBRARY)


def test_account_signing_key_is_derived_from_the_library_key() -> None:
    key = bytes(range(32))
    one, two = crypto.account_identity(key), crypto.account_identity(key)
    assert one.public_bytes == two.public_bytes and one.device_id == device_id_for(one.public_bytes)
    assert crypto.account_identity(bytes(32)).device_id != one.device_id
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = _hkdf(key, b"p2psync/1 account signing key")
    expected = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    assert one.public_bytes == expected
    assert verify(one.public_bytes, one.sign(b"message"), b"message")


def test_change_set_blob_opens_only_under_its_own_headers() -> None:
    key = crypto.new_library_key()
    wire = b'{"body":{"author":"' + DEVICE.encode() + b'"},"sig":"x"}'
    blob = crypto.encrypt_changeset(key, LIBRARY, DEVICE, 3, 5, wire)
    assert wire not in blob and len(blob) == 12 + len(wire) + 16
    assert crypto.decrypt_changeset(key, LIBRARY, DEVICE, 3, 5, blob) == wire
    aad = crypto.changeset_aad(LIBRARY, DEVICE, 3, 5)
    assert aad == b"p2psync/1 relay change set\x00" + LIBRARY.encode() + b"\x00" + DEVICE.encode() + b"\x003-5"
    for headers in ((DEVICE, 3, 6), (DEVICE, 4, 5), ("A" * 32, 3, 5)):
        with pytest.raises(RelayTampered, match="does not decrypt"):
            crypto.decrypt_changeset(key, LIBRARY, *headers, blob)
    with pytest.raises(RelayTampered):
        crypto.decrypt_changeset(key, "B" * 32, DEVICE, 3, 5, blob)
    with pytest.raises(RelayTampered):
        crypto.decrypt_changeset(crypto.new_library_key(), LIBRARY, DEVICE, 3, 5, blob)
    for i in (0, 12, len(blob) - 1):  # nonce, ciphertext, tag
        altered = bytearray(blob)
        altered[i] ^= 0x40
        with pytest.raises(RelayTampered):
            crypto.decrypt_changeset(key, LIBRARY, DEVICE, 3, 5, bytes(altered))
    with pytest.raises(RelayTampered):
        crypto.decrypt_changeset(key, LIBRARY, DEVICE, 3, 5, blob[:27])


def test_chunk_ids_are_keyed_and_chunk_blobs_open_only_under_their_id() -> None:
    key = crypto.new_library_key()
    data = b"%PDF-1.7 some bytes of a chunk" * 100
    sha = hashlib.sha256(data).hexdigest()
    cid = crypto.chunk_id(key, sha)
    expected = hmac.new(key, b"p2psync/1 chunk id\x00" + bytes.fromhex(sha), hashlib.sha256).hexdigest()
    assert cid == expected == crypto.chunk_id(key, bytes.fromhex(sha))
    assert cid != sha and crypto.chunk_id(crypto.new_library_key(), sha) != cid
    blob = crypto.encrypt_chunk(key, cid, data)
    assert data[:32] not in blob
    assert crypto.decrypt_chunk(key, cid, blob) == data
    other = crypto.chunk_id(key, hashlib.sha256(b"other").hexdigest())
    with pytest.raises(RelayTampered):
        crypto.decrypt_chunk(key, other, blob)  # a blob served under another id
    altered = bytearray(blob)
    altered[40] ^= 1
    with pytest.raises(RelayTampered):
        crypto.decrypt_chunk(key, cid, bytes(altered))


def test_keys_match_the_relay_kdf_vectors_and_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """protocol/vectors/relay_kdf.json, made by a pure-Python Argon2id and the standard library's
    scrypt (protocol/relay_vectors.py), against the real derivation and bounds."""
    import json
    from pathlib import Path

    from p2psync.relay import kdf

    vectors = json.loads((Path(__file__).resolve().parent.parent / "protocol/vectors/relay_kdf.json").read_text())
    assert vectors["production"] == kdf.PRODUCTION.as_wire()
    for case in vectors["cases"]:
        params = kdf.KdfParams.from_wire(case["kdf"])
        assert kdf.KdfParams.from_wire(params.as_wire()) == params
        login_key, wrap_key = crypto.derive_keys(case["email typed"], case["password"], params)
        assert (login_key.hex(), wrap_key.hex()) == (case["login_key (hex)"], case["wrap_key (hex)"]), case["name"]
    monkeypatch.delenv(kdf.TEST_ENV, raising=False)
    for wire in vectors["bounds"]["accepted"]:
        assert kdf.problem(kdf.KdfParams.from_wire(wire)) is None, wire
    for wire in vectors["bounds"]["refused"]:
        assert kdf.problem(kdf.KdfParams.from_wire(wire)) is not None, wire
