"""Constants and small helpers of the peer protocol (protocol/transport.md), shared by server and
client. Sans-IO."""

from __future__ import annotations

from typing import Any

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
VERSION_HEADER = "P2PSync-Protocol"
LIBRARY_HEADER = "P2PSync-Library"
PREFIX = "/p2psync/v1"
MAX_JSON_BYTES = 2 * 1024 * 1024  # a version vector of 10,000 devices fits with room to spare
BATCH_BYTES = 16 * 1024 * 1024  # change sets received are applied in batches of about this size
DEFAULT_PORT = 47625


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "message": message, **extra}
