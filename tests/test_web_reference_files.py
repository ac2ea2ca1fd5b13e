"""The Files page over plain HTTP (p2psync/web/files_pages.py): import as `p2psync import` does
(the same lines, all or nothing, duplicates skipped), an export in each format the command line
writes, and a backup that is kept beside the library and restores with `p2psync restore`."""

from __future__ import annotations

import http.client
import json
import uuid
import zipfile
from pathlib import Path
from urllib.parse import quote

from p2psync import formats
from tests.support import cli
from tests.test_web_reference import csrf
from tests.web_support import Answer, WebApp, log_in, request, web_app

RIS = """TY  - JOUR
TI  - Long-term potentiation in the hippocampus
AU  - Bliss, Tim
AU  - Lomo, Terje
PY  - 1973
DO  - 10.1113/jphysiol.1973.sp010273
L1  - /etc/passwd
ER  -

TY  - BOOK
TI  - The organization of behavior
AU  - Hebb, Donald
PY  - 1949
ER  -
"""
BIBTEX = "@article{k1, title={Neural networks and physical systems}, author={Hopfield, John}, year={1982}}\n"


def post_upload(app: WebApp, session: dict[str, str], path: str, fields: list[tuple[str, str, bytes | None]]) -> Answer:
    """multipart/form-data: (name, filename or value, bytes for a file else None)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf(app, session)}\r\n'.encode()]
    for name, text, data in fields:
        if data is None:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{text}\r\n'.encode())
        else:
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{text}"\r\n\r\n'
            parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {**session, "Content-Type": f"multipart/form-data; boundary={boundary}", "Origin": app.base}
    return request(app.base + path, "POST", headers, body)


def ids(library: Path) -> list[str]:
    return [r["id"] for r in json.loads(cli("--library", str(library), "ref", "list", "--json").stdout)]


def titles(library: Path) -> list[str]:
    done = cli("--library", str(library), "ref", "list", "--json")
    return sorted(r["title"] for r in json.loads(done.stdout))


def test_import_says_what_the_command_line_says_and_refuses_a_bad_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "lib"
    assert cli("--library", str(path), "init").returncode == 0
    with web_app(path) as app:
        session = log_in(app, app.login)
        bad = post_upload(app, session, "/files/import", [("file", "notes.txt", b"just some words\n")])
        assert bad.status == 400 and "notes.txt is in no format p2psync reads" in bad.text
        assert 'id="import-error"' in bad.text
        broken = RIS.replace("TY  - BOOK\n", "").encode()
        refused = post_upload(app, session, "/files/import", [("file", "refs.ris", broken)])
        assert refused.status == 400 and "Record 2 (line 10) of the RIS file cannot be read" in refused.text
        assert titles(path) == []
        skipping = [("file", "refs.ris", broken), ("skip_invalid", "1", None)]
        partly = post_upload(app, session, "/files/import", skipping)
        assert "Imported 1 reference(s)" in partly.text and "Skipped 1 invalid record(s):" in partly.text
        assert cli("--library", str(path), "ref", "rm", *ids(path)).returncode == 0
        assert cli("--library", str(path), "trash", "empty", "--yes").returncode == 0
        done = post_upload(app, session, "/files/import", [("file", "refs.ris", RIS.encode())])
        assert done.status == 200, done.text
        assert "Imported 2 reference(s) from refs.ris (RIS)." in done.text
        assert "Skipped 1 file(s) that the records name:" in done.text and "/etc/passwd" in done.text
        assert "attached only by &#39;p2psync import&#39;" in done.text
        assert titles(path) == ["Long-term potentiation in the hippocampus", "The organization of behavior"]
        assert "Long-term potentiation in the hippocampus</a> (1973)" in done.text
        again = post_upload(app, session, "/files/import", [("file", "refs.ris", RIS.encode())])
        assert "Imported 0 reference(s)" in again.text and "Skipped 2 already in the library" in again.text
        forced = post_upload(
            app, session, "/files/import",
            [("file", "x.txt", BIBTEX.encode()), ("format", "bibtex", None), ("allow_duplicates", "1", None)],
        )  # fmt: skip
        assert "Imported 1 reference(s) from x.txt (BibTeX)." in forced.text
        forged = post_upload(
            app, session, "/files/import", [("file", "a.ris", RIS.encode()), ("files_from", "/", None)]
        )
        assert forged.status == 400 and "which it does not have" in forged.text
        assert len(titles(path)) == 3


def test_export_in_each_format_and_of_a_group(tmp_path: Path) -> None:
    path = tmp_path / "lib"
    assert cli("--library", str(path), "init", "--name", "My refs").returncode == 0
    (tmp_path / "in.ris").write_text(RIS.replace("L1  - /etc/passwd\n", ""))
    assert cli("--library", str(path), "import", str(tmp_path / "in.ris")).returncode == 0
    ids = [r["id"] for r in json.loads(cli("--library", str(path), "ref", "list", "--json").stdout)]
    group = json.loads(cli("--library", str(path), "group", "create", "Classics", "--json").stdout)["id"]
    assert cli("--library", str(path), "group", "add", "Classics", ids[1]).returncode == 0
    with web_app(path) as app:
        session = log_in(app, app.login)
        for fmt in formats.FORMATS:
            answer = request(f"{app.base}/files/export?format={fmt}", headers=session)
            assert answer.status == 200, fmt
            name = f"My-refs{formats.DEFAULT_EXTENSIONS[fmt]}"
            assert answer.headers["Content-Disposition"] == f'attachment; filename="{name}"'
            cli_file = tmp_path / name
            assert cli("--library", str(path), "export", str(cli_file), "--format", fmt).returncode == 0
            assert answer.text == cli_file.read_text(), fmt  # byte for byte what the command line writes
        only = request(f"{app.base}/files/export?format=ris&group={group}", headers=session)
        assert "The organization of behavior" in only.text and "Long-term" not in only.text
        assert 'filename="My-refs-Classics.ris"' in only.headers["Content-Disposition"]
        form = {**session, "Content-Type": "application/x-www-form-urlencoded", "Origin": app.base}
        token = csrf(app, session)
        chosen = request(f"{app.base}/files/selection", "POST", form, f"csrf={token}&ref={ids[1]}&ref={ids[0]}&group=x")
        assert chosen.status == 200 and "Export 2 selected references" in chosen.text
        assert chosen.text.index(ids[1]) < chosen.text.index(ids[0])
        body = f"csrf={token}&ref={ids[1]}&ref={ids[0]}&format=ris"
        picked = request(f"{app.base}/files/export-selected", "POST", form, body)
        assert picked.status == 200 and 'filename="My-refs-selection.ris"' in picked.headers["Content-Disposition"]
        assert picked.text.index("The organization of behavior") < picked.text.index("Long-term potentiation")
        for bad, status, said in (
            (f"csrf={token}&format=ris", 400, "Select the references to export first."),
            (f"csrf={token}&ref=zzzzzzzz&format=ris", 404, "No reference with id zzzzzzzz"),
            (f"csrf={token}&ref={ids[0]}&format=docx", 400, "Unknown format"),
            (f"csrf={token}&ref={ids[0]}&format=ris&group={group}", 400, "which it does not have"),
        ):
            answer = request(f"{app.base}/files/export-selected", "POST", form, bad)
            assert answer.status == status and said in answer.text, bad
        unknown = request(f"{app.base}/files/export?format=docx", headers=session)
        assert unknown.status == 400 and "Unknown format" in unknown.text
        no_group = request(f"{app.base}/files/export?format=ris&group=nope", headers=session)
        assert no_group.status == 404
        page = request(f"{app.base}/files", headers=session).text
        assert "Classics (1)" in page and all(label in page for label in formats.LABELS.values())


def test_backup_downloads_an_archive_kept_beside_the_library_that_restores(tmp_path: Path) -> None:
    path = tmp_path / "lib"
    assert cli("--library", str(path), "init", "--name", "Kept à Genève").returncode == 0
    assert cli("--library", str(path), "ref", "add", "--title", "Backed up").returncode == 0
    with web_app(path) as app:
        session = log_in(app, app.login)
        headers = {**session, "Content-Type": "application/x-www-form-urlencoded", "Origin": app.base}
        refused = request(app.base + "/files/backup", "POST", headers, "")
        assert refused.status == 403 and not list(tmp_path.glob("*.zip"))
        connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=60)
        connection.request("POST", "/files/backup", f"csrf={csrf(app, session)}", headers)
        answer = connection.getresponse()
        body = answer.read()
        connection.close()
        assert answer.status == 200 and answer.headers["Content-Type"] == "application/zip"
        [kept] = tmp_path.glob("*-p2psync-Kept-à-Genève.zip")
        ascii_name = kept.name.replace("à", "_").replace("è", "_")
        assert answer.headers["Content-Disposition"] == (
            f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(kept.name)}"
        )
        assert body == kept.read_bytes()
        notice = request(app.base + "/files", headers=session).text
        assert f"to {kept}" in notice and "Backed up 1 references, 0 attachments" in notice
    downloaded = tmp_path / "downloaded.zip"
    downloaded.write_bytes(body)
    with zipfile.ZipFile(downloaded) as archive:
        assert "p2psync-backup.json" in archive.namelist()
    restored = tmp_path / "restored"
    done = cli("--library", str(restored), "restore", str(downloaded), "--json")
    assert done.returncode == 0, done.stderr
    assert titles(restored) == ["Backed up"]
