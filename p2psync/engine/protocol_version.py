"""The protocol version a request names in its header (the peer server's and the relay's
`P2PSync-Protocol`): one parser for both, so that what counts as a version cannot drift apart."""

from __future__ import annotations

from collections.abc import Collection

MAX_DIGITS = 9  # a header of more digits is no version of ours, and int() of it is not worth doing


def speaks(header: str, supported: Collection[int]) -> bool:
    """Whether `header` (the header's text, stripped) names a version in `supported`."""
    return header.isascii() and header.isdigit() and len(header) <= MAX_DIGITS and int(header) in supported
