"""import / export through the real CLI and the store, on the shared real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2psync import formats
from p2psync.store import importing
from p2psync.store.library import Library
from tests.support import snapshot

DATA = Path(__file__).parent / "data" / "formats"
GOOD = sorted(p for d in ("ris", "bibtex", "endnote-xml", "csl-json") for p in (DATA / d).iterdir())


def run(lib: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, P2PSYNC_LIBRARY=str(lib))
    return subprocess.run(
        [sys.executable, "-m", "p2psync", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    Library.create(tmp_path / "lib").close()
    return tmp_path / "lib"


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_import_real_files_then_again_adds_nothing(lib: Path, path: Path) -> None:
    first = run(lib, "import", str(path), "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    parsed = formats.read(formats.read_file(path), report["format"], skip_invalid=True)
    assert report["imported"] + len(report["duplicates"]) == len(parsed.records)
    assert report["imported"] > 0
    library = Library.open(lib)
    before = snapshot(library)
    library.close()
    second = json.loads(run(lib, "import", str(path), "--json").stdout)
    assert second["imported"] == 0 and len(second["duplicates"]) == len(parsed.records)
    library = Library.open(lib)
    assert snapshot(library) == before  # the second import changed nothing
    library.close()


@pytest.mark.parametrize(
    "name", ["RisImporterCorrupted.ris", "RisImporterTest1.ris", "encoding-windows-1252.bib", "example_wos.ris"]
)
def test_malformed_file_imports_nothing(lib: Path, name: str) -> None:
    library = Library.open(lib)
    before = snapshot(library)
    library.close()
    done = run(lib, "import", str(DATA / "malformed" / name))
    assert done.returncode == 1
    assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1
    assert done.stdout == ""
    library = Library.open(lib)
    assert snapshot(library) == before
    library.close()


def test_skip_invalid_imports_the_good_records_and_lists_the_bad(lib: Path, tmp_path: Path) -> None:
    bad = tmp_path / "mixed.ris"
    bad.write_text(
        "TY  - JOUR\nTI  - Good one\nAU  - Curie, Marie\nPY  - 1903\nER  - \n\n"
        "TI  - No type line\nER  - \n\n"
        "TY  - BOOK\nTI  - Good two\nPY  - 1910\nER  - \n",
        encoding="utf-8",
    )
    refused = run(lib, "import", str(bad))
    assert refused.returncode == 1 and "Record 2" in refused.stderr
    done = json.loads(run(lib, "import", str(bad), "--skip-invalid", "--json").stdout)
    assert done["imported"] == 2
    assert [i["position"] for i in done["invalid"]] == [2]


def test_attachments_named_by_records(lib: Path, tmp_path: Path) -> None:
    (tmp_path / "pdfs").mkdir()
    pdf = tmp_path / "pdfs" / "curie 1903.pdf"
    pdf.write_bytes(os.urandom(50_000))
    ris = tmp_path / "with-files.ris"
    ris.write_text(
        "TY  - THES\nTI  - Recherches sur les substances radioactives\nAU  - Curie, Marie\nPY  - 1903\n"
        "L1  - pdfs/curie 1903.pdf\nL1  - pdfs/missing.pdf\nER  - \n",
        encoding="utf-8",
    )
    done = json.loads(run(lib, "import", str(ris), "--json").stdout)
    assert [a["name"] for a in done["attached"]] == ["curie 1903.pdf"]
    assert [m["path"] for m in done["missing_attachments"]] == ["pdfs/missing.pdf"]
    ref = done["ids"][0]
    out = tmp_path / "copy.pdf"
    assert run(lib, "attachment", "export", ref, "curie 1903.pdf", "--out", str(out)).returncode == 0
    assert out.read_bytes() == pdf.read_bytes()


def test_failed_import_leaves_no_files_and_no_references(
    lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        (tmp_path / f"{i}.pdf").write_bytes(b"%PDF" + bytes([i]))
    records = [
        formats.ParsedRecord(
            fields={"title": f"T{i}", "year": "2000"}, attachments=[f"{i}.pdf"], position=i + 1, line=None, warnings=[]
        )
        for i in range(3)
    ]
    calls = {"n": 0}
    real_copy = importing.copy_atomic

    def failing_copy(source: Path, target: Path):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_copy(source, target)

    monkeypatch.setattr(importing, "copy_atomic", failing_copy)
    library = Library.open(lib)
    before = snapshot(library)
    with pytest.raises(OSError):
        importing.import_records(library, records, tmp_path)
    assert snapshot(library) == before
    assert not [p for p in (lib / "attachments").rglob("*") if p.is_file()]
    library.close()


@pytest.mark.parametrize("fmt", ["ris", "bibtex", "endnote-xml", "csl-json"])
def test_export_then_import_elsewhere_keeps_the_references(lib: Path, tmp_path: Path, fmt: str) -> None:
    assert run(lib, "import", str(DATA / "bibtex" / "complex.bib")).returncode == 0
    assert run(lib, "import", str(DATA / "ris" / "example_utf_chars.ris")).returncode == 0
    out = tmp_path / f"export{formats.DEFAULT_EXTENSIONS[fmt]}"
    done = run(lib, "export", str(out), "--format", fmt, "--json")
    assert done.returncode == 0, done.stderr
    other = tmp_path / "other"
    Library.create(other).close()
    assert run(other, "import", str(out)).returncode == 0
    a, b = Library.open(lib), Library.open(other)
    key = lambda r: (r.get("title") or "", r.get("doi") or "", json.dumps(r.get("authors"), ensure_ascii=False))  # noqa: E731
    assert sorted(map(key, a.list_references())) == sorted(map(key, b.list_references()))
    a.close()
    b.close()


def test_export_needs_a_format_it_can_tell(lib: Path, tmp_path: Path) -> None:
    done = run(lib, "export", str(tmp_path / "out.txt"))
    assert done.returncode == 1 and "--format" in done.stderr


def _on_a_terminal(lib: Path, *args: str) -> tuple[int, str]:
    """Run p2psync with stdout and stderr on a pseudo-terminal; return its code and all it wrote."""
    master, slave = os.openpty()
    env = dict(os.environ, P2PSYNC_LIBRARY=str(lib), TERM="xterm", COLUMNS="100")
    env.pop("NO_COLOR", None)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2psync", *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        written = b""
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal's other side closed
                break
            if not data:
                break
            written += data
        code = proc.wait(timeout=120)
    finally:
        os.close(master)
    return code, written.decode("utf-8", "replace")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_export_shows_progress_on_a_terminal_and_not_with_json_or_piped(lib: Path, tmp_path: Path) -> None:
    assert run(lib, "import", str(DATA / "ris" / "embase.ris")).returncode == 0
    out = tmp_path / "out.ris"
    code, shown = _on_a_terminal(lib, "export", str(out))
    assert code == 0 and "Exporting to out.ris" in shown and "Wrote " in shown
    code, shown = _on_a_terminal(lib, "export", str(out), "--json")
    assert code == 0 and "Exporting" not in shown and json.loads(shown)["references"] > 0
    piped = run(lib, "export", str(out))
    assert piped.returncode == 0 and piped.stderr == "" and piped.stdout.startswith("Wrote ")
