"""The helper processes a store task starts for the other core (store/prepare.py parses a
receive's change sets, store/search_build.py indexes a first sync, store/import_reader.py reads
a large import): how one is started, and the length-prefixed frames spoken over its pipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

_ROOT = str(Path(__file__).resolve().parents[2])


def start(module: str) -> subprocess.Popen[bytes]:
    """A child Python running `p2psync.store.<module>.serve(stdin, stdout)`. Raises OSError
    when no interpreter can be started (an embedded Python): callers then do the work here."""
    # -P: nothing from the working directory shadows the package; the package's own root comes first.
    code = (
        f"import sys; sys.path.insert(0, sys.argv[1]); from p2psync.store import {module}; "
        f"{module}.serve(sys.stdin.buffer, sys.stdout.buffer)"
    )
    return subprocess.Popen(
        [sys.executable, "-P", "-c", code, _ROOT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def read_frame(stream: BinaryIO, limit: int | None = None) -> bytes | None:
    """The next frame, or None at the end of the stream (or of a frame cut short, or, with
    `limit`, of a length beyond it: the stream is out of step, so it ends there)."""
    header = stream.read(8)
    if len(header) < 8:
        return None
    size = int.from_bytes(header, "little")
    if limit is not None and size > limit:
        return None
    payload = stream.read(size)
    return payload if len(payload) == size else None


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(len(payload).to_bytes(8, "little"))
    stream.write(payload)
    stream.flush()
