"""A reference's pages over plain HTTP (p2psync/web/reference_pages.py, reference_form.py): every
field shown, the edit and create forms with the catalogue's messages beside the field, trash and
restore, attachments uploaded, opened and removed, and hostile input (forged fields, huge values,
forged ids, path tricks in file names, an HTML upload) refused in one sentence with nothing
changed. Real `p2psync web` processes on libraries made with the CLI."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from p2psync.store.sync import sync_libraries
from tests.support import cli
from tests.sync_support import founded, joined
from tests.web_support import Answer, WebApp, log_in, request, web_app

PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebApp, dict[str, str], str]]:
    """One app for the module (each test makes its own references): the app, a session, its CSRF token."""
    path = tmp_path_factory.mktemp("web-ref") / "lib"
    assert cli("--library", str(path), "init", "--name", "Reference pages").returncode == 0
    with web_app(path) as app:
        session = log_in(app, app.login)
        yield app, session, csrf(app, session)


def csrf(app: WebApp, session: dict[str, str]) -> str:
    """The session's CSRF token, from a page of this area (the library page is another helper's)."""
    page = request(app.base + "/files", headers=session).text
    return page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def lib(app: WebApp, *args: str) -> Any:
    done = cli("--library", str(app.library), *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def add(app: WebApp, *args: str) -> str:
    return str(lib(app, "ref", "add", *args)["id"])


def post_form(app: WebApp, session: dict[str, str], path: str, fields: list[tuple[str, str]]) -> Answer:
    headers = {**session, "Content-Type": "application/x-www-form-urlencoded", "Origin": app.base}
    return request(app.base + path, "POST", headers, urlencode(fields))


def post_files(
    app: WebApp, session: dict[str, str], csrf: str, path: str, files: list[tuple[str, bytes]], field: str = "file"
) -> Answer:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'.encode()]
    for name, data in files:
        quoted = name.replace('"', "%22")
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{quoted}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {**session, "Content-Type": f"multipart/form-data; boundary={boundary}", "Origin": app.base}
    return request(app.base + path, "POST", headers, body)


def edit_fields(app: WebApp, session: dict[str, str], ref_id: str) -> list[tuple[str, str]]:
    """The edit form as a browser would post it untouched: every f.* and was.* control."""
    import html.parser

    fields: list[tuple[str, str]] = []

    class Form(html.parser.HTMLParser):
        current: tuple[str, list[str]] | None = None
        option_selected = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "input" and a.get("name") and a.get("type") != "file":
                fields.append((str(a["name"]), a.get("value") or ""))
            elif tag in ("textarea", "select"):
                self.current = (str(a["name"]), [])
            elif tag == "option" and self.current is not None and "selected" in a:
                self.current[1].append(a.get("value") or "")

        def handle_data(self, data: str) -> None:
            if self.current is not None and self.current[0] and self.lasttag == "textarea":
                self.current[1].append(data)

        def handle_endtag(self, tag: str) -> None:
            if tag in ("textarea", "select") and self.current is not None:
                fields.append((self.current[0], "".join(self.current[1])))
                self.current = None

    page = request(f"{app.base}/ref/{ref_id}/edit", headers=session)
    assert page.status == 200
    Form().feed(page.text)
    return fields


def replaced(fields: list[tuple[str, str]], **changes: str) -> list[tuple[str, str]]:
    return [(k, changes.get(k.removeprefix("f."), v) if k.startswith("f.") else v) for k, v in fields]


# --- the page ------------------------------------------------------------------------------------


def test_the_page_shows_every_field_groups_trash_and_attachments(served: Any, tmp_path: Path) -> None:
    app, session, _ = served
    ref_id = add(
        app, "--title", "Synaptic <i>plasticity</i>", "--year", "1999", "--author", "Curie, Marie",
        "--author", "World Health Organization", "--doi", "10.1000/xyz", "--field", "keywords=memory;LTP",
        "--field", "abstract=First paragraph.\n\nSecond.", "--field", "volume=12", "--url", "javascript:alert(1)",
    )  # fmt: skip
    group = lib(app, "group", "create", "Neuro")["id"]
    assert cli("--library", str(app.library), "group", "add", "Neuro", ref_id).returncode == 0
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(PDF)
    assert cli("--library", str(app.library), "attach", ref_id, str(pdf)).returncode == 0
    page = request(f"{app.base}/ref/{ref_id}", headers=session)
    assert page.status == 200
    text = page.text
    assert "Synaptic &lt;i&gt;plasticity&lt;/i&gt;" in text and "<i>plasticity" not in text
    for shown in ("Journal Article", "1999", "Curie, Marie", "World Health Organization", "memory", "LTP",
                  "First paragraph.\n\nSecond.", "Volume", ">12<", "Added", "Modified", f'href="/?group={group}"',
                  "Neuro", "paper.pdf", f'href="/ref/{ref_id}/file/paper.pdf"', f"{len(PDF)} bytes"):  # fmt: skip
        assert shown in text, shown
    assert 'href="https://doi.org/10.1000/xyz"' in text
    assert 'href="javascript:' not in text  # a URL field is a link only for http(s)
    assert "not on this machine yet" not in text and "In the trash" not in text


def test_a_missing_file_and_a_conflict_are_marked(tmp_path: Path) -> None:
    """Two real libraries: B attaches a file and both edit the title; after a sync A has the
    attachment's record but not its file, and a conflict in the title."""
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    ref_id = a.add_reference({"title": "Original"})
    sync_libraries(a, b)
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes(PDF)
    b.attach(ref_id, pdf)
    a.edit_reference(ref_id, {"title": "Title on A"})
    b.edit_reference(ref_id, {"title": "Title on B"})
    sync_libraries(a, b)
    a.close()
    b.close()
    with web_app(tmp_path / "a") as app:
        session = log_in(app, app.login)
        text = request(f"{app.base}/ref/{ref_id}", headers=session).text
        assert "scan.pdf" in text and "not on this machine yet" in text
        assert f'href="/conflicts/{ref_id}"' in text and "Sync Conflicts in title" in text
        assert 'href="/?view=conflicts">Sync Conflicts</a>' in text  # the library's view of the group
        form = request(f"{app.base}/ref/{ref_id}/edit", headers=session).text
        assert "Sync Conflicts in title" in form and f'href="/conflicts/{ref_id}"' in form
        # Saving the form with another field changed leaves the conflict to the conflicts page.
        token = form.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        fields = replaced(edit_fields(app, session, ref_id), volume="7")
        headers = {**session, "Content-Type": "application/x-www-form-urlencoded", "Origin": app.base}
        assert ("csrf", token) in fields
        assert request(f"{app.base}/ref/{ref_id}/edit", "POST", headers, urlencode(fields)).status == 303
        shown = json.loads(cli("--library", str(tmp_path / "a"), "ref", "show", ref_id, "--json").stdout)
        assert shown["volume"] == "7" and "title" in shown["conflicts"]
        missing = request(f"{app.base}/ref/{ref_id}/file/scan.pdf", headers=session)
        assert missing.status == 404 and "not on this machine yet" in missing.text


