"""A device's identity: an Ed25519 key pair per library on each machine.

The device id is derived from the public key (model/devices.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2psync.errors import LibraryCorrupt
from p2psync.model.devices import device_id_for
from p2psync.store.files import write_atomic

INTRODUCTION_DOMAIN = b"p2psync/1 device introduction\x00"


def introduction_message(library_id: str, device_id: str, public_key: bytes) -> bytes:
    """What a member signs to introduce a new device into a library (domain-separated)."""
    return INTRODUCTION_DOMAIN + library_id.encode("ascii") + b"\x00" + device_id.encode("ascii") + b"\x00" + public_key


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
