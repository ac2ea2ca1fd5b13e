"""What a device computes for the relay (protocol/relay.md sections 1 and 2): the keys derived
from the e-mail and password, the wrapped library key, the account signing key, and the
encryption of change sets and chunks. Nothing here touches a network or a database.

The relay sees only `login_key` (to log in), `wrapped_key` and ciphertext. Every ciphertext is
AES-256-GCM under the library key with a fresh 12-byte nonce in front, and its associated data
names what it is (library, device, sequence range; or chunk id), so that the relay cannot pass one
blob off as another: a blob moved, renamed or altered does not decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2psync.crypto.identity import DeviceIdentity
from p2psync.errors import InvalidValue, RelayTampered
from p2psync.relay import kdf
from p2psync.relay.kdf import KdfParams

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
ACCOUNT_SALT = b"p2psync/1 account\x00"
LOGIN_INFO = b"p2psync/1 login"
WRAP_INFO = b"p2psync/1 wrap"
SIGNING_INFO = b"p2psync/1 account signing key"
WRAP_AAD = b"p2psync/1 library key\x00"
CHANGESET_AAD = b"p2psync/1 relay change set\x00"
CHUNK_ID_PREFIX = b"p2psync/1 chunk id\x00"
CHUNK_AAD = b"p2psync/1 relay chunk\x00"
ACCOUNT_DEVICE_NAME = "online account"  # the name of the account signing key's membership


def normalize_email(email: str) -> str:
    """The address as the keys use it: trimmed and lower-cased."""
    return email.strip().lower()


def check_email(email: str) -> str:
    """The normalized address, or InvalidValue if it cannot be one."""
    address = normalize_email(email)
    local, at, domain = address.rpartition("@")
    domain_ok = bool(domain) and all(c.isalnum() or c in ".-" for c in domain)
    if not at or not local or not domain_ok or any(c.isspace() for c in address) or len(address) > 254:
        raise InvalidValue(f"{email.strip()!r} is not an e-mail address; type it like name@example.org.")
    return address


def hkdf(secret: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(secret)


def derive_keys(email: str, password: str, params: KdfParams) -> tuple[bytes, bytes]:
    """(login_key, wrap_key) for this e-mail address and password, derived with `params` (section 1:
    the account's key derivation, as the relay tells it; checked against kdf.py's bounds first)."""
    salt = ACCOUNT_SALT + normalize_email(email).encode("utf-8")
    master = kdf.derive(params, password.encode("utf-8"), salt)
    return hkdf(master, LOGIN_INFO), hkdf(master, WRAP_INFO)


def new_library_key() -> bytes:
    return os.urandom(KEY_BYTES)


def aead_seal(key: bytes, plaintext: bytes, aad: bytes, nonce: bytes | None = None) -> bytes:
    """nonce || AES-256-GCM(key, plaintext) with `aad`; a fresh random nonce unless one is given
    (only the vectors give one)."""
    nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_open(key: bytes, blob: bytes, aad: bytes) -> bytes | None:
    """What aead_seal sealed, or None if `blob` does not open with this key and `aad`."""
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        return None
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        return None


def wrap_library_key(wrap_key: bytes, library_key: bytes, library_id: str) -> bytes:
    """nonce || AES-256-GCM(wrap_key, library_key), bound to the library's id."""
    if len(library_key) != KEY_BYTES:
        raise ValueError("a library key is 32 bytes")
    return aead_seal(wrap_key, library_key, WRAP_AAD + library_id.encode("ascii"))


def unwrap_library_key(wrap_key: bytes, wrapped: bytes, library_id: str) -> bytes:
    """The library key inside `wrapped`; RelayTampered if it does not open with this password for
    this library (a password changed elsewhere, or a key altered on the relay)."""
    key = aead_open(wrap_key, wrapped, WRAP_AAD + library_id.encode("ascii"))
    if key is None or len(key) != KEY_BYTES:
        raise RelayTampered(
            "The library key stored on the relay does not open with this password; if the password was "
            "changed on another device, log in with the new one."
        )
    return key


def account_identity(library_key: bytes) -> DeviceIdentity:
    """The account signing key: the member through which devices join by password."""
    seed = hkdf(library_key, SIGNING_INFO)
    return DeviceIdentity(Ed25519PrivateKey.from_private_bytes(seed))


def changeset_aad(library_id: str, device: str, first: int, last: int) -> bytes:
    return b"".join(
        (
            CHANGESET_AAD,
            library_id.encode("ascii"),
            b"\x00",
            device.encode("ascii"),
            b"\x00",
            b"%d-%d" % (first, last),
        )
    )


def encrypt_changeset(library_key: bytes, library_id: str, device: str, first: int, last: int, wire: bytes) -> bytes:
    return aead_seal(library_key, wire, changeset_aad(library_id, device, first, last))


def decrypt_changeset(library_key: bytes, library_id: str, device: str, first: int, last: int, blob: bytes) -> bytes:
    """The change set's wire bytes; RelayTampered if the blob does not decrypt under its headers."""
    wire = aead_open(library_key, blob, changeset_aad(library_id, device, first, last))
    if wire is None:
        raise RelayTampered(
            f"the change set listed as {device[:7]} {first}-{last} does not decrypt with the library key "
            "under those headers"
        )
    return wire


def chunk_id(library_key: bytes, chunk_sha256: str | bytes) -> str:
    """The name a chunk has on the relay: keyed, so the relay cannot tell which known file it is from."""
    digest = bytes.fromhex(chunk_sha256) if isinstance(chunk_sha256, str) else chunk_sha256
    return hmac.new(library_key, CHUNK_ID_PREFIX + digest, hashlib.sha256).hexdigest()


def encrypt_chunk(library_key: bytes, cid: str, chunk: bytes) -> bytes:
    return aead_seal(library_key, chunk, CHUNK_AAD + cid.encode("ascii"))


def decrypt_chunk(library_key: bytes, cid: str, blob: bytes) -> bytes:
    """The chunk's bytes; RelayTampered if the blob does not decrypt as chunk `cid`."""
    chunk = aead_open(library_key, blob, CHUNK_AAD + cid.encode("ascii"))
    if chunk is None:
        raise RelayTampered(f"the chunk {cid[:12]} does not decrypt with the library key")
    return chunk
