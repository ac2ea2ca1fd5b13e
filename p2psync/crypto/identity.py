"""A device's identity: an Ed25519 key pair per library on each machine.

The device id is derived from the public key (model/devices.py). cryptography is imported by
the methods that use a key, not with the module: the store imports this module, and `ref list`
or `info` never touch a key (about 15 ms of every start, docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from p2psync.engine.changesets import introduction
from p2psync.errors import LibraryCorrupt
from p2psync.files import write_atomic
from p2psync.model.devices import device_id_for

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def introduction_message(library_id: str, device_id: str, public_key: bytes) -> bytes:
    """What a member signs to introduce a new device into a library (see engine/changesets.py)."""
    return introduction(library_id, device_id, public_key)


@dataclass(frozen=True)
class DeviceIdentity:
    """A device's key pair; `private_key` is None for another device known by its public key."""

    private_key: Ed25519PrivateKey | None
    public_key_bytes: bytes = b""

    @property
    def public_bytes(self) -> bytes:
        if self.private_key is None:
            return self.public_key_bytes
        from cryptography.hazmat.primitives import serialization

        return self.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @staticmethod
    def from_public(public_key: bytes) -> DeviceIdentity:
        if len(public_key) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        return DeviceIdentity(None, public_key)

    @property
    def device_id(self) -> str:
        return device_id_for(self.public_bytes)

    def sign(self, message: bytes) -> bytes:
        if self.private_key is None:
            raise ValueError("cannot sign with another device's public key")
        return self.private_key.sign(message)

    @staticmethod
    def generate() -> DeviceIdentity:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return DeviceIdentity(Ed25519PrivateKey.generate())

    def save(self, path: Path) -> None:
        """Write the private key, readable by its owner only (mode 0600)."""
        assert self.private_key is not None
        from cryptography.hazmat.primitives import serialization

        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(path, pem, mode=0o600)

    @staticmethod
    def load(path: Path) -> DeviceIdentity:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise LibraryCorrupt(f"The device key {path} is missing; restore the library from a backup.") from None
        except Exception as exc:  # any failure of the foreign parser means the same to the user
            raise LibraryCorrupt(f"The device key {path} is unreadable ({exc}).") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise LibraryCorrupt(f"The device key {path} is not an Ed25519 key.")
        return DeviceIdentity(key)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except Exception:
        return False
    return True
