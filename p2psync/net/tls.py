"""Mutual TLS between devices, with each side pinning the other's device key.

Every device's TLS certificate carries its Ed25519 device key, so the TLS handshake proves that
the other end holds the private key of the device it claims to be; after the handshake each side
checks that key against the keys it accepts (the library's members, or during pairing, anyone).

Python's ssl module cannot request a client certificate without verifying its chain, nor run a
callback during verification. So certificates are issued by a well-known issuer whose private
key is derived from a public constant: it carries no trust at all (anyone can issue with it), it
only makes OpenSSL accept and request the certificates. Trust comes entirely from pinning the
leaf's public key, checked at the end of the handshake on the client (PinnedSSLObject, before a
single byte of the request is sent) and per request on the server (peer_key). Certificates are
deterministic (fixed fields, Ed25519 signatures), so they are derived, never stored as secrets.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from p2psync.crypto.identity import DeviceIdentity
from p2psync.files import write_atomic

_ISSUER_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"p2psync/1 well-known TLS issuer").digest())
_ISSUER_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p2psync device certificates")])
_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


def _issuer_certificate() -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_ISSUER_NAME)
        .issuer_name(_ISSUER_NAME)
        .public_key(_ISSUER_KEY.public_key())
        .serial_number(1)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(_ISSUER_KEY, None)
    )


ISSUER_PEM = _issuer_certificate().public_bytes(serialization.Encoding.PEM).decode("ascii")


def device_certificate(identity: DeviceIdentity) -> bytes:
    """The PEM certificate for a device key (the same bytes every time for the same key)."""
    public = identity.public_bytes
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.device_id)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(_ISSUER_NAME)
        .public_key(Ed25519PublicKey.from_public_bytes(public))
        .serial_number(int.from_bytes(hashlib.sha256(public).digest()[:16], "big") >> 1)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(_ISSUER_KEY, None)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def key_of_certificate(der: bytes) -> bytes | None:
    """The Ed25519 public key in a DER certificate, or None if it holds anything else."""
    try:
        key = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        return None
    if not isinstance(key, Ed25519PublicKey):
        return None
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def peer_key(ssl_object: Any) -> bytes | None:
    """The device key the other end proved in the handshake (None: it presented no certificate)."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return key_of_certificate(der) if der else None


class PinnedSSLObject(ssl.SSLObject):
    """Ends the handshake with an error unless the server's key is one the context accepts."""

    def do_handshake(self) -> None:
        super().do_handshake()
        accept: Callable[[bytes], bool] = self.context.p2psync_accept  # type: ignore[attr-defined]
        key = peer_key(self)
        if key is None or not accept(key):
            self.context.p2psync_refused = key  # type: ignore[attr-defined]
            raise ssl.SSLError("the peer's device key is not one this library trusts")


def certificate_files(identity: DeviceIdentity, key_file: Path, folder: Path) -> tuple[Path, Path]:
    """(certificate, private key) files for ssl.load_cert_chain; the certificate is derived
    from the key and rewritten if missing or stale."""
    cert_file = folder / "tls-certificate.pem"
    pem = device_certificate(identity)
    if not cert_file.exists() or cert_file.read_bytes() != pem:
        write_atomic(cert_file, pem)
    return cert_file, key_file


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS 1.3 only; asks every client for its certificate but lets one without it reach the
    pairing endpoint (every other endpoint checks peer_key against the members)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cadata=ISSUER_PEM)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def client_context(cert_file: Path, key_file: Path, accept: Callable[[bytes], bool]) -> ssl.SSLContext:
    """TLS 1.3 only; presents our certificate and refuses a server whose key `accept` rejects."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # peers are named by key, not by host name
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cadata=ISSUER_PEM)
    context.p2psync_accept = accept  # type: ignore[attr-defined]
    context.p2psync_refused = None  # type: ignore[attr-defined]
    context.sslobject_class = PinnedSSLObject
    return context
