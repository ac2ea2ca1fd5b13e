"""Export output pinned byte for byte (issue 22): the streamed, batched export writes exactly what
the export wrote before it (tests/data/pinned-export/, made by the code of 4d5a11f).

The library is varied: every good fixture file of every format imported (all reference types
they hold, people as names and institutions, non-ASCII text, long notes, keywords, dates), a
reference in the trash (not exported), files attached to some references (their paths are
written; the library's folder is replaced by {LIBRARY} before comparing), a group, and the web
app's export of a selection in a given order. Ids are made sequential so that the output is the
same on every run. Set P2PSYNC_REPIN=1 to write the pinned files again (only when an output
change is meant).
"""

from __future__ import annotations

import base64
import itertools
import os
from pathlib import Path

import pytest

from p2psync import formats
from p2psync.store import exchange
from p2psync.store.library import Library

DATA = Path(__file__).parent / "data" / "formats"
PINNED = Path(__file__).parent / "data" / "pinned-export"
GOOD = sorted(p for d in ("ris", "bibtex", "endnote-xml", "csl-json") for p in (DATA / d).iterdir())


@pytest.fixture
def varied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Library:
    counter = itertools.count(1)
    sequential = lambda: base64.b32encode(next(counter).to_bytes(10, "big")).decode().lower()  # noqa: E731
    monkeypatch.setattr("p2psync.store.library.new_id", sequential)
    monkeypatch.setattr("p2psync.formats.bibtex.WRITE_BATCH", 7)  # batches joined as one text
    monkeypatch.setattr("p2psync.store.exchange.EXPORT_BATCH", 9)
    monkeypatch.setattr("p2psync.formats.endnote_xml.WRITE_BATCH", 5)
    library = Library.create(tmp_path / "lib")
    ids: list[str] = []
    for path in GOOD:
        text = formats.read_file(path)
        result = formats.read(text, formats.guess_format(text, path.name), skip_invalid=True)
        ids += library.add_references([record.fields for record in result.records[:12]])  # (small pinned files)
    files = tmp_path / "files"
    files.mkdir()
    for n, ref_id in enumerate(ids[3:60:7]):
        for name in (f"paper {n}.pdf", "supplement.zip")[: 1 + n % 2]:
            (files / name).write_bytes(f"file {n} {name}".encode())
            library.attach(ref_id, files / name)
    library.trash_reference(ids[5])
    group = library.create_group("Pinned group")
    library.add_to_group(group, ids[10:40:3])
    yield library
    library.close()


def _pinned(library: Library, name: str, text: str) -> None:
    text = text.replace(str(library.path), "{LIBRARY}")
    path = PINNED / name
    if os.environ.get("P2PSYNC_REPIN"):
        PINNED.mkdir(exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    assert text.encode("utf-8") == path.read_bytes(), f"{name} differs from the pinned output"


@pytest.mark.parametrize("fmt", sorted(formats.FORMATS))
def test_export_is_byte_identical_to_the_pinned_output(varied: Library, fmt: str) -> None:
    ext = formats.DEFAULT_EXTENSIONS[fmt]
    whole = exchange.export_text(varied, fmt)
    assert whole.references == varied.count_references() > 100
    _pinned(varied, f"library{ext}", whole.text)
    group = exchange.export_text(varied, fmt, group="Pinned group")
    assert group.references == 10
    _pinned(varied, f"group{ext}", group.text)
    ids = [row["id"] for row in varied.list_references()]
    selection = exchange.export_text(varied, fmt, ids=ids[50:3:-9])
    _pinned(varied, f"selection{ext}", selection.text)
    _pinned(varied, f"empty{ext}", exchange.export_text(varied, fmt, group=varied.create_group("Empty")).text)