def test_trash_and_restore(served: Any) -> None:
    app, session, csrf = served
    ref_id = add(app, "--title", "To be trashed")
    done = post_form(app, session, f"/ref/{ref_id}/trash", [("csrf", csrf)])
    assert done.status == 303 and done.headers["Location"] == f"/ref/{ref_id}"
    assert lib(app, "ref", "show", ref_id)["trashed"] is True
    page = request(f"{app.base}/ref/{ref_id}", headers=session).text
    assert "Moved the reference to the trash." in page and "In the trash." in page and "Restore from the trash" in page
    assert post_form(app, session, f"/ref/{ref_id}/restore", [("csrf", csrf)]).status == 303
    assert lib(app, "ref", "show", ref_id)["trashed"] is False
    again = post_form(app, session, f"/ref/{ref_id}/restore", [("csrf", csrf)])
    assert again.status == 400 and "is not in the trash" in again.text


# --- edit and create -----------------------------------------------------------------------------


def test_edit_with_a_bad_value_shows_it_beside_the_field_and_saves_nothing(served: Any) -> None:
    app, session, _ = served
    ref_id = add(app, "--title", "Before", "--year", "2001")
    before = lib(app, "ref", "show", ref_id)
    fields = replaced(edit_fields(app, session, ref_id), title="After", year="last spring", doi="nonsense")
    answer = post_form(app, session, f"/ref/{ref_id}/edit", fields)
    assert answer.status == 400
    for name, message in (("year", "Year &#39;last spring&#39; is not a year"), ("doi", "does not start with")):
        control = answer.text.split(f'id="field-{name}"', 1)[1].split(">", 1)[0]
        assert 'aria-invalid="true"' in control and f"field-{name}-error" in control
        error = answer.text.split(f'id="field-{name}-error">', 1)[1].split("</p>", 1)[0]
        assert message in error
    assert 'value="After"' in answer.text  # what was typed is kept
    assert 'id="field-title"' in answer.text and 'id="field-title-error"' not in answer.text
    assert lib(app, "ref", "show", ref_id) == before


