"""Vectors: content-defined chunking (FastCDC, attachments.md §2) and the /chunks frames."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from vectors_model import op_schema, rules
from vectors_model.canonical_text import encode
from vectors_model.spec import RA

# --- attachments: content-defined chunking and the /chunks endpoint (attachments.md) ----------

_U64 = (1 << 64) - 1
# attachments.md §2.2: the masks of FastCDC 2020 for an average of 2^15 bytes, NC level 1.
SPEC_MASK_S = 0x0000D90303537000  # 16 bits set, used before the centre
SPEC_MASK_L = 0x0000D90313530000  # 14 bits set, used from the centre on
SPEC_MIN, SPEC_AVG, SPEC_MAX = 8192, 32768, 131072
SPEC_MAX_CHUNKS = 36_000  # chunks per manifest (§1.2)
SPEC_MAX_CHUNKS_PER_REQUEST = 512  # names per /chunks request (§4.1)


def spec_gear() -> list[int]:
    """GEAR[b] = the first 8 bytes, big-endian, of MD5 of 64 bytes each equal to b (attachments.md §2.2)."""
    return [int.from_bytes(hashlib.md5(bytes([b]) * 64).digest()[:8], "big") for b in range(256)]


def spec_cut(data: bytes, start: int, gear: list[int]) -> int:
    """The length of the chunk that starts at `start`, one byte at a time as attachments.md §2.3 says."""
    n = len(data) - start
    if n <= SPEC_MIN:
        return n
    center = SPEC_AVG
    if n > SPEC_MAX:
        n = SPEC_MAX
    elif n < center:
        center = n
    middle, end = center - center % 2, n - n % 2
    h = 0
    for i in range(SPEC_MIN, end):
        h = ((h << 1) + gear[data[start + i]]) & _U64
        if h & (SPEC_MASK_S if i < middle else SPEC_MASK_L) == 0:
            return i  # the byte at i starts the next chunk
    return n


def spec_chunks(data: bytes) -> list[list[Any]]:
    """The chunk list by the spec's recipe."""
    gear = spec_gear()
    out: list[list[Any]] = []
    at = 0
    while at < len(data):
        length = spec_cut(data, at, gear)
        out.append([hashlib.sha256(data[at : at + length]).hexdigest(), length])
        at += length
    return out


def sha256_stream(label: str, size: int) -> bytes:
    """stream(label, n): SHA-256(label || u32be(0)) || SHA-256(label || u32be(1)) || ..., first n bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(label.encode("ascii") + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:size])


def build_input(pieces: list[dict[str, Any]]) -> bytes:
    """An input from its recipe: the pieces concatenated (chunking.json 'pieces')."""
    out = bytearray()
    for piece in pieces:
        if "zeros" in piece:
            out += bytes(piece["zeros"])
        elif "hex" in piece:
            out += bytes.fromhex(piece["hex"])
        elif "text" in piece:
            out += piece["text"].encode("utf-8") * piece.get("repeat", 1)
        else:
            out += sha256_stream(piece["stream"], piece["bytes"])
    return bytes(out)


_PDF_LINE = "BT /F1 11 Tf 72 700 Td (Synaptic plasticity in the adult cortex: a review) Tj ET\n"
_PDF_ERRATUM = "BT /F1 11 Tf 72 690 Td (Erratum: see page 3) Tj ET\n"


def _pdf_like(text_run: list[dict[str, Any]], appended: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A buffer shaped like a PDF: text, two streams of incompressible bytes, a repeated text run."""
    return [
        {"text": "%PDF-1.7\n"},
        {"hex": "25e2e3cfd30a"},
        {
            "text": "1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n2 0 obj\n<< /Type /Pages /Kids [3 0 R] "
            "/Count 1 >>\nendobj\n4 0 obj\n<< /Length 262144 /Filter /FlateDecode >>\nstream\n"
        },
        {"stream": "p2psync/1 vectors: pdf fonts", "bytes": 262144},
        {"text": "\nendstream\nendobj\n5 0 obj\n<< /Length 150000 >>\nstream\n"},
        *text_run,
        {
            "text": "\nendstream\nendobj\n6 0 obj\n<< /Subtype /Image /Width 1200 /Height 800 /Length 400000 >>"
            "\nstream\n"
        },
        {"stream": "p2psync/1 vectors: pdf image", "bytes": 400000},
        {"text": "\nendstream\nendobj\nxref\n0 7\n"},
        {"text": "0000000000 65535 f \n", "repeat": 7},
        {"text": "trailer\n<< /Size 7 /Root 1 0 R >>\nstartxref\n812345\n%%EOF\n"},
        *appended,
    ]


_TAIL_TEXT = "p2psync/1: the byte that cuts starts the next chunk\n"


