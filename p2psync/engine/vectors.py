"""Version vectors: which change sets a library holds, as device id -> last sequence number.

One of the values that cross the wire (the LAN peers' /sync/vv exchange, the relay's /state
heads). VersionVector.parse is the one place that says what a well-formed one is; every reader
of a vector from outside calls it instead of checking the shape itself.
"""

from __future__ import annotations

from typing import Any

from p2psync.errors import InvalidValue
from p2psync.model.devices import is_device_id

MAX_SEQ = 2**53  # sequence numbers stay exact in every JSON reader (ops.MAX_INT)


def is_count(value: Any) -> bool:
    """A sequence number or count as the wire carries it: an int in [0, MAX_SEQ] (not a bool)."""
    return type(value) is int and 0 <= value <= MAX_SEQ


class VersionVector(dict[str, int]):
    """device id -> last sequence number held (0 or absent: none)."""

    @classmethod
    def parse(cls, value: Any) -> VersionVector:
        """The vector a decoded JSON value holds, or InvalidValue if it is not one."""
        if not isinstance(value, dict) or not all(is_device_id(k) and is_count(v) for k, v in value.items()):
            raise InvalidValue("A version vector maps device ids to sequence numbers.")
        return cls(value)

    @classmethod
    def is_valid(cls, value: Any) -> bool:
        try:
            cls.parse(value)
        except InvalidValue:
            return False
        return True