def test_edit_writes_only_the_changed_fields_and_an_empty_value_clears(served: Any) -> None:
    app, session, _ = served
    ref_id = add(app, "--title", "Old", "--year", "2001", "--author", "Curie, Marie", "--field", "volume=3")
    fields = replaced(
        edit_fields(app, session, ref_id), title="New title", volume="", authors="Curie, Marie\r\nJoliot, Frédéric\r\n"
    )
    # Meanwhile the command line (a sync, say) changes the year: the page did not touch it.
    assert cli("--library", str(app.library), "ref", "edit", ref_id, "--year", "2002").returncode == 0
    answer = post_form(app, session, f"/ref/{ref_id}/edit", fields)
    assert answer.status == 303 and answer.headers["Location"] == f"/ref/{ref_id}"
    shown = lib(app, "ref", "show", ref_id)
    assert shown["title"] == "New title" and shown["year"] == "2002" and "volume" not in shown
    assert shown["authors"] == [{"family": "Curie", "given": "Marie"}, {"family": "Joliot", "given": "Frédéric"}]
    assert f"Updated {ref_id}." in request(f"{app.base}/ref/{ref_id}", headers=session).text
    untouched = post_form(app, session, f"/ref/{ref_id}/edit", edit_fields(app, session, ref_id))
    assert untouched.status == 303
    assert f"Nothing to change in {ref_id}." in request(f"{app.base}/ref/{ref_id}", headers=session).text


def test_create_needs_a_title_and_valid_values(served: Any) -> None:
    app, session, csrf = served
    count = len(lib(app, "ref", "list"))
    form = [("csrf", csrf), ("f.type", "book"), ("f.title", ""), ("f.year", "2020"), ("f.keywords", "a\nb")]
    answer = post_form(app, session, "/ref/new", form)
    assert answer.status == 400 and "A new reference needs at least a title." in answer.text
    assert 'id="field-title-error"' in answer.text
    bad = post_form(app, session, "/ref/new", [*form[:2], ("f.title", "Fine"), ("f.date", "2020-13-01")])
    assert bad.status == 400 and "Date &#39;2020-13-01&#39; is not a date" in bad.text
    assert len(lib(app, "ref", "list")) == count
    done = post_form(app, session, "/ref/new", [*form[:2], ("f.title", "A book"), *form[3:]])
    assert done.status == 303
    new_id = done.headers["Location"].rsplit("/", 1)[1]
    shown = lib(app, "ref", "show", new_id)
    assert (shown["type"], shown["title"], shown["year"], shown["keywords"]) == ("book", "A book", "2020", ["a", "b"])


def test_forged_fields_and_huge_values_change_nothing(served: Any) -> None:
    app, session, csrf = served
    ref_id = add(app, "--title", "Guarded")
    before = lib(app, "ref", "show", ref_id)
    count = len(lib(app, "ref", "list"))
    for form, said in (
        ([("csrf", csrf), ("f.title", "x"), ("f.colour", "red")], "Unknown field &#39;colour&#39;"),
        ([("csrf", csrf), ("f.title", "x"), ("trashed", "1")], "is not a field of a reference"),
        ([("csrf", csrf), ("f.title", "x"), ("f.added", "1")], "Unknown field &#39;added&#39;"),
        ([("csrf", csrf), ("f.title", "x"), ("f.title", "y")], "twice"),
    ):
        for path in (f"/ref/{ref_id}/edit", "/ref/new"):
            answer = post_form(app, session, path, form)
            assert answer.status == 400 and said in answer.text, (path, form)
    huge = post_form(app, session, f"/ref/{ref_id}/edit", [("csrf", csrf), ("f.title", "t" * 100_000)])
    assert huge.status == 400 and "Title is 100000 characters long; the limit is 4000." in huge.text
    many = post_form(app, session, f"/ref/{ref_id}/edit", [("csrf", csrf), ("f.abstract", "a" * 1_000_001)])
    assert many.status == 400 and "the limit is 1000000" in many.text
    assert lib(app, "ref", "show", ref_id) == before
    assert len(lib(app, "ref", "list")) == count


def test_forged_ids_are_refused_in_words(served: Any) -> None:
    app, session, csrf = served
    for path in ("/ref/zzzzzzzz", "/ref/..%2F..%2Fetc", "/ref/%00", "/ref/zzzzzzzz/edit", "/ref/zzzzzzzz/file/a.pdf"):
        answer = request(app.base + path, headers=session)
        assert answer.status in (400, 404), path
        assert "reference" in answer.text.lower(), path
    answer = post_form(app, session, "/ref/zzzzzzzz/edit", [("csrf", csrf), ("f.title", "x")])
    assert answer.status == 404 and "No reference with id zzzzzzzz" in answer.text
    assert post_form(app, session, "/ref/zzzzzzzz/trash", [("csrf", csrf)]).status == 404


# --- attachments ---------------------------------------------------------------------------------