def chunking_inputs() -> list[tuple[str, str, list[dict[str, Any]], str | None]]:
    """(name, what it shows, pieces, the input it shares chunks with)."""

    def random_input(size: int) -> list[dict[str, Any]]:
        return [{"stream": f"p2psync/1 vectors: random {size}", "bytes": size}] if size else []

    run = [{"text": _PDF_LINE, "repeat": 1800}]
    edited = [{"text": _PDF_LINE, "repeat": 900}, {"text": _PDF_ERRATUM}, {"text": _PDF_LINE, "repeat": 900}]
    return [
        ("empty", "an empty file has no chunks", random_input(0), None),
        ("random 1", "one byte: one chunk", random_input(1), None),
        ("random 8191", "shorter than MIN_SIZE: one chunk", random_input(8191), None),
        ("random 8192", "exactly MIN_SIZE: one chunk, nothing is hashed", random_input(8192), None),
        ("random 100000", "random bytes: cuts where the content says", random_input(100_000), None),
        ("random 1000000", "1 MB of random bytes", random_input(1_000_000), None),
        (
            "zeros 300000",
            "the gear hash of a constant run never matches: MAX_SIZE cuts, and one chunk twice in the list",
            [{"zeros": 300_000}],
            None,
        ),
        (
            "earliest cut",
            "the hash first matches at byte MIN_SIZE + 1, which starts the second chunk",
            [{"zeros": 8192}, {"hex": "37d3"}, {"text": _TAIL_TEXT}],
            None,
        ),
        (
            "cut at the last byte",
            "an even rest: its last byte is examined and cuts, leaving a chunk of one byte",
            [{"zeros": 8292}, {"hex": "9ffe"}],
            None,
        ),
        (
            "last byte not examined",
            "an odd rest: its last byte is never examined (bytes are hashed in pairs), one chunk",
            [{"zeros": 8291}, {"hex": "9ffe"}],
            None,
        ),
        ("pdf-like", "a buffer shaped like a PDF (about 800 KB)", _pdf_like(run, []), None),
        (
            "pdf-like, 100 KB appended",
            "only the last chunk of pdf-like changes; new chunks follow",
            _pdf_like(run, [{"stream": "p2psync/1 vectors: appended update", "bytes": 100_000}]),
            "pdf-like",
        ),
        (
            "pdf-like, a line inserted",
            "an edit in the middle changes the chunks around it only",
            _pdf_like(edited, []),
            "pdf-like",
        ),
    ]


# The chunk lengths the crafted inputs exist to show (checked while generating).
_CRAFTED = {
    "zeros 300000": [131072, 131072, 37856],
    "earliest cut": [8193, 1 + len(_TAIL_TEXT)],
    "cut at the last byte": [8293, 1],
    "last byte not examined": [8293],
}


def _chunks_frame(datas: list[bytes | None]) -> bytes:
    """attachments.md §4.2: for each requested name, u32be(length) || bytes; length 0: not here."""
    return b"".join(struct.pack(">I", len(d)) + d if d else b"\x00\x00\x00\x00" for d in datas)


