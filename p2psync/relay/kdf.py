"""The password's key derivation (protocol/relay.md §1): which function, which parameters a device
and a relay accept, and the derivation itself. Sans-IO; the device and the relay share it.

Two functions, each named on the wire with its parameters:
- "argon2id" (memory_kib, iterations, lanes): every account made or upgraded now. PRODUCTION is
  64 MiB, 10 passes, 1 lane: about 0.5 s and 64 MiB once per login on the reference machine
  (docs/security.md), memory-hard so that guessing on GPUs and ASICs gains little.
- "scrypt" (n = 2^15, r = 8, p = 1, exactly): the first release's. Accepted only so that accounts
  made then still log in; the device then upgrades them to Argon2id (link_rules.py, via
  relay/account_keys.py), and the relay no longer names scrypt for them.

The relay tells a device an account's parameters before it logs in (POST /prelogin), so they are
the relay's say-so: a device checks them against a floor (never weaker than PRODUCTION, or the
first release's scrypt) and a ceiling (a relay must not make a device spend gigabytes or minutes).

Tests make many accounts: $P2PSYNC_TEST_ONLY_WEAK_KDF=1 (and only the value 1) lowers the default
and the floor to TEST_PARAMS, in the device and in the relay alike. Without it a device refuses
those parameters and a relay refuses accounts made with them, so a test setting cannot slip into
real use unnoticed; any other value is an error, not a silent choice.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from p2psync.errors import InvalidValue, RelayInsecure

ARGON2ID = "argon2id"
SCRYPT = "scrypt"
KEY_BYTES = 32
TEST_ENV = "P2PSYNC_TEST_ONLY_WEAK_KDF"

# Beyond these a relay's request is refused: at most 1 GiB of memory and about 16 times the
# production work (a few seconds here), so that a hostile relay cannot stall or exhaust a device.
MAX_MEMORY_KIB = 1024 * 1024
MAX_WORK = 16 * 65536 * 10  # memory_kib * iterations
MAX_LANES = 16


@dataclass(frozen=True)
class KdfParams:
    """One function and its parameters (the unused ones stay 0)."""

    name: str
    memory_kib: int = 0
    iterations: int = 0
    lanes: int = 0
    n: int = 0
    r: int = 0
    p: int = 0

    def as_wire(self) -> dict[str, Any]:
        if self.name == SCRYPT:
            return {"name": SCRYPT, "n": self.n, "r": self.r, "p": self.p}
        return {"name": ARGON2ID, "memory_kib": self.memory_kib, "iterations": self.iterations, "lanes": self.lanes}

    def as_text(self) -> str:
        """The canonical JSON the relay stores and the device remembers."""
        return json.dumps(self.as_wire(), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_wire(value: Any) -> KdfParams:
        """Parsed strictly; ValueError (a clause, no full stop) if it is not one of the two shapes."""
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise ValueError("'kdf' must be an object with a 'name'")
        fields = {ARGON2ID: ("memory_kib", "iterations", "lanes"), SCRYPT: ("n", "r", "p")}.get(value["name"])
        if fields is None:
            raise ValueError(f"the key derivation {value['name'][:40]!r} is unknown (known: argon2id, scrypt)")
        if set(value) != {"name", *fields}:
            raise ValueError(f"'kdf' {value['name']} takes exactly {', '.join(fields)}")
        numbers = [value[f] for f in fields]
        if not all(type(v) is int and 1 <= v <= 2**32 for v in numbers):
            raise ValueError(f"the parameters of {value['name']} must be whole numbers from 1 to 2^32")
        return KdfParams(value["name"], **dict(zip(fields, numbers, strict=True)))

    @staticmethod
    def from_text(text: str | None) -> KdfParams:
        """What the relay stored (None: an account of the first release, scrypt)."""
        return LEGACY if text is None else KdfParams.from_wire(json.loads(text))

    @property
    def work(self) -> int:
        return self.memory_kib * self.iterations

    def describe(self) -> str:
        if self.name == SCRYPT:
            return f"scrypt (n = {self.n}, r = {self.r}, p = {self.p})"
        return f"Argon2id ({_size(self.memory_kib)}, {self.iterations} passes, {self.lanes} lanes)"


PRODUCTION = KdfParams(ARGON2ID, memory_kib=65536, iterations=10, lanes=1)
LEGACY = KdfParams(SCRYPT, n=2**15, r=8, p=1)
TEST_PARAMS = KdfParams(ARGON2ID, memory_kib=256, iterations=1, lanes=1)


def _size(kib: int) -> str:
    return f"{kib // 1024} MiB" if kib % 1024 == 0 else f"{kib} KiB"


def test_mode() -> bool:
    """Whether $P2PSYNC_TEST_ONLY_WEAK_KDF=1 is set (tests only); any other value is refused."""
    value = os.environ.get(TEST_ENV, "")
    if value not in ("", "1"):
        raise InvalidValue(f"${TEST_ENV} is for p2psync's tests only and may be 1 or unset, not {value[:20]!r}.")
    return value == "1"


def default_params() -> KdfParams:
    """What a new account (or an upgrade, or a password change) uses."""
    return TEST_PARAMS if test_mode() else PRODUCTION


def problem(params: KdfParams) -> str | None:
    """Why a device must not derive with these parameters (a clause), or None if it may."""
    floor = default_params()
    if params.name == SCRYPT:
        if params != LEGACY:
            return (
                "weaker than this p2psync accepts: scrypt only with the first release's parameters "
                "(n = 32768, r = 8, p = 1)"
            )
        return None
    if params.memory_kib > MAX_MEMORY_KIB or params.work > MAX_WORK or params.lanes > MAX_LANES:
        return (
            f"more than this p2psync spends on it (at most {_size(MAX_MEMORY_KIB)} and {MAX_WORK // 65536} passes "
            f"over 64 MiB, {MAX_LANES} lanes)"
        )
    if params.memory_kib < floor.memory_kib or params.work < floor.work or params.memory_kib < 8 * params.lanes:
        return f"weaker than this p2psync accepts (at least {_size(floor.memory_kib)} and {floor.iterations} passes)"
    return None


def check(params: KdfParams) -> KdfParams:
    """params, or RelayInsecure in one sentence if they are out of bounds."""
    reason = problem(params)
    if reason is not None:
        raise RelayInsecure(f"Refused to derive the password's keys with {params.describe()}: {reason}.")
    return params


def from_request(value: Any) -> KdfParams | None:
    """The parameters a request to the relay names; None if it names none (a device of the first
    release: scrypt). ValueError if malformed, RelayInsecure if out of bounds."""
    return None if value is None else check(KdfParams.from_wire(value))


def weaker(params: KdfParams, than: KdfParams) -> bool:
    """Whether params cost an attacker less than `than` (scrypt is weaker than any Argon2id here)."""
    if params.name == SCRYPT or than.name == SCRYPT:
        return params.name == SCRYPT and than.name != SCRYPT
    return params.memory_kib < than.memory_kib or params.work < than.work


def needs_upgrade(params: KdfParams) -> bool:
    """Whether an account with these parameters is moved to default_params() at its next login."""
    return weaker(params, default_params())


def derive(params: KdfParams, password: bytes, salt: bytes) -> bytes:
    """The 32-byte master secret (relay.md §1); params are checked first."""
    check(params)
    if params.name == SCRYPT:
        return Scrypt(salt=salt, length=KEY_BYTES, n=params.n, r=params.r, p=params.p).derive(password)
    kdf = Argon2id(
        salt=salt, length=KEY_BYTES, iterations=params.iterations, lanes=params.lanes, memory_cost=params.memory_kib
    )
    return kdf.derive(password)
