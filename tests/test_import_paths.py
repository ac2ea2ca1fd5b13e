"""Importing a file never reads other local files (issue 18 item 4), through the real CLI.

Each format gets a hostile import file that names /etc/passwd (plain and file://), /proc and
/sys and /dev files, a symlink inside the folder that leads out of it, `../` escapes, the
library's own device.key and library.sqlite3 (by path and by a hard link), a FIFO, a device
node, a folder and a hidden file, beside one legitimate PDF. Only the PDF is attached; every
other name is listed as skipped with its reason. The files are real, in tmp folders; the
library lives inside the import folder so that the library rule, not only the folder rule, is
what refuses its files.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from p2psync import formats
from p2psync.store import importing
from p2psync.store.library import Library
from tests.test_import_export import run

ROOT = Path(__file__).resolve().parent.parent
PDF = b"%PDF-1.4 the one legitimate attachment\n" + os.urandom(2000)
IS_ROOT = os.geteuid() == 0


@dataclass
class Folder:
    """An import folder with one good PDF, hostile neighbours, and a library inside it."""

    imp: Path
    lib: Path
    hostile: dict[str, str]  # name as written in the import file -> a word its reason must hold


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    imp = tmp_path / "import"
    imp.mkdir()
    lib = imp / "library"
    Library.create(lib).close()
    (imp / "paper.pdf").write_bytes(PDF)
    (tmp_path / "outside.pdf").write_bytes(b"%PDF outside the import folder")
    (imp / "link-out.pdf").symlink_to("/etc/passwd")
    (imp / "pdfs").mkdir()
    (imp / "pdfs" / "up.pdf").symlink_to("../../outside.pdf")
    os.link(lib / "device.key", imp / "key-hardlink.pdf")
    os.mkfifo(imp / "pipe.pdf")
    (imp / "folder.pdf").mkdir()
    (imp / ".ssh").mkdir()
    (imp / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    hostile = {
        "/etc/passwd": "outside",
        "file:///etc/passwd": "outside",
        "/proc/self/environ": "/proc",
        "/sys/kernel/notes": "/sys",
        "/dev/null": "/dev",
        "link-out.pdf": "link",
        "pdfs/up.pdf": "link",
        "../outside.pdf": "outside",
        "pdfs/../../outside.pdf": "outside",
        "library/device.key": "library",
        "library/library.sqlite3": "library",
        str(lib / "device.key"): "library",
        f"file://{lib}/library.sqlite3": "library",
        "key-hardlink.pdf": "library",
        "pipe.pdf": "named pipe",
        "folder.pdf": "folder",
        ".ssh/id_rsa": "hidden",
        "missing.pdf": "not found",
    }
    if IS_ROOT:  # only root may make a device node; /dev/null's numbers (1, 3)
        os.mknod(imp / "null.pdf", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        hostile["null.pdf"] = "device"
    return Folder(imp, lib, hostile)


def _ris(names: list[str]) -> str:
    lines = "".join(f"L1  - {n}\n" for n in names)
    return f"TY  - JOUR\nTI  - Hostile\nAU  - Doe, Jane\nPY  - 2020\n{lines}ER  - \n"


def _bibtex(names: list[str]) -> str:
    # Zotero/JabRef forms: 'Description:path:type', ':path:PDF', ':' escaped as '\:'.
    escaped = [n.replace(":", "\\:") for n in names]
    parts = [f"Full Text:{n}:application/pdf" if i % 2 else f":{n}:PDF" for i, n in enumerate(escaped)]
    return "@article{hostile,\n  title = {Hostile},\n  year = {2020},\n  file = {" + ";".join(parts) + "}\n}\n"


def _endnote(names: list[str]) -> str:
    urls = "".join(f"<url>{escape(n)}</url>" for n in names)
    return (
        '<?xml version="1.0" encoding="UTF-8"?><xml><records><record>'
        '<ref-type name="Journal Article">17</ref-type><titles><title>Hostile</title></titles>'
        f"<dates><year>2020</year></dates><urls><pdf-urls>{urls}</pdf-urls></urls></record></records></xml>"
    )


def _csl(names: list[str]) -> str:
    # CSL-JSON names a file only as a file:// URL (one per item).
    items = [{"type": "article-journal", "title": f"Hostile {i}", "issued": {"date-parts": [[2020]]}, "URL": n}
             for i, n in enumerate(names)]  # fmt: skip
    return json.dumps(items)


WRITERS = {
    "ris": (_ris, ".ris"),
    "bibtex": (_bibtex, ".bib"),
    "endnote-xml": (_endnote, ".xml"),
    "csl-json": (_csl, ".json"),
}


def _as_written(fmt: str, name: str, imp: Path) -> str:
    """CSL-JSON can only name file:// URLs: relative names become URLs into the import folder."""
    if fmt != "csl-json" or name.startswith("file://"):
        return name
    return "file://" + (name if name.startswith("/") else f"{imp}/{name}")


