"""Known answers for the relay's password key derivation (protocol/relay.md §1), for make_vectors.py.

Written from the spec alone and independent of p2psync and of OpenSSL: Argon2id is implemented
here in pure Python from RFC 9106 (and checked against the RFC's own Argon2id test vector before
anything is written), scrypt is the standard library's, HKDF is written out with HMAC. Pure Python
Argon2 is slow, so the cases use small memory (the production parameters, 64 MiB and 10 passes,
are stated in the file but not derived here); the derivation is the same code path at any size.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from typing import Any

MASK = (1 << 64) - 1
BLOCK_WORDS = 128  # 1024 bytes
SYNC_POINTS = 4
ACCOUNT_SALT = b"p2psync/1 account\x00"
PRODUCTION = {"name": "argon2id", "memory_kib": 65536, "iterations": 10, "lanes": 1}
LEGACY = {"name": "scrypt", "n": 32768, "r": 8, "p": 1}


# --- Argon2id, RFC 9106 --------------------------------------------------------------------------


def _blake2b(data: bytes, size: int = 64) -> bytes:
    return hashlib.blake2b(data, digest_size=size).digest()


def _h_prime(data: bytes, size: int) -> bytes:
    """H' (RFC 9106 §3.3): BLAKE2b stretched to `size` bytes."""
    data = struct.pack("<I", size) + data
    if size <= 64:
        return _blake2b(data, size)
    rounds = -(-size // 32) - 2
    block = _blake2b(data)
    out = [block[:32]]
    for _ in range(rounds - 1):
        block = _blake2b(block)
        out.append(block[:32])
    out.append(_blake2b(block, size - 32 * rounds))
    return b"".join(out)


def _gb(v: list[int], a: int, b: int, c: int, d: int) -> None:
    def mix(x: int, y: int) -> int:
        return (x + y + 2 * (x & 0xFFFFFFFF) * (y & 0xFFFFFFFF)) & MASK

    def rot(x: int, n: int) -> int:
        return ((x >> n) | (x << (64 - n))) & MASK

    v[a] = mix(v[a], v[b])
    v[d] = rot(v[d] ^ v[a], 32)
    v[c] = mix(v[c], v[d])
    v[b] = rot(v[b] ^ v[c], 24)
    v[a] = mix(v[a], v[b])
    v[d] = rot(v[d] ^ v[a], 16)
    v[c] = mix(v[c], v[d])
    v[b] = rot(v[b] ^ v[c], 63)


def _permute(v: list[int]) -> None:
    """P on 16 words (RFC 9106 §3.6)."""
    for a, b, c, d in (
        (0, 4, 8, 12),
        (1, 5, 9, 13),
        (2, 6, 10, 14),
        (3, 7, 11, 15),
        (0, 5, 10, 15),
        (1, 6, 11, 12),
        (2, 7, 8, 13),
        (3, 4, 9, 14),
    ):
        _gb(v, a, b, c, d)


_ROWS = [[16 * i + k for k in range(16)] for i in range(8)]
_COLUMNS = [[16 * k + 2 * j + half for k in range(8) for half in (0, 1)] for j in range(8)]


def _compress(x: list[int], y: list[int]) -> list[int]:
    """G (RFC 9106 §3.5): P on the rows, then on the columns, of X xor Y, xored with X xor Y."""
    r = [a ^ b for a, b in zip(x, y, strict=True)]
    q = list(r)
    for index in (*_ROWS, *_COLUMNS):
        v = [q[i] for i in index]
        _permute(v)
        for i, value in zip(index, v, strict=True):
            q[i] = value
    return [a ^ b for a, b in zip(q, r, strict=True)]


def _words(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{BLOCK_WORDS}Q", data))


def _bytes(words: list[int]) -> bytes:
    return struct.pack(f"<{BLOCK_WORDS}Q", *words)


def argon2id(
    password: bytes, salt: bytes, memory_kib: int, iterations: int, lanes: int, size: int = 32,
    secret: bytes = b"", data: bytes = b"",
) -> bytes:  # fmt: skip
    """Argon2id version 0x13 (type y = 2), RFC 9106 §3."""
    h0 = _blake2b(
        b"".join(
            [
                struct.pack("<IIIIII", lanes, size, memory_kib, iterations, 0x13, 2),
                struct.pack("<I", len(password)) + password,
                struct.pack("<I", len(salt)) + salt,
                struct.pack("<I", len(secret)) + secret,
                struct.pack("<I", len(data)) + data,
            ]
        )
    )
    blocks = 4 * lanes * (memory_kib // (4 * lanes))
    columns = blocks // lanes
    segment = columns // SYNC_POINTS
    memory = [[[0] * BLOCK_WORDS for _ in range(columns)] for _ in range(lanes)]
    for lane in range(lanes):
        for j in (0, 1):
            memory[lane][j] = _words(_h_prime(h0 + struct.pack("<II", j, lane), 1024))
    zero = [0] * BLOCK_WORDS
    for pass_ in range(iterations):
        for slice_ in range(SYNC_POINTS):
            for lane in range(lanes):
                independent = pass_ == 0 and slice_ < SYNC_POINTS // 2  # Argon2id: i for the first half pass
                addresses: list[int] = []
                counter = 0
                for index in range(segment):
                    if pass_ == 0 and slice_ == 0 and index < 2:
                        continue
                    column = slice_ * segment + index
                    previous = column - 1 if column else columns - 1
                    if independent:
                        if index % 128 == 0 or not addresses:
                            counter += 1
                            z = [pass_, lane, slice_, blocks, iterations, 2, counter] + [0] * (BLOCK_WORDS - 7)
                            addresses = _compress(zero, _compress(zero, z))
                        pseudo = addresses[index % 128]
                    else:
                        pseudo = memory[lane][previous][0]
                    j1, j2 = pseudo & 0xFFFFFFFF, pseudo >> 32
                    ref_lane = lane if pass_ == 0 and slice_ == 0 else j2 % lanes
                    same = ref_lane == lane
                    if pass_ == 0:
                        area = slice_ * segment + (index - 1 if same else (-1 if index == 0 else 0))
                    else:
                        area = columns - segment + (index - 1 if same else (-1 if index == 0 else 0))
                    relative = area - 1 - ((area * ((j1 * j1) >> 32)) >> 32)
                    start = 0 if pass_ == 0 or slice_ == SYNC_POINTS - 1 else (slice_ + 1) * segment
                    ref = memory[ref_lane][(start + relative) % columns]
                    new = _compress(memory[lane][previous], ref)
                    if pass_ == 0:
                        memory[lane][column] = new
                    else:
                        memory[lane][column] = [a ^ b for a, b in zip(memory[lane][column], new, strict=True)]
    final = memory[0][columns - 1]
    for lane in range(1, lanes):
        final = [a ^ b for a, b in zip(final, memory[lane][columns - 1], strict=True)]
    return _h_prime(_bytes(final), size)


# RFC 9106 §5.3, the Argon2id test vector: the implementation above must give it before it is used.
RFC_TAG = "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"


def _check_against_rfc() -> None:
    tag = argon2id(b"\x01" * 32, b"\x02" * 16, 32, 3, 4, 32, secret=b"\x03" * 8, data=b"\x04" * 12)
    if tag.hex() != RFC_TAG:
        raise AssertionError(f"the Argon2id written here disagrees with RFC 9106's test vector: {tag.hex()}")


# --- the relay's keys ----------------------------------------------------------------------------


def _hkdf(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) with no salt, 32 bytes: one expand block."""
    prk = hmac.new(b"\x00" * 32, secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def _master(kdf: dict[str, Any], password: bytes, salt: bytes) -> bytes:
    if kdf["name"] == "scrypt":
        return hashlib.scrypt(password, salt=salt, n=kdf["n"], r=kdf["r"], p=kdf["p"], maxmem=64 << 20, dklen=32)
    return argon2id(password, salt, kdf["memory_kib"], kdf["iterations"], kdf["lanes"])


def _case(name: str, typed: str, password: str, kdf: dict[str, Any]) -> dict[str, Any]:
    email = typed.strip().lower()
    salt = ACCOUNT_SALT + email.encode("utf-8")
    master = _master(kdf, password.encode("utf-8"), salt)
    login_key = _hkdf(master, b"p2psync/1 login")
    return {
        "name": name,
        "email typed": typed,
        "email": email,
        "password": password,
        "kdf": kdf,
        "salt (hex)": salt.hex(),
        "master (hex)": master.hex(),
        "login_key (hex)": login_key.hex(),
        "login_key (base64, as sent)": base64.b64encode(login_key).decode("ascii"),
        "wrap_key (hex)": _hkdf(master, b"p2psync/1 wrap").hex(),
    }


def kdf_vectors() -> dict[str, Any]:
    _check_against_rfc()
    argon = {"name": "argon2id", "memory_kib": 256, "iterations": 2, "lanes": 1}
    return {
        "about": (
            "protocol/relay.md §1: login_key and wrap_key from the e-mail and the password, for each kdf. "
            "The Argon2id cases use small parameters (pure-Python Argon2 here); accounts use 'production'."
        ),
        "production": PRODUCTION,
        "cases": [
            _case("argon2id, small parameters", "  Ada@Example.ORG ", "correct horse battery", argon),
            _case(
                "argon2id, two lanes, non-ASCII password",
                "bob@example.org",
                "Grüße aus Zürich, 東京",
                {"name": "argon2id", "memory_kib": 512, "iterations": 1, "lanes": 2},
            ),
            _case("scrypt, the first release's parameters", "ada@example.org", "correct horse battery", LEGACY),
        ],
        "bounds": {
            "about": "what a device accepts from /prelogin (relay.md §1, bounds), without the test variable",
            "accepted": [
                PRODUCTION,
                LEGACY,
                {"name": "argon2id", "memory_kib": 131072, "iterations": 5, "lanes": 4},
                {"name": "argon2id", "memory_kib": 1048576, "iterations": 10, "lanes": 16},
            ],
            "refused": [
                {"name": "argon2id", "memory_kib": 65536, "iterations": 9, "lanes": 1},
                {"name": "argon2id", "memory_kib": 32768, "iterations": 40, "lanes": 1},
                {"name": "argon2id", "memory_kib": 256, "iterations": 1, "lanes": 1},
                {"name": "argon2id", "memory_kib": 2097152, "iterations": 1, "lanes": 1},
                {"name": "argon2id", "memory_kib": 1048576, "iterations": 11, "lanes": 1},
                {"name": "argon2id", "memory_kib": 65536, "iterations": 10, "lanes": 17},
                {"name": "scrypt", "n": 16384, "r": 8, "p": 1},
                {"name": "scrypt", "n": 65536, "r": 8, "p": 1},
            ],
        },
    }
