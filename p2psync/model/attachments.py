"""Attachment names and manifests.

An attachment is named within its reference by its original file name, so the file in the library
folder keeps that name and a person can open it. Names must be one safe path component on every
platform we run on, and never one that p2psync keeps for its own files: a name starting with
`.p2psync`, compared after Unicode case folding since some file systems fold case (protocol/merge.md
§2.4). Those files live outside every reference's folder (store/transfers.py); the rule keeps the
two apart for good, on this disk and on every other, whatever a member's change set says.
"""

from __future__ import annotations

import re
from typing import Any

from p2psync.errors import InvalidValue
from p2psync.model.chunking import MAX_CHUNKS, MAX_SIZE

MAX_NAME_BYTES = 255
MAX_FILE_SIZE = 1 << 40  # 1 TiB: larger is surely an error
_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_HEX64 = re.compile(r"[0-9a-f]{64}")  # used with fullmatch: no trailing newline slips by
RESERVED_PREFIX = ".p2psync"


def validate_name(name: Any) -> str:
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise InvalidValue("An attachment needs a file name (not empty, '.' or '..').")
    if _FORBIDDEN.search(name):
        raise InvalidValue(
            f"The attachment name {name!r} has a character not allowed in file names "
            '(/ \\ : * ? " < > | or a control character); rename the file and try again.'
        )
    if name != name.strip() or name.endswith("."):
        raise InvalidValue(f"The attachment name {name!r} starts or ends with a space or ends with a dot.")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidValue(f"The attachment name {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes.")
    if name.casefold().startswith(RESERVED_PREFIX):
        raise InvalidValue(
            f"The attachment name {name!r} starts with '{RESERVED_PREFIX}', which p2psync keeps for its own "
            "files; choose another name (attach --name)."
        )
    return name


def validate_manifest(value: Any) -> dict[str, Any]:
    """A manifest says what the file is: its size, SHA-256 and chunk list (attachments.md §1)."""
    if not isinstance(value, dict) or not {"size", "sha256"} <= set(value) <= {"size", "sha256", "chunks"}:
        raise InvalidValue("An attachment manifest must have exactly 'size', 'sha256' and optionally 'chunks'.")
    size, digest = value["size"], value["sha256"]
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_SIZE:
        raise InvalidValue("An attachment's size must be a whole number of bytes up to 1 TiB.")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise InvalidValue("An attachment's sha256 must be 64 lowercase hex digits.")
    manifest: dict[str, Any] = {"size": size, "sha256": digest}
    if "chunks" in value:
        chunks = value["chunks"]
        if not isinstance(chunks, list) or not all(
            isinstance(c, list)
            and len(c) == 2
            and isinstance(c[0], str)
            and _HEX64.fullmatch(c[0])
            and isinstance(c[1], int)
            and not isinstance(c[1], bool)
            and 0 < c[1] <= MAX_SIZE
            for c in chunks
        ):
            raise InvalidValue(
                f"An attachment's chunk list must be [[sha256, size], ...], each size 1 to {MAX_SIZE} bytes."
            )
        if len(chunks) > MAX_CHUNKS:
            raise InvalidValue(f"An attachment's chunk list may hold at most {MAX_CHUNKS} chunks.")
        if sum(c[1] for c in chunks) != size:
            raise InvalidValue("An attachment's chunk sizes do not add up to its size.")
        manifest["chunks"] = chunks
    return manifest
