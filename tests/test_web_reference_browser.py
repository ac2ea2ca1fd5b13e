"""A reference's pages and the Files page in a real browser (Debian's Chromium through Playwright,
the `page` fixture): create with a validation message beside the field, then fixed and saved;
edit; upload a PDF (file input and drag and drop) and open it; import a RIS file; download an
export; make and download a backup that `p2psync restore` rebuilds.

With P2PSYNC_SCREENSHOTS=DIR the tests also save docs' screenshots there (reference.png, edit.png, files.png)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support import cli
from tests.test_web_reference import PDF
from tests.web_support import WebApp, web_app

SHOTS = os.environ.get("P2PSYNC_SCREENSHOTS")
RIS = """TY  - JOUR
TI  - Long-term potentiation in the hippocampus
AU  - Bliss, Tim
AU  - Lomo, Terje
PY  - 1973
JO  - The Journal of Physiology
ER  -

TY  - BOOK
TI  - The organization of behavior
AU  - Hebb, Donald
PY  - 1949
ER  -
"""


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name))


@pytest.fixture
def library(tmp_path: Path) -> Path:
    path = tmp_path / "lib"
    assert cli("--library", str(path), "init", "--name", "Neuroscience reading").returncode == 0
    return path


def refs(library: Path) -> list[dict[str, Any]]:
    done = cli("--library", str(library), "ref", "list", "--json")
    assert done.returncode == 0, done.stderr
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def logged_in(page: Any, app: WebApp) -> None:
    page.goto(app.login)
    page.wait_for_url(app.base + "/")


def test_create_with_a_message_beside_the_field_then_edit_and_attach(page: Any, library: Path, tmp_path: Path) -> None:
    with web_app(library) as app:
        logged_in(page, app)
        page.goto(app.base + "/ref/new")
        page.select_option("#field-type", "journal_article")
        page.fill("#field-title", "Synaptic plasticity: a Hebbian account")
        page.fill("#field-authors", "Bliss, Tim\nCollingridge, Graham")
        page.fill("#field-year", "nineteen ninety-three")
        page.fill("#field-journal", "Nature")
        page.fill("#field-doi", "10.1038/361031a0")
        page.fill("#field-keywords", "LTP\nhippocampus\nmemory")
        page.fill("#field-abstract", "Long-term potentiation is a lasting increase in synaptic strength.")
        page.click("button:text('Save')")
        year = page.locator("#field-year")
        assert year.get_attribute("aria-invalid") == "true"
        assert "field-year-error" in (year.get_attribute("aria-describedby") or "")
        message = page.locator("#field-year-error")
        assert message.is_visible()
        assert "is not a year; write e.g. 2021, 2021a or 'in press'" in message.inner_text()
        assert page.locator("#field-title").get_attribute("aria-invalid") is None
        assert page.evaluate("document.activeElement.id") == "field-year"  # the keyboard starts where the fix is
        assert page.input_value("#field-title") == "Synaptic plasticity: a Hebbian account"  # kept as typed
        assert refs(library) == []  # nothing saved

        page.fill("#field-year", "1993")
        page.click("button:text('Save')")
        page.wait_for_url(app.base + "/ref/*")
        assert "Added the reference." in page.locator("#notices").inner_text()
        [made] = refs(library)
        assert page.url == f"{app.base}/ref/{made['id']}"
        assert made["year"] == "1993" and made["keywords"] == ["LTP", "hippocampus", "memory"]
        assert page.locator("[data-field=authors] li").all_inner_texts() == ["Bliss, Tim", "Collingridge, Graham"]

        page.click("a:text('Edit')")
        page.fill("#field-title", "A synaptic model of memory")
        page.fill("#field-year", "spring 1993")
        page.click("button:text('Save')")
        assert "Year 'spring 1993' is not a year" in page.locator("#field-year-error").inner_text()
        assert refs(library)[0]["title"] == "Synaptic plasticity: a Hebbian account"
        shot(page, "edit.png")
        page.fill("#field-year", "1993")
        page.fill("#field-volume", "361")
        page.click("button:text('Save')")
        page.wait_for_url(f"{app.base}/ref/{made['id']}")
        assert page.locator("h1").inner_text() == "A synaptic model of memory"
        assert page.locator("[data-field=volume]").inner_text() == "361"
        assert f"Updated {made['id']}." in page.locator("#notices").inner_text()

        pdf = tmp_path / "Bliss 1993.pdf"
        pdf_bytes = PDF + b"%" + b"0" * 240_000 + b"\n"  # a paper's size, for the screenshot
        pdf.write_bytes(pdf_bytes)
        page.set_input_files("#attach-file", str(pdf))
        page.click("button:text('Attach')")
        link = page.locator("a:text('Bliss 1993.pdf')")
        link.wait_for()
        with page.context.expect_event("response", lambda r: "/file/" in r.url) as waiting:
            link.click()  # opens in a new tab, in the browser's PDF viewer
        assert waiting.value.status == 200 and waiting.value.headers["content-type"] == "application/pdf"
        for other in page.context.pages[1:]:
            other.close()
        opened = page.request.get(app.base + link.get_attribute("href"))
        assert opened.status == 200 and opened.headers["content-type"] == "application/pdf"
        assert opened.body() == pdf_bytes

        # Drag and drop: a file dropped on the page is attached by static/reference.js.
        page.evaluate(
            """() => {
              const data = new DataTransfer();
              data.items.add(new File(["notes about the figures"], "figure notes.txt", {type: "text/plain"}));
              for (const kind of ["dragenter", "dragover", "drop"])
                document.body.dispatchEvent(new DragEvent(kind, {dataTransfer: data, bubbles: true, cancelable: true}));
            }"""
        )
        page.locator("a:text('figure notes.txt')").wait_for()
        assert "Attached figure notes.txt" in page.locator("#upload-status").inner_text()
        names = [
            a["name"]
            for a in json.loads(cli("--library", str(library), "attachment", "list", made["id"], "--json").stdout)
        ]
        assert names == ["Bliss 1993.pdf", "figure notes.txt"]
        assert cli("--library", str(library), "group", "create", "Memory").returncode == 0
        assert cli("--library", str(library), "group", "add", "Memory", made["id"]).returncode == 0
        page.goto(f"{app.base}/ref/{made['id']}")
        shot(page, "reference.png")


def test_import_export_and_backup_from_the_files_page(page: Any, library: Path, tmp_path: Path) -> None:
    ris = tmp_path / "from-endnote.ris"
    ris.write_text(RIS)
    with web_app(library) as app:
        logged_in(page, app)
        page.goto(app.base + "/files")
        page.set_input_files("#import-file", str(ris))
        page.click("button:text('Import')")
        summary = page.locator("#import-summary")
        summary.wait_for()
        assert "Imported 2 reference(s) from from-endnote.ris (RIS)." in summary.inner_text()
        shot(page, "files.png")
        page.click("#imported a:text('The organization of behavior')")
        assert page.locator("h1").inner_text() == "The organization of behavior"
        assert sorted(r["title"] for r in refs(library)) == [
            "Long-term potentiation in the hippocampus",
            "The organization of behavior",
        ]

        page.goto(app.base + "/")
        page.check("input[aria-label='Select The organization of behavior']")
        page.click("button:text('Export…')")
        page.wait_for_url(app.base + "/files/selection")
        page.select_option("#selection-format", "csl-json")
        with page.expect_download() as waiting:
            page.click("button:text('Download')")
        chosen = json.loads(Path(waiting.value.path()).read_text())
        assert [item["title"] for item in chosen] == ["The organization of behavior"]

        page.goto(app.base + "/files")
        page.select_option("#export-format", "bibtex")
        with page.expect_download() as waiting:
            page.click("button:text('Download')")
        download = waiting.value
        assert download.suggested_filename == "Neuroscience-reading.bib"
        text = Path(download.path()).read_text()
        assert "title = {Long-term potentiation in the hippocampus}" in text or "Long-term potentiation" in text
        assert text.count("@") == 2

        with page.expect_download() as waiting:
            page.click("button:text('Make a backup and download it')")
        archive = tmp_path / "downloaded.zip"
        waiting.value.save_as(archive)
        assert waiting.value.suggested_filename.endswith("-p2psync-Neuroscience-reading.zip")
        assert (library.parent / waiting.value.suggested_filename).is_file()  # kept beside the library
    restored = tmp_path / "restored"
    done = cli("--library", str(restored), "restore", str(archive))
    assert done.returncode == 0, done.stderr
    assert sorted(r["title"] for r in refs(restored)) == sorted(r["title"] for r in refs(library))


def test_the_library_page_leads_to_a_new_reference_and_the_files_page(page: Any, library: Path) -> None:
    with web_app(library) as app:
        logged_in(page, app)
        page.click("a:text('New reference')")
        page.wait_for_url(app.base + "/ref/new")
        page.go_back()
        page.click("a:text('Import, export, back up')")
        page.wait_for_url(app.base + "/files")
        assert page.locator("nav[aria-label=Main] a[aria-current=page]").inner_text() == "Library"
