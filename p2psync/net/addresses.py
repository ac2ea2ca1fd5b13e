"""Where a peer is: an address (HOST:PORT, and the member expected there), parsed from what a
user typed, and the order in which a round tries them (each device and each place once)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from p2psync.errors import InvalidValue


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    device: str | None = None  # the member expected there, when known
    also: tuple[str, ...] = ()  # other hosts of the same device (mDNS may announce several), tried in turn

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_address(text: str, default_port: int, allow_any_port: bool = False) -> Address:
    """HOST:PORT (or HOST alone: the default port). Port 0 only where listening (any free port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not (0 if allow_any_port else 1) <= int(port) < 65536:
        raise InvalidValue(f"{text!r} is not an address; write HOST:PORT, e.g. 192.168.1.20:47625.")
    return Address(host, int(port))


def merge_targets(*groups: Iterable[Address]) -> list[Address]:
    """The addresses of all groups in order, each device and each HOST:PORT once (the first wins)."""
    out: list[Address] = []
    devices: set[str] = set()
    places: set[tuple[str, int]] = set()
    for group in groups:
        for address in group:
            if (address.device is not None and address.device in devices) or (address.host, address.port) in places:
                continue
            out.append(address)
            places.add((address.host, address.port))
            if address.device is not None:
                devices.add(address.device)
    return out
