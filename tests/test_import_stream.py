"""The streamed import (issue 22): an RIS file read line by line, twice, and imported a batch at a
time in one transaction. It must read exactly what reading the whole text read, write exactly
what applying its own log writes, find the same duplicates, and leave the library as it was when
it fails or is killed half-way through a large file."""

from __future__ import annotations

import codecs
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psync import formats
from p2psync.errors import P2PSyncError
from p2psync.store import exchange, import_reader, importing, schema
from p2psync.store.library import Library
from tests.support import snapshot

DATA = Path(__file__).parent / "data" / "formats"
RIS_FILES = sorted([*(DATA / "ris").iterdir(), *(p for p in (DATA / "malformed").iterdir() if "ris" in p.name)])


def _whole(path: Path, encoding: str | None = None, skip_invalid: bool = True) -> object:
    """What reading the whole text gives (the records as plain values), or the error's message."""
    try:
        text = formats.read_file(path, encoding=encoding)
        result = formats.read(text, "ris", skip_invalid=skip_invalid)
    except P2PSyncError as exc:
        return ("error", type(exc).__name__, exc.message)
    return ([vars(r) for r in result.records], result.invalid)


def _streamed(path: Path, encoding: str | None = None, skip_invalid: bool = True) -> object:
    try:
        fmt, stream = formats.read_path(path, "ris", encoding, skip_invalid)
        records = [vars(r) for r in stream]
    except P2PSyncError as exc:
        return ("error", type(exc).__name__, exc.message)
    assert fmt == "ris" and stream.count == len(records)
    return (records, stream.invalid)


@pytest.mark.parametrize("path", RIS_FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("skip_invalid", [True, False])
def test_streamed_ris_reads_what_the_whole_text_reads(path: Path, skip_invalid: bool) -> None:
    assert _streamed(path, skip_invalid=skip_invalid) == _whole(path, skip_invalid=skip_invalid)


@pytest.mark.parametrize(
    "variant",
    ["crlf", "cr", "no-final-newline", "bom", "utf-16", "blank", "empty", "stray-lines", "bad-byte", "cp1252"],
)
def test_streamed_ris_reads_line_ends_encodings_and_odd_files_alike(tmp_path: Path, variant: str) -> None:
    body = (
        "TY  - JOUR\nTI  - Première\nAU  - Curie, Marie\nAB  - Line one\n  ER  - kept\nline two\nPY  - 1903\nER  - \n"
        "\nNL  - stray\nTY  - BOOK\nTI  - Second\nKW  - a\nb\nER  - \n"
    )
    encoding = None
    data = body.encode()
    if variant == "crlf":
        data = body.replace("\n", "\r\n").encode()
    elif variant == "cr":
        data = body.replace("\n", "\r").encode()
    elif variant == "no-final-newline":
        data = body.rstrip("\n").encode()
    elif variant == "bom":
        data = codecs.BOM_UTF8 + data
    elif variant == "utf-16":
        data = body.encode("utf-16")
    elif variant == "blank":
        data = b"\n  \n\t\n"
    elif variant == "empty":
        data = b""
    elif variant == "bad-byte":
        data = data[:40] + b"\xff" + data[40:]
    elif variant == "cp1252":
        data, encoding = body.encode("cp1252"), "cp1252"
    path = tmp_path / "file.ris"
    path.write_bytes(data)
    for skip in (True, False):
        assert _streamed(path, encoding, skip) == _whole(path, encoding, skip)


def test_streamed_ris_is_recognised_from_its_start_and_bibtex_still_wins_by_name(tmp_path: Path) -> None:
    ris = "TY  - JOUR\nTI  - A\nER  - \n"
    bib = "@article{a, title={B}}\n"
    path = tmp_path / "x.bib"
    path.write_text(ris + bib, encoding="utf-8")
    assert formats.read_path(path, None, None, False)[0] == formats.guess_format(ris + bib, "x.bib") == "bibtex"
    path = tmp_path / "x.ris"
    path.write_text(ris + "\n" * 10 + bib, encoding="utf-8")
    assert formats.read_path(path, None, None, False)[0] == "ris"


def _ris(path: Path, count: int, start: int = 0, extra: dict[int, str] | None = None) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(start, start + count):
            out.write(
                f"TY  - JOUR\nTI  - Paper number {i}\nAU  - Family{i % 7}, Given\nPY  - {1990 + i % 30}\n"
                f"DO  - 10.1/{i}\nAB  - words about {i}\n{(extra or {}).get(i, '')}ER  - \n\n"
            )


@pytest.mark.parametrize("child", [False, True], ids=["here", "child-process"])
def test_streamed_import_writes_what_applying_its_own_log_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, child: bool
) -> None:
    """References without files are written together (the way a first sync writes new ones);
    those with files one by one. Replaying the import's log into an empty library through the
    ordinary apply path must give the same tables and search index. A large file's records are
    read and checked by a second process: the same import."""
    monkeypatch.setattr(importing, "KEY_BATCH", 7)
    monkeypatch.setattr(import_reader, "BATCH", 4)
    monkeypatch.setattr(import_reader, "CHILD_FROM", 0 if child else 10**9)
    answered: list[int] = []
    batches = import_reader._Child.batches

    def counted(self: import_reader._Child) -> Iterator[list[tuple[object, ...]]]:  # (a spy: the child answers)
        for batch in batches(self):
            answered.append(len(batch))
            yield batch
        assert self.finished

    monkeypatch.setattr(import_reader._Child, "batches", counted)
    (tmp_path / "f.pdf").write_bytes(b"%PDF-1.4 x")
    path = tmp_path / "in.ris"
    _ris(path, 40, extra={5: "L1  - f.pdf\n", 22: "L1  - f.pdf\nL1  - missing.pdf\n"})
    library = Library.create(tmp_path / "a")
    outcome = exchange.import_parsed(library, exchange.read_for_import(path, None, None, False), tmp_path)
    assert len(outcome.report.imported) == 40 and len(outcome.report.attached) == 2
    replay = Library.create(tmp_path / "b", found=False)
    replay.ingest(library.log_entries())
    assert snapshot(replay) == snapshot(library)
    assert [r["id"] for r in library.list_references()] == list(outcome.report.imported)
    assert library.search("about") and len(list(library.search("words"))) == 40
    assert sum(answered) == (40 if child else 0)