def test_upload_open_and_remove_an_attachment(served: Any) -> None:
    app, session, csrf = served
    ref_id = add(app, "--title", "With a PDF")
    done = post_files(app, session, csrf, f"/ref/{ref_id}/attach", [("Smith 2020 – notes.pdf", PDF)])
    assert done.status == 303, done.text
    listed = lib(app, "attachment", "list", ref_id)
    assert [(a["name"], a["size"]) for a in listed] == [("Smith 2020 – notes.pdf", len(PDF))]
    href = f"/ref/{ref_id}/file/{quote('Smith 2020 – notes.pdf', safe='')}"
    page = request(f"{app.base}/ref/{ref_id}", headers=session).text
    assert f"Attached Smith 2020 – notes.pdf ({len(PDF)} bytes) to {ref_id}." in page and href in page
    opened = request(app.base + href, headers=session)
    assert opened.status == 200 and opened.text.encode() == PDF
    assert opened.headers["Content-Type"] == "application/pdf"
    assert opened.headers["Content-Disposition"].startswith("inline;")
    odd = "50% off #1 (draft) ünïcode.pdf"
    assert post_files(app, session, csrf, f"/ref/{ref_id}/attach", [(odd, PDF)]).status == 303
    odd_href = f"/ref/{ref_id}/file/{quote(odd, safe='')}"
    assert odd_href in request(f"{app.base}/ref/{ref_id}", headers=session).text
    assert request(app.base + odd_href, headers=session).text.encode() == PDF
    assert post_form(app, session, f"{odd_href}/remove", [("csrf", csrf)]).status == 303
    confirm = request(f"{app.base}{href}/remove", headers=session)
    assert confirm.status == 200 and "Remove the attachment Smith 2020 – notes.pdf?" in confirm.text
    assert lib(app, "attachment", "list", ref_id) != []  # asking is not removing
    assert post_form(app, session, f"{href}/remove", [("csrf", csrf)]).status == 303
    assert lib(app, "attachment", "list", ref_id) == []
    assert request(app.base + href, headers=session).status == 404


def test_an_uploaded_html_file_is_served_as_a_download(served: Any) -> None:
    app, session, csrf = served
    ref_id = add(app, "--title", "With HTML")
    page = b"<html><script>fetch('/files/backup',{method:'POST'})</script></html>"
    for name in ("evil.html", "evil.svg", "evil.pdf.html"):
        assert post_files(app, session, csrf, f"/ref/{ref_id}/attach", [(name, page)]).status == 303
        served_file = request(f"{app.base}/ref/{ref_id}/file/{name}", headers=session)
        assert served_file.status == 200
        assert served_file.headers["Content-Type"] == "application/octet-stream"
        assert served_file.headers["Content-Disposition"].startswith("attachment;")
        assert served_file.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in served_file.headers["Content-Security-Policy"]


def test_hostile_upload_names_are_refused_by_the_librarys_rules(served: Any) -> None:
    app, session, csrf = served
    ref_id = add(app, "--title", "Hostile names")
    outside = app.library.parent / "escaped.pdf"
    for name, said in (
        ("../escaped.pdf", "has a character not allowed"),
        ("..", "not empty, &#39;.&#39; or &#39;..&#39;"),
        ("a/b.pdf", "has a character not allowed"),
        (".p2psync-versions", "p2psync keeps for its own"),
        (".P2PSYNC-partial-x", "p2psync keeps for its own"),
        ("x" * 300 + ".pdf", "longer than 255 bytes"),
        ("trailing. ", "starts or ends with a space"),
    ):
        answer = post_files(app, session, csrf, f"/ref/{ref_id}/attach", [(name, PDF)])
        assert answer.status == 400, name
        assert said in answer.text, (name, answer.text[-600:])
    assert lib(app, "attachment", "list", ref_id) == []
    assert not outside.exists()
    assert not list((app.library / "attachments").glob(f"{ref_id}/*"))
    # a second file with a bad name refuses the whole upload: nothing attached
    answer = post_files(app, session, csrf, f"/ref/{ref_id}/attach", [("good.pdf", PDF), ("bad/name.pdf", PDF)])
    assert answer.status == 400 and lib(app, "attachment", "list", ref_id) == []
    assert post_files(app, session, csrf, f"/ref/{ref_id}/attach", []).status == 400  # no file chosen
    forged = post_files(app, session, csrf, f"/ref/{ref_id}/attach", [("a.pdf", PDF)], field="other")
    assert forged.status == 400 and "only files are attached here" in forged.text


def test_sizes_read_as_a_file_manager_shows_them() -> None:
    from p2psync.web.reference_form import human_size

    assert [human_size(n) for n in (0, 999, 1000, 240_070, 1_234_567, 5 * 10**12)] == [
        "0 bytes", "999 bytes", "1.0 KB", "240.1 KB", "1.2 MB", "5.0 TB",
    ]  # fmt: skip