def chunking_vectors() -> dict[str, Any]:
    from pyfastcdc.py.constants import GEAR  # the table the reference's chunker uses

    gear = spec_gear()
    if gear != list(GEAR):
        raise SystemExit("pyfastcdc's gear table is not the one attachments.md §2.2 derives")
    # A manifest of MAX_CHUNKS chunks of MAX_SIZE fits in one operation (attachments.md §1.2).
    biggest = {
        "op": rules.ATTACHMENT_PUT,
        "ref": RA,
        "name": "x" * 255,
        "value": {
            "size": SPEC_MAX_CHUNKS * SPEC_MAX,
            "sha256": "0" * 64,
            "chunks": [["0" * 64, SPEC_MAX]] * SPEC_MAX_CHUNKS,
        },
        "seen": [],
    }
    if len(encode(biggest)) > rules.MAX_OP_BYTES:
        raise SystemExit("a manifest of MAX_CHUNKS chunks does not fit in one operation")

    inputs: list[dict[str, Any]] = []
    chunk_bytes_of: dict[str, bytes] = {}
    for name, note, pieces, base in chunking_inputs():
        data = build_input(pieces)
        chunks = spec_chunks(data)
        if name in _CRAFTED and [c[1] for c in chunks] != _CRAFTED[name]:
            raise SystemExit(f"the crafted input {name!r} no longer cuts as it should")
        at = 0
        for digest, length in chunks:
            chunk_bytes_of[digest] = data[at : at + length]
            at += length
        manifest = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "chunks": chunks}
        if not op_schema.is_manifest(manifest):
            raise SystemExit(f"the manifest of {name!r} does not validate")
        case: dict[str, Any] = {"name": name, "note": note, "pieces": pieces, "manifest": manifest}
        if base is not None:
            known = {digest for digest, _ in inputs[[i["name"] for i in inputs].index(base)]["manifest"]["chunks"]}
            shared = [c for c in chunks if c[0] in known]
            case["shared_with"] = {
                "input": base,
                "chunks": len(shared),
                "bytes": sum(c[1] for c in shared),
                "new_chunks": len(chunks) - len(shared),
                "new_bytes": len(data) - sum(c[1] for c in shared),
            }
        inputs.append(case)

    # The /chunks endpoint: a server that holds two small chunks and not a third.
    one = next(i for i in inputs if i["name"] == "random 1")["manifest"]["chunks"][0][0]
    earliest = next(i for i in inputs if i["name"] == "earliest cut")["manifest"]["chunks"]
    held = {one: chunk_bytes_of[one], earliest[1][0]: chunk_bytes_of[earliest[1][0]]}
    lacking = earliest[0][0]
    absent = hashlib.sha256(b"p2psync/1 vectors: a chunk nobody has").hexdigest()

    def answer(names: list[str]) -> bytes:
        return _chunks_frame([held.get(n) for n in names])

    def request(name: str, names: list[str]) -> dict[str, Any]:
        body = {"chunks": names}
        response = answer(names)
        return {
            "name": name,
            "body_text": encode(body).decode("ascii"),
            "status": 200,
            "response_hex": response.hex(),
        }

    ok = [
        request("two held, one missing between them", [one, lacking, earliest[1][0]]),
        request("a name asked twice is answered twice", [earliest[1][0], earliest[1][0]]),
    ]
    most = SPEC_MAX_CHUNKS_PER_REQUEST
    ok.append(
        {
            "name": f"{most} names, the most a request may hold, none held",
            "body_runs": [['{"chunks":[', 1], [f'"{absent}",', most - 1], [f'"{absent}"]}}', 1]],
            "status": 200,
            "response_hex_runs": [["00000000", most]],
        }
    )
    if "".join(t * c for t, c in ok[-1]["body_runs"]).encode() != encode({"chunks": [absent] * most}):
        raise SystemExit("body_runs do not spell the request")
    bad_texts = [
        ("not an object", "[]"),
        ("no chunks member", "{}"),
        ("chunks not a list", f'{{"chunks":"{one}"}}'),
        ("an empty list", '{"chunks":[]}'),
        ("a name in upper-case hex", f'{{"chunks":["{one.upper()}"]}}'),
        ("a name of 63 hex digits", f'{{"chunks":["{one[:63]}"]}}'),
        ("a name of 65 hex digits", f'{{"chunks":["{one}0"]}}'),
        ("a name that is not a string", '{"chunks":[1]}'),
        ("a null name", '{"chunks":[null]}'),
    ]
    bad: list[dict[str, Any]] = [{"name": n, "body_text": t, "status": 400, "error": "malformed"} for n, t in bad_texts]
    bad.append(
        {
            "name": f"{most + 1} names, one too many",
            "body_runs": [['{"chunks":[', 1], [f'"{absent}",', most], [f'"{absent}"]}}', 1]],
            "status": 400,
            "error": "malformed",
        }
    )
    return {
        "description": "Attachment chunking (attachments.md §2) and the /chunks endpoint (§4). Each input is "
        "built from its pieces, concatenated: {'zeros': n} n zero bytes; {'hex': h} those bytes; {'text': t, "
        "'repeat': k} t as UTF-8, k times (1 if absent); {'stream': label, 'bytes': n} the first n bytes of "
        "SHA-256(label || u32be(0)) || SHA-256(label || u32be(1)) || ..., label as ASCII. Cut it with the "
        "parameters below: the manifest is {size, sha256, chunks}, chunks [[sha256 hex, length], ...] in order. "
        "shared_with counts the chunks whose names also occur in another input's manifest. Requests: the server "
        "holds exactly the bytes of server_chunks (name -> hex); body_runs, like wire_runs, is [[text, count], "
        "...], each text repeated, concatenated, as UTF-8; response_hex_runs the same for hex.",
        "parameters": {
            "min_size": SPEC_MIN,
            "avg_size": SPEC_AVG,
            "max_size": SPEC_MAX,
            "normalization_level": 1,
            "mask_s_hex": f"{SPEC_MASK_S:016x}",
            "mask_l_hex": f"{SPEC_MASK_L:016x}",
            "gear_recipe": "GEAR[b] = the first 8 bytes, as a big-endian integer, of MD5 of 64 bytes each of value b",
            "gear_hex": [f"{g:016x}" for g in gear],
            "max_chunks": SPEC_MAX_CHUNKS,
            "max_chunks_per_request": most,
        },
        "inputs": inputs,
        "server_chunks": {n: d.hex() for n, d in sorted(held.items())},
        "requests": ok + bad,
    }