def test_duplicates_are_found_across_batches_and_in_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importing, "KEY_BATCH", 3)
    library = Library.create(tmp_path / "lib")
    first = tmp_path / "first.ris"
    _ris(first, 5)
    exchange.import_parsed(library, exchange.read_for_import(first, None, None, False), tmp_path)
    existing = {r["doi"]: r["id"] for r in library.list_references()}
    second = tmp_path / "second.ris"
    _ris(second, 6, start=3)  # 3 and 4 are in the library
    with second.open("a", encoding="utf-8") as out:  # records 7 and 8 repeat records 1 and 3 of this file
        out.write("TY  - JOUR\nTI  - Again\nDO  - 10.1/6\nER  - \n\nTY  - JOUR\nTI  - Again\nDO  - 10.1/5\nER  - \n")
    outcome = exchange.import_parsed(library, exchange.read_for_import(second, None, None, False), tmp_path)
    assert outcome.report.duplicates == [
        {"position": 1, "title": "Paper number 3", "existing": existing["10.1/3"]},
        {"position": 2, "title": "Paper number 4", "existing": existing["10.1/4"]},
        {"position": 7, "title": "Again", "existing": "record 4 of this file"},
        {"position": 8, "title": "Again", "existing": "record 3 of this file"},
    ]
    assert len(outcome.report.imported) == 4
    assert outcome.summary("second.ris")[:2] == [
        "Imported 4 reference(s) from second.ris (RIS).",
        "Skipped 4 already in the library (--allow-duplicates imports them):",
    ]


def _big_file(path: Path, count: int, bad_at: int | None = None) -> None:
    # A record whose fields are each allowed but whose change is too large to sync (over 3 MB).
    huge = "é" * 999_000
    _ris(path, count, extra={bad_at: f"N1  - {huge}\nRN  - {huge}\n"} if bad_at is not None else None)


def _state(lib: Path) -> tuple[dict[str, object], list[str], int]:
    library = Library.open(lib)
    try:
        return snapshot(library), schema.missing_indexes(library.db), library.count_references()
    finally:
        library.close()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2psync", *args]


def test_an_import_failing_half_way_through_a_large_file_changes_nothing(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    Library.create(lib).close()
    small = tmp_path / "small.ris"
    _ris(small, 3, start=900_000)
    assert subprocess.run(_cli("import", str(small), "--library", str(lib)), capture_output=True).returncode == 0
    before = _state(lib)
    big = tmp_path / "big.ris"
    _big_file(big, 30_000, bad_at=25_000)  # large enough that the list's sort indexes are rebuilt at its end
    done = subprocess.run(_cli("import", str(big), "--library", str(lib)), capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("Error: ") and "too large to sync" in done.stderr and done.stderr.count("\n") == 1
    assert _state(lib) == before
    assert before[1] == [] and before[2] == 3


def test_an_import_killed_half_way_through_a_large_file_changes_nothing(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    Library.create(lib).close()
    small = tmp_path / "small.ris"
    _ris(small, 3, start=900_000)
    assert subprocess.run(_cli("import", str(small), "--library", str(lib)), capture_output=True).returncode == 0
    before = _state(lib)
    big = tmp_path / "big.ris"
    _ris(big, 40_000)
    saved = tmp_path / "saved"
    shutil.copytree(lib, saved)
    wal = lib / "library.sqlite3-wal"
    for _ in range(5):  # (a kill that lands after the commit proves nothing: once more, from the copy)
        shutil.rmtree(lib)
        shutil.copytree(saved, lib)
        start_size = wal.stat().st_size if wal.exists() else 0
        proc = subprocess.Popen(_cli("import", str(big), "--library", str(lib)), stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 300
            # The import's pages stay in its page cache until it commits, so the WAL grows only
            # while the transaction is written out (about 35 MB in tens of milliseconds): killed a
            # millisecond after the growth is seen, the import is half-way through its commit.
            while (wal.stat().st_size if wal.exists() else 0) < start_size + 1_000_000:
                assert proc.poll() is None, "the import ended before it could be killed"
                assert time.monotonic() < deadline
                time.sleep(0.001)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        after = _state(lib)
        if after[2] == before[2]:
            assert after == before
            break
        assert after[2] == before[2] + 40_000  # the kill came after the commit: all of it, never a part
    else:
        raise AssertionError("every kill landed after the import's commit")
    # ... and the library takes the same import whole afterwards.
    done = subprocess.run(_cli("import", str(big), "--json", "--library", str(lib)), capture_output=True, text=True)
    assert done.returncode == 0 and json.loads(done.stdout)["imported"] == 40_000
    assert _state(lib)[1:] == ([], 40_003)