def _attached_files(lib: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((lib / "attachments").rglob("*")) if p.is_file()]


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_hostile_import_file_attaches_only_the_pdf_beside_it(folder: Folder, fmt: str) -> None:
    write, ext = WRITERS[fmt]
    expected = {_as_written(fmt, n, folder.imp): word for n, word in folder.hostile.items()}
    names = [*expected, _as_written(fmt, "paper.pdf", folder.imp)]
    if fmt == "endnote-xml":
        expected["internal-pdf://../../etc/passwd"] = "outside"
        expected["internal-pdf://0001/../../outside.pdf"] = "outside"
        names += ["internal-pdf://../../etc/passwd", "internal-pdf://0001/../../outside.pdf"]
    source = folder.imp / f"hostile{ext}"
    source.write_text(write(names), encoding="utf-8")

    done = run(folder.lib, "import", str(source), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [a["name"] for a in report["attached"]] == ["paper.pdf"]
    skipped = {s["path"]: s["reason"] for s in report["skipped_attachments"]}
    assert set(skipped) == set(expected)
    for name, word in expected.items():
        assert word in skipped[name], (name, skipped[name])
    assert [m["path"] for m in report["missing_attachments"]] == [_as_written(fmt, "missing.pdf", folder.imp)]
    assert _attached_files(folder.lib) == [PDF]  # nothing else was copied, not even for a moment
    assert oct(os.stat(folder.lib / "device.key").st_mode & 0o777) == "0o600"


def test_plain_output_lists_each_skipped_file_with_its_reason(folder: Folder) -> None:
    source = folder.imp / "hostile.ris"
    source.write_text(_ris(["/proc/self/environ", "link-out.pdf", "library/device.key", "paper.pdf"]))
    done = run(folder.lib, "import", str(source))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "Attached 1 file(s)." in lines
    assert "Skipped 3 file(s) that the records name:" in lines
    assert any(line.startswith("  record 1: /proc/self/environ: ") and "/proc" in line for line in lines)
    assert any(line.startswith("  record 1: link-out.pdf: ") and "link" in line for line in lines)
    assert any(line.startswith("  record 1: library/device.key: ") and "library" in line for line in lines)


def test_files_from_names_the_one_folder_files_come_from(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    Library.create(lib).close()
    here, there = tmp_path / "here", tmp_path / "there"
    (there / "0001").mkdir(parents=True)
    here.mkdir()
    (here / "near.pdf").write_bytes(b"%PDF near")
    (there / "paper.pdf").write_bytes(PDF)
    (there / "0001" / "endnote.pdf").write_bytes(b"%PDF from EndNote's PDF folder")
    ris = here / "refs.ris"
    ris.write_text(_ris(["paper.pdf", "near.pdf", f"file://{there}/paper.pdf"]))

    plain = json.loads(run(lib, "import", str(ris), "--json").stdout)
    assert [a["name"] for a in plain["attached"]] == ["near.pdf"]
    reasons = {s["path"]: s["reason"] for s in plain["skipped_attachments"]}
    assert "not found" in reasons["paper.pdf"] and "outside" in reasons[f"file://{there}/paper.pdf"]

    chosen = json.loads(run(lib, "import", str(ris), "--files-from", str(there), "--allow-duplicates", "--json").stdout)
    assert sorted(a["name"] for a in chosen["attached"]) == ["paper (2).pdf", "paper.pdf"]
    assert {s["path"] for s in chosen["skipped_attachments"]} == {"near.pdf"}  # not from beside the file now

    xml = here / "endnote.xml"
    xml.write_text(_endnote(["internal-pdf://0001/endnote.pdf"]).replace("Hostile", "From EndNote"))
    done = json.loads(run(lib, "import", str(xml), "--files-from", str(there), "--json").stdout)
    assert [a["name"] for a in done["attached"]] == ["endnote.pdf"]

    refused = run(lib, "import", str(ris), "--files-from", str(here / "near.pdf"))
    assert refused.returncode == 2 and "near.pdf" in refused.stderr


def _records(names: list[str]) -> list[formats.ParsedRecord]:
    return [formats.ParsedRecord({"title": "Race", "year": "2020"}, names, 1, None, [])]


def test_a_folder_swapped_for_a_link_while_importing_never_leaks(tmp_path: Path) -> None:
    """TOCTOU: `real` flips between a folder holding `passwd` and a link to /etc.

    Whatever moment the swap hits, the attached file is the harmless one or nothing.
    """
    lib = tmp_path / "lib"
    library = Library.create(lib)
    imp = tmp_path / "imp"
    (imp / "hold").mkdir(parents=True)
    (imp / "hold" / "passwd").write_text("harmless")
    os.rename(imp / "hold", imp / "real")
    secret = Path("/etc/passwd").read_bytes()
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            os.rename(imp / "real", imp / "hold")
            os.symlink("/etc", imp / "real")
            os.unlink(imp / "real")
            os.rename(imp / "hold", imp / "real")

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    attached = skipped = 0
    deadline = time.monotonic() + 10
    try:
        for _ in range(300):
            if time.monotonic() > deadline:
                break
            report = importing.import_records(library, _records(["real/passwd"]), imp, allow_duplicates=True)
            attached += len(report.attached)
            skipped += len(report.skipped_attachments)
    finally:
        stop.set()
        flipper.join(timeout=5)
    files = _attached_files(lib)
    assert secret not in files
    assert all(f == b"harmless" for f in files) and len(files) == attached
    assert attached + skipped > 0
    library.close()


def test_names_of_the_same_file_attach_it_from_the_folder_only(tmp_path: Path) -> None:
    """A link inside the folder to another file inside it is fine; the name is the one written."""
    lib = tmp_path / "lib"
    library = Library.create(lib)
    imp = tmp_path / "imp"
    (imp / "pdfs").mkdir(parents=True)
    (imp / "pdfs" / "a.pdf").write_bytes(PDF)
    (imp / "alias.pdf").symlink_to("pdfs/a.pdf")
    report = importing.import_records(library, _records(["alias.pdf", f"file://{imp}/pdfs/a.pdf"]), imp)
    assert [a["name"] for a in report.attached] == ["alias.pdf", "a.pdf"]
    assert report.skipped_attachments == []
    library.close()


def _module_warnings(path: Path) -> Iterator[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
    for w in caught:
        yield f"{path.name}:{w.lineno}: {w.category.__name__}: {w.message}"


def test_format_modules_compile_without_warnings() -> None:
    """Issue 18 item 8: 'DeprecationWarning: invalid escape sequence' in formats/detect.py."""
    found = [w for path in sorted((ROOT / "p2psync" / "formats").glob("*.py")) for w in _module_warnings(path)]
    assert found == []
