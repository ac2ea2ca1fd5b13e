"""One exception tree for everything p2psync refuses or fails to do.

Every error carries a message a user can act on (one sentence that says what went wrong and what
to do) and the exit code the CLI returns for it. Foreign exceptions (sqlite3, OSError, ...) are
translated into these at the module that touches the foreign library, never deeper.
"""

from __future__ import annotations

from enum import StrEnum


class P2PSyncError(Exception):
    """Base of every error p2psync raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- the library on disk -----------------------------------------------------------------------


class LibraryError(P2PSyncError):
    """Something is wrong with the library folder or its database."""


class LibraryNotFound(LibraryError):
    pass


class LibraryExists(LibraryError):
    pass


class LibraryCorrupt(LibraryError):
    pass


class LibraryBusy(LibraryError):
    """Another process held the library's write lock for longer than we are willing to wait."""


class DiskFull(LibraryError):
    """The disk holding the library has no room for what was being written; nothing was changed."""

    def __init__(self, where: object, need_bytes: int | None = None) -> None:
        need = f" (need about {max(1, -(-need_bytes // 1_000_000))} MB more)" if need_bytes else ""
        super().__init__(f"No space left on the disk holding {where}{need}; free some space and try again.")
        self.where = str(where)
        self.need_bytes = need_bytes


# --- things the user named that do not exist ---------------------------------------------------


class NotFound(P2PSyncError):
    pass


class UnknownReference(NotFound):
    pass


class UnknownGroup(NotFound):
    pass


class UnknownAttachment(NotFound):
    pass


class UnknownDevice(NotFound):
    pass


# --- input that is not acceptable --------------------------------------------------------------


class InvalidInput(P2PSyncError):
    """A value given by a user, a file or a peer is not acceptable; nothing was changed."""


class UnknownField(InvalidInput):
    pass


class InvalidValue(InvalidInput):
    pass


class AmbiguousId(InvalidInput):
    pass


class Conflict(P2PSyncError):
    """The request contradicts the library's current state (e.g. a group name already taken)."""


class FileProblem(P2PSyncError):
    """A file the user named cannot be read or written."""


class ConfirmationRequired(P2PSyncError):
    """The command needs a yes from the user and could not ask (no TTY and no --yes)."""

    exit_code = 3


# --- talking to peers --------------------------------------------------------------------------


class NetworkError(P2PSyncError):
    """A peer could not be reached, or the conversation with it failed; nothing half-applied."""


class PeerUnreachable(NetworkError):
    pass


class SelfConnection(NetworkError):
    """The address leads back to this very device (one remembered from before, or given)."""


class PeerRefused(NetworkError):
    """The other side is not who we expected (key not pinned), or refused us as a non-member."""


class ProtocolMismatch(NetworkError):
    """The peer speaks a protocol version we do not (or sent something that breaks the protocol)."""


# --- the relay (online account) ------------------------------------------------------------------


class RelayError(NetworkError):
    """The relay (online account) refused or failed a request; nothing was half-applied."""


class RelayAuthFailed(RelayError):
    """Wrong e-mail or password, or this device's login on the relay is no longer valid."""


class RelayRateLimited(RelayAuthFailed):
    """Too many failed logins for this e-mail address or from this address."""


class RelayAccountExists(RelayError):
    """Sign-up with an e-mail address that already has an account on that relay."""


class RelayQuotaExceeded(RelayError):
    """The account's storage limit on the relay is reached; what was stored stays."""


class RelayUnreachable(RelayError):
    """The relay could not be reached, or stopped answering."""


class RelayBoundElsewhere(RelayError):
    """The account holds another library than this one."""

    def __init__(self, message: str, library_id: str | None = None) -> None:
        super().__init__(message)
        self.library_id = library_id


class RelayTampered(RelayError):
    """Something the relay sent fails its check (does not decrypt, or does not match its headers)."""


class RelayNotLinked(RelayError):
    """The library is not linked to an account, or this device is logged out of it."""


class DeviceRemoved(RelayError):
    """Another device removed this one from the library; the relay serves it nothing any more."""

    reason = "device_removed"  # stable: status and sync_problems show it

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "This device was removed from the library by another of its devices, so the online account no "
            "longer serves it; to use this library here again, pair this machine with a member as a new device."
        )


class RelayInsecure(RelayError):
    """Refused before anything was sent: plain http:// to another machine, or password key
    derivation parameters out of bounds (what a hostile relay would ask for)."""


class RelayLinkedElsewhere(ConfirmationRequired):
    """The library is linked to another account; going on would break that link."""


class RelayMergeNeedsConfirmation(ConfirmationRequired):
    """Logging in would merge this non-empty library with the other library the account holds."""

    def __init__(self, message: str, ours: dict[str, int], theirs: dict[str, int]) -> None:
        super().__init__(message)
        self.ours = ours
        self.theirs = theirs


# --- what the relay server answers instead of doing a request -------------------------------------


class RelayCode(StrEnum):
    """The stable `error` code of a relay's error answer (protocol/relay.md §3): the server sends
    it, the client (relay/client.py) turns it back into one of the errors above."""

    MALFORMED = "malformed"
    PROTOCOL = "protocol"
    AUTH_FAILED = "auth_failed"
    TOKEN_EXPIRED = "token_expired"
    RATE_LIMITED = "rate_limited"
    WEAK_KDF = "weak_kdf"
    EMAIL_TAKEN = "email_taken"
    BOUND = "bound"
    NOT_BOUND = "not_bound"
    GAP = "gap"
    QUOTA_EXCEEDED = "quota_exceeded"
    KEY_EPOCH = "key_epoch"
    DEVICE_REVOKED = "device_revoked"
    DEVICE_REQUIRED = "device_required"
    DEVICE_TIED = "device_tied"
    WRONG_DEVICE = "wrong_device"
    SELF = "self"
    CLOCK = "clock"
    NOT_FOUND = "not_found"
    METHOD = "method"
    TOO_LARGE = "too_large"
    INTERNAL = "internal"


class Refusal(P2PSyncError):
    """The relay server's answer of error: raised anywhere in a handler, turned into the JSON error
    body `{"error": code, "message": message, **extra}` with the HTTP `status` (relay/server.py)."""

    def __init__(self, status: int, code: RelayCode, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra
