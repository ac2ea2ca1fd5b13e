"""receive_stream past PARALLEL_AFTER_BYTES: one child process parses every later batch while
the next batch is read; the library it leaves equals a receive in one process."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

from p2psync.net import frames
from p2psync.net.protocol import BATCH_BYTES
from p2psync.net.worker import LibraryWorker, receive_stream
from p2psync.store.library import Library
from p2psync.store.sync import PARALLEL_AFTER_BYTES, ReceiveReport, changesets_since, receive, seal, version_vector
from tests.support import snapshot
from tests.sync_support import founded, joined


def test_a_stream_of_several_batches_equals_one_receive(tmp_path: Path) -> None:
    rng = random.Random(5)
    a = founded(tmp_path / "a")
    streamed = joined(a, tmp_path / "streamed", "S")
    plain = joined(a, tmp_path / "plain", "P")
    # Long words, few of them: the bytes of several batches in a quarter of the search terms
    # (the snapshots compare every term's every position).
    words = [f"w{i}abcdefghijklmnopqrstu" for i in range(3000)]
    a.add_references(
        {"title": f"Paper {i}", "abstract": " ".join(rng.choices(words, k=100)), "year": str(1950 + i % 70)}
        for i in range(9000)
    )
    ids = [r for (r,) in a.db.execute("SELECT id FROM refs ORDER BY num LIMIT 50")]
    for ref in ids:  # later entries that are not new references, in the last batch
        a.edit_reference(ref, {"title": "Edited " + ref})
    seal(a)
    wires = list(changesets_since(a, version_vector(streamed)))
    stream = b"".join(frames.frame(w) for w in wires) + frames.END
    # Two batches at least: the child starts after the first (more than PARALLEL_AFTER_BYTES) and parses the rest.
    assert len(stream) > BATCH_BYTES > PARALLEL_AFTER_BYTES
    path = streamed.path
    streamed.close()
    total = ReceiveReport()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(stream), 1 << 20):
            yield stream[start : start + (1 << 20)]
            await asyncio.sleep(0)

    async def run() -> bool:
        worker = LibraryWorker(path)
        try:
            return await receive_stream(worker, chunks(), "A", total)
        finally:
            await worker.close()

    assert asyncio.run(run())
    one = receive(plain, changesets_since(a, version_vector(plain)), "A", parallel=False)
    assert total.rejected == one.rejected == [] and total.entries >= 9050
    with Library.open(path) as s:
        assert snapshot(s) == snapshot(plain)
