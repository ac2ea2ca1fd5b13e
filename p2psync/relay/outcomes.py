"""The relay's answers that are outcomes, not errors (those are errors.RelayCode): one enum per
answer, shared by the server, its storage and the client, so that each side names the same word.
A StrEnum, so the wire bytes are the words they always were."""

from __future__ import annotations

from enum import StrEnum


class BindOutcome(StrEnum):
    """What binding an account to a library did (POST /bind, protocol/relay.md section 4)."""

    NEW = "new"  # the account held no library: it holds this one now
    SAME = "same"  # it already held this library (another of its devices bound it)
