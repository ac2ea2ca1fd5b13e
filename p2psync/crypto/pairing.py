"""The cryptographic core of device pairing (protocol/pairing.md), without any I/O.

Two machines that share a short one-time code (`4-crossover-clockwork`) run SPAKE2 over a TLS
connection whose certificates are the two device keys. Each side then proves, with a MAC, that it
derived the same key *and* saw the same two device keys on the TLS connection; only after both proofs
check do they exchange one encrypted payload each way (device keys and library identity, which the
caller then pins). The code has 16 secret bits, which is enough because SPAKE2 gives an attacker one
guess per run and the offering side burns the code after one failed run.

Transport, mDNS and persistence are the caller's job; this module only turns bytes into bytes, so
that the protocol can be tested without a network and implemented again from the spec.

Details decided here beyond the design notes: the transcript hash is also the HKDF salt of both
derived keys, so the data key itself (not only the confirmation) depends on the TLS keys each side
saw; any failure, out-of-order call or misuse burns the object, because a half-used pairing state is
only ever useful to an attacker.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_A, SPAKE2_B

from p2psync.crypto.wordlist import WORDS
from p2psync.engine import canonical
from p2psync.errors import InvalidValue, PeerRefused

Role = Literal["offer", "join"]

ID_OFFER = b"p2psync/1 offer"
ID_JOIN = b"p2psync/1 join"
INFO_CONFIRM = b"p2psync/1 pairing confirm"
INFO_DATA = b"p2psync/1 pairing data"

NAMEPLATE_MIN = 1
NAMEPLATE_MAX = 99
CODE_WORDS = 2
KEY_SIZE = 32  # an Ed25519 public key, raw
MESSAGE_SIZE = 33  # a SPAKE2 message: one side byte (b"A" or b"B") and an Ed25519 group element
CONFIRMATION_SIZE = 32  # HMAC-SHA256
MAX_PAYLOAD = 64 * 1024  # bytes of canonical JSON before encryption
MAX_INT = 2**53
SEAL_OVERHEAD = 16  # the Poly1305 tag; a sealed blob is at most MAX_PAYLOAD + SEAL_OVERHEAD bytes

CODE_FORMAT = "A pairing code looks like 4-crossover-clockwork: a number and two words."
FAILED = "The pairing code was wrong, or someone interfered; the code is now used up. Start again with a new code."

_WORD_SET = frozenset(WORDS)
_SEPARATOR = re.compile(r"\s*-\s*|\s+")


class PairingFailed(PeerRefused):
    """The other side did not prove it knows the code and saw our key: never pin anything from it."""


class PairingStateError(PairingFailed):
    """A Pairing method was called out of order or twice: a bug in the caller, or a replay."""


# --- the one-time code ------------------------------------------------------------------------


@dataclass(frozen=True)
class Code:
    """A parsed pairing code; constructing one checks it, so a Pairing only ever sees valid codes."""

    nameplate: int
    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if (
            isinstance(self.nameplate, bool)
            or not isinstance(self.nameplate, int)
            or not NAMEPLATE_MIN <= self.nameplate <= NAMEPLATE_MAX
            or not isinstance(self.words, tuple)
            or len(self.words) != CODE_WORDS
            or any(word not in _WORD_SET for word in self.words)
        ):
            raise InvalidValue(CODE_FORMAT)

    def __str__(self) -> str:
        return "-".join((str(self.nameplate), *self.words))

    @property
    def password(self) -> bytes:
        """The SPAKE2 password: the normalised code, so that every way of typing it agrees."""
        return str(self).encode("ascii")


def make_code() -> str:
    """A fresh code, "N-word-word": a nameplate (to find the offer on mDNS, not secret) and two secret words."""
    nameplate = NAMEPLATE_MIN + secrets.randbelow(NAMEPLATE_MAX - NAMEPLATE_MIN + 1)
    return str(Code(nameplate, tuple(secrets.choice(WORDS) for _ in range(CODE_WORDS))))


def parse_code(text: str) -> Code:
    """Read a code as a person typed it: any case, spaces around it, spaces or hyphens between parts."""
    if not isinstance(text, str):
        raise InvalidValue(CODE_FORMAT)
    parts = _SEPARATOR.split(text.strip())
    if len(parts) != 1 + CODE_WORDS:
        raise InvalidValue(CODE_FORMAT)
    number, *words = parts
    if not (number.isascii() and number.isdigit() and len(number) <= 2):
        raise InvalidValue(CODE_FORMAT)
    return Code(int(number), tuple(word.lower() for word in words))


# --- one side of one pairing run ----------------------------------------------------------------


def _framed(*items: bytes) -> bytes:
    return b"".join(len(item).to_bytes(4, "big") + item for item in items)


def transcript_hash(
    offer_message: bytes, join_message: bytes, offer_key: bytes, join_key: bytes, nameplate: int
) -> bytes:
    """SHA-256 of everything both sides must agree on, in one order whatever the role."""
    return hashlib.sha256(
        _framed(offer_message, join_message, offer_key, join_key, str(nameplate).encode("ascii"))
    ).digest()


def _derive(spake_key: bytes, transcript: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=transcript, info=info).derive(spake_key)


_NEW, _STARTED, _FINISHED, _CONFIRMED, _DEAD = range(5)
_LABEL: dict[str, bytes] = {"offer": ID_OFFER, "join": ID_JOIN}
_DIRECTION: dict[str, bytes] = {"offer": b"\x00", "join": b"\x01"}  # who seals: 0 offer->join, 1 join->offer


class Pairing:
    """One side of one pairing attempt: start, finish, confirm, then seal one payload and open one.

    Usable once. Any failure or out-of-order call burns it, so a replayed or reflected message can
    never be tried twice against the same secret.
    """

    def __init__(self, code: Code, role: Role, own_key: bytes) -> None:
        if not isinstance(code, Code):
            raise InvalidValue(CODE_FORMAT)
        if role not in _LABEL:
            raise InvalidValue(f"A pairing role is 'offer' or 'join', not {role!r}.")
        if not isinstance(own_key, bytes) or len(own_key) != KEY_SIZE:
            raise InvalidValue("A device key for pairing is a raw Ed25519 public key of 32 bytes.")
        self.code = code
        self.role: Role = role
        self.own_key = own_key
        spake_class = SPAKE2_A if role == "offer" else SPAKE2_B
        self._spake: Any = spake_class(code.password, idA=ID_OFFER, idB=ID_JOIN)
        self._state = _NEW
        self._own_message = b""
        self._transcript = b""
        self._confirm_key = b""
        self._data_key = b""
        self._sealed = False
        self._opened = False

    def start(self) -> bytes:
        """This side's SPAKE2 message (MESSAGE_SIZE bytes), to send to the other side."""
        self._expect(_NEW)
        self._own_message = bytes(self._spake.start())
        self._state = _STARTED
        return self._own_message

    def finish(self, peer_message: bytes, peer_key: bytes) -> bytes:
        """Take the peer's SPAKE2 message and its key as seen on TLS; return our confirmation.

        Nothing here tells whether the code was right: that is confirm()'s job.
        """
        self._expect(_STARTED)
        if (
            not isinstance(peer_message, bytes)
            or len(peer_message) != MESSAGE_SIZE
            or not isinstance(peer_key, bytes)
            or len(peer_key) != KEY_SIZE
            or peer_key == self.own_key  # our own key reflected back: never pair a device with itself
        ):
            self._fail()
        try:
            spake_key = bytes(self._spake.finish(peer_message))
        except Exception:  # any refusal of the foreign library (wrong side, bad point, reflection) means the same
            self._fail()
        if self.role == "offer":
            transcript = transcript_hash(self._own_message, peer_message, self.own_key, peer_key, self.code.nameplate)
        else:
            transcript = transcript_hash(peer_message, self._own_message, peer_key, self.own_key, self.code.nameplate)
        self._transcript = transcript
        self._confirm_key = _derive(spake_key, transcript, INFO_CONFIRM)
        self._data_key = _derive(spake_key, transcript, INFO_DATA)
        self._state = _FINISHED
        return self._confirmation(self.role)

    def confirm(self, peer_confirmation: bytes) -> None:
        """Check the peer's confirmation; raises PairingFailed (and burns the code) if it is wrong."""
        self._expect(_FINISHED)
        peer_role: Role = "join" if self.role == "offer" else "offer"
        if not isinstance(peer_confirmation, bytes) or not hmac.compare_digest(
            peer_confirmation, self._confirmation(peer_role)
        ):
            self._fail()
        self._confirm_key = b""
        self._state = _CONFIRMED

    def seal(self, payload: dict[str, Any]) -> bytes:
        """Encrypt this side's one payload (a JSON object) for the peer; only after confirm()."""
        self._expect(_CONFIRMED)
        if self._sealed:
            self._misuse("seal() can be called only once per pairing")
        if not isinstance(payload, dict) or not _plain_json(payload):
            raise InvalidValue("A pairing payload is a JSON object of strings, integers, booleans, nulls and arrays.")
        try:
            plain = canonical.encode(payload)
        except TypeError as exc:  # orjson.JSONEncodeError
            raise InvalidValue(f"A pairing payload must be plain JSON ({exc}).") from None
        if len(plain) > MAX_PAYLOAD:
            raise InvalidValue(f"A pairing payload is at most {MAX_PAYLOAD} bytes of JSON, not {len(plain)}.")
        self._sealed = True
        return ChaCha20Poly1305(self._data_key).encrypt(_nonce(self.role), plain, None)

    def open(self, blob: bytes) -> dict[str, Any]:
        """Decrypt the peer's one payload; PairingFailed if it was altered, cut or is our own."""
        self._expect(_CONFIRMED)
        if self._opened:
            self._misuse("open() can be called only once per pairing")
        self._opened = True
        peer_role: Role = "join" if self.role == "offer" else "offer"
        if not isinstance(blob, bytes) or not SEAL_OVERHEAD <= len(blob) <= MAX_PAYLOAD + SEAL_OVERHEAD:
            self._fail()
        try:
            plain = ChaCha20Poly1305(self._data_key).decrypt(_nonce(peer_role), blob, None)
        except InvalidTag:
            self._fail()
        try:
            payload = canonical.loads(plain)
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not _plain_json(payload):
            self._state = _DEAD
            raise PairingFailed("The other device sent a pairing payload this version cannot read; update p2psync.")
        return payload

    # --- internals ---

    def _confirmation(self, role: Role) -> bytes:
        return hmac.new(self._confirm_key, _LABEL[role] + self._transcript, hashlib.sha256).digest()

    def _expect(self, state: int) -> None:
        if self._state == _DEAD:
            raise PairingStateError("This pairing attempt is over; start again with a new code.")
        if self._state != state:
            self._misuse("pairing steps must run once each, in the order start, finish, confirm, seal/open")

    def _misuse(self, what: str) -> NoReturn:
        self._burn()
        raise PairingStateError(f"Internal error: {what}; start again with a new code.")

    def _fail(self) -> NoReturn:
        self._burn()
        raise PairingFailed(FAILED)

    def _burn(self) -> None:
        self._state = _DEAD
        self._spake = None
        self._confirm_key = b""
        self._data_key = b""


def _plain_json(value: Any) -> bool:
    """The protocol's JSON (protocol/README.md): no floats, integers within 2^53, string keys."""
    if value is None or isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return -MAX_INT <= value <= MAX_INT
    if isinstance(value, list):
        return all(_plain_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain_json(item) for key, item in value.items())
    return False


def _nonce(sealer: Role) -> bytes:
    """Each key seals at most one message per direction, so a fixed nonce per direction is safe."""
    return _DIRECTION[sealer] + bytes(11)
