"""Framing of change-set streams (sans-IO): each change set travels as a 4-byte big-endian length
followed by its exact wire bytes, so a stream of any size can be produced and consumed one
change set at a time. A length of zero ends the stream (a clean end, as opposed to a cut)."""

from __future__ import annotations

import struct

from p2psync.engine.changesets import MAX_BYTES
from p2psync.errors import ProtocolMismatch

_LENGTH = struct.Struct(">I")
END = _LENGTH.pack(0)


def frame(wire: bytes) -> bytes:
    if not 0 < len(wire) <= MAX_BYTES:
        raise ValueError("a frame holds 1 to MAX_BYTES bytes")
    return _LENGTH.pack(len(wire)) + wire


class FrameReader:
    """Feed bytes as they arrive; take out whole frames. Refuses a frame over MAX_BYTES before
    buffering it, so a hostile length cannot make us hold more than one change set."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.ended = False

    def feed(self, data: bytes) -> list[bytes]:
        if self.ended and data:
            raise ProtocolMismatch("The peer sent data after the end of its change-set stream.")
        self._buffer += data
        out: list[bytes] = []
        while len(self._buffer) >= 4:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length == 0:
                self.ended = True
                if len(self._buffer) > 4:
                    raise ProtocolMismatch("The peer sent data after the end of its change-set stream.")
                del self._buffer[:4]
                break
            if length > MAX_BYTES:
                raise ProtocolMismatch(f"The peer announced a change set of {length:,} bytes, over the limit.")
            if len(self._buffer) < 4 + length:
                break
            out.append(bytes(self._buffer[4 : 4 + length]))
            del self._buffer[: 4 + length]
        return out

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame (non-zero at a cut)."""
        return len(self._buffer)
