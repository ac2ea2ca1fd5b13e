"""A device's identity: an Ed25519 key pair per library on each machine.

The device id is derived from the public key (SHA-256, base32, first 32 characters = 160 bits),
so a peer that pins a key pins an id and vice versa. People see the short form, its first seven
characters, as Syncthing users are used to.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2psync.errors import LibraryCorrupt
from p2psync.store.files import write_atomic

DEVICE_ID_LENGTH = 32
SHORT_ID_LENGTH = 7


def device_id_for(public_key: bytes) -> str:
    digest = hashlib.sha256(public_key).digest()
    return base64.b32encode(digest).decode("ascii")[:DEVICE_ID_LENGTH]


def short_id(device_id: str) -> str:
    return device_id[:SHORT_ID_LENGTH]


@dataclass(frozen=True)
class DeviceIdentity:
    private_key: Ed25519PrivateKey

    @property
    def public_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def device_id(self) -> str:
        return device_id_for(self.public_bytes)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    @staticmethod
    def generate() -> DeviceIdentity:
        return DeviceIdentity(Ed25519PrivateKey.generate())

    def save(self, path: Path) -> None:
        """Write the private key, readable by its owner only (mode 0600)."""
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(path, pem, mode=0o600)

    @staticmethod
    def load(path: Path) -> DeviceIdentity:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise LibraryCorrupt(
                f"The device key {path} is missing; restore the library from a backup."
            ) from None
        except (ValueError, TypeError) as exc:
            raise LibraryCorrupt(f"The device key {path} is unreadable ({exc}).") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise LibraryCorrupt(f"The device key {path} is not an Ed25519 key.")
        return DeviceIdentity(key)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except Exception:
        return False
    return True
