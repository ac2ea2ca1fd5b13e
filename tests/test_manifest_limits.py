"""Manifest limits (protocol/attachments.md §1.2): what a manifest may hold, and what happens to a
file that grows past what one manifest can describe."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from p2psync.errors import InvalidValue
from p2psync.model import chunking
from p2psync.model.attachments import validate_manifest
from tests.sync_support import founded

H = "ab" * 32


def test_a_chunk_longer_than_max_size_or_too_many_chunks_are_refused() -> None:
    assert validate_manifest({"size": 10, "sha256": H, "chunks": [[H, 10]]})["chunks"] == [[H, 10]]
    big = chunking.MAX_SIZE + 1
    with pytest.raises(InvalidValue, match="1 to 131072 bytes"):
        validate_manifest({"size": big, "sha256": H, "chunks": [[H, big]]})
    n = chunking.MAX_CHUNKS + 1
    with pytest.raises(InvalidValue, match="at most 36000 chunks"):
        validate_manifest({"size": n, "sha256": H, "chunks": [[H, 1]] * n})
    with pytest.raises(InvalidValue, match="add up"):
        validate_manifest({"size": 11, "sha256": H, "chunks": [[H, 10]]})


def test_a_file_edited_past_the_limit_keeps_its_last_version_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = founded(tmp_path / "a")
    source = tmp_path / "p.pdf"
    source.write_bytes(random.Random(1).randbytes(100_000))
    ref = lib.add_reference({"title": "Growing"})
    lib.attach(ref, source)
    [before] = lib.list_attachments(ref)
    monkeypatch.setattr(chunking, "MAX_CHUNKS", 2)  # as if the file had grown past 1.5 GB
    with pytest.raises(InvalidValue, match=r"up to about 1\.5 GB"):
        chunking.manifest_of(source)
    path = lib.attachment_path(ref, "p.pdf")
    with path.open("ab") as handle:
        handle.write(random.Random(2).randbytes(100_000))
    [change] = lib.scan_attachments()
    assert change["change"] == "too_large" and "1.5 GB" in change["error"]
    assert lib.scan_attachments() == []  # not hashed again until it changes again
    [item] = lib.list_attachments(ref)
    assert item["sha256"] == before["sha256"] and "1.5 GB" in item["problem"]
    lib.close()
