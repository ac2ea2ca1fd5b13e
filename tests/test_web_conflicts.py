"""Sync Conflicts (p2psync/web/conflicts_pages.py) with two real libraries: "Home laptop" and
"Work laptop" edit the same fields, sync over 127.0.0.1 (work runs `p2psync daemon`, home runs
`p2psync sync --address`), and the conflict is resolved on home's web page: both versions with
both device names, one choice per field or a typed value. After the next sync the work laptop
holds the resolved values and no conflict, as its own command line says. Forged forms are refused
in one sentence and change nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.web_support import csrf_of, log_in, request, web_app
from tests.web_sync_support import HOME, WORK, Daemon, Devices, ok, ref_id, two_devices

HOME_TITLE = "Long-term potentiation and memory (draft notes)"
WORK_TITLE = "Long-term potentiation and memory: a review"


@pytest.fixture
def devices(tmp_path: Path) -> Devices:
    return two_devices(tmp_path)


def conflicts_of(library: Path) -> list[dict[str, Any]]:
    return list(json.loads(ok("--library", str(library), "conflicts", "list", "--json")))


def reference(library: Path, ref: str) -> dict[str, Any]:
    return dict(json.loads(ok("--library", str(library), "ref", "show", ref, "--json")))


def test_a_real_conflict_resolved_on_the_page_is_gone_on_the_other_library(devices: Devices, page: Any) -> None:
    home, work = str(devices.home), str(devices.work)
    daemon = Daemon(devices.work, "--no-auto")
    try:
        ref = ref_id(devices.home, "Long-term potentiation")
        ok("--library", home, "ref", "edit", ref, "--title", HOME_TITLE, "--year", "2003")
        ok("--library", work, "ref", "edit", ref, "--title", WORK_TITLE, "--year", "2005", "--journal", "Physiol. Rev.")
        ok("--library", home, "sync", "--address", daemon.address)
        [listed] = conflicts_of(devices.home)
        assert listed["id"] == ref and sorted(listed["fields"]) == ["title", "year"]
        assert [c["id"] for c in conflicts_of(devices.work)] == [ref]  # the push made it a conflict there too

        with web_app(devices.home) as app:
            page.goto(app.login)
            page.goto(app.base + "/conflicts")
            page.get_by_role("link", name=WORK_TITLE).or_(page.get_by_role("link", name=HOME_TITLE)).click()
            assert page.url == f"{app.base}/conflicts/{ref}"
            title = page.locator("fieldset[data-field=title]")
            text = title.inner_text()
            for expected in (HOME, WORK, HOME_TITLE, WORK_TITLE, "this device"):
                assert expected in text, (expected, text)
            assert title.locator("time").count() == 2  # each version with its time
            year = page.locator("fieldset[data-field=year]")
            assert HOME in year.inner_text() and WORK in year.inner_text()
            assert "2003" in year.inner_text() and "2005" in year.inner_text()
            # Title: the work laptop's version; year: neither, a corrected value typed in.
            title.locator(".version", has_text=WORK).get_by_role("radio").check()
            year.get_by_label("New value for Year").fill("2004")
            assert year.get_by_role("radio", name="A new value").is_checked()  # typing chose it
            page.get_by_role("button", name="Resolve").click()
            page.wait_for_url(app.base + "/conflicts")
            assert "Resolved Title, Year" in page.locator("#notices").inner_text()
            assert page.locator("#no-conflicts").is_visible()
        assert conflicts_of(devices.home) == []

        ok("--library", home, "sync", "--address", daemon.address)
        shown = reference(devices.work, ref)
        assert shown["title"] == WORK_TITLE and shown["year"] == "2004"
        assert shown["journal"] == "Physiol. Rev."  # the field only one side changed merged as ever
        assert conflicts_of(devices.work) == []
        assert reference(devices.home, ref)["title"] == WORK_TITLE
    finally:
        daemon.stop()


def conflict_in_process(devices: Devices) -> str:
    """Title and year changed on both libraries, then one in-process sync (tests/sync_support.py)."""
    ref = ref_id(devices.home, "Synaptic plasticity")
    with Library.open(devices.home) as home, Library.open(devices.work) as work:
        home.refs.edit(ref, {"title": "Synaptic plasticity (home)", "year": "2001"})
        work.refs.edit(ref, {"title": "Synaptic plasticity (work)", "year": "1999"})
        sync_libraries(home, work)
    return ref


def test_forged_forms_are_refused_in_one_sentence_and_change_nothing(devices: Devices) -> None:
    ref = conflict_in_process(devices)
    with Library.open(devices.home) as library:
        home_id, work_id = library.device_id, next(d.device_id for d in library.members.listing() if d.name == WORK)
    before = ok("--library", str(devices.home), "conflicts", "show", ref, "--json")
    changes = json.loads(ok("--library", str(devices.home), "info", "--json"))["changes"]
    with web_app(devices.home) as app:
        session = log_in(app, app.login)
        csrf = csrf_of(app, session)
        form = {**session, "Content-Type": "application/x-www-form-urlencoded"}

        def post(fields: dict[str, str]) -> str:
            answer = request(f"{app.base}/conflicts/{ref}", "POST", form, urlencode({"csrf": csrf, **fields}))
            assert answer.status == 400, answer.text
            return answer.text.split('id="resolve-error">', 1)[1].split("</p>", 1)[0]

        cases = {
            "a field not in conflict": {"keep:title": home_id, "keep:year": home_id, "keep:journal": work_id},
            "a device not among the versions": {"keep:title": "ZZZZZZZ", "keep:year": home_id},
            "an empty device": {"keep:title": "", "keep:year": home_id},
            "a value the catalogue refuses": {"keep:title": home_id, "keep:year": "new", "value:year": "yesterday"},
            "a typed value for an unknown field": {"keep:title": home_id, "keep:year": home_id, "keep:nope": "new"},
            "a field left out": {"keep:title": home_id},
            "nothing chosen": {},
        }
        for case, fields in cases.items():
            sentence = post(fields)
            assert sentence.count(".") >= 1 and "\n" not in sentence.strip() and len(sentence) < 300, (case, sentence)
        assert "not in conflict" in post(cases["a field not in conflict"])
        assert "comes from device ZZZZZZZ" in post(cases["a device not among the versions"])
        assert "Say whose version" in post(cases["an empty device"])
        # The form comes back with what was chosen and typed.
        again = request(
            f"{app.base}/conflicts/{ref}", "POST", form,
            urlencode({"csrf": csrf, "keep:title": home_id, "keep:year": "new", "value:year": "yesterday"}),
        )  # fmt: skip
        assert 'value="yesterday"' in again.text
        huge = request(f"{app.base}/conflicts/{ref}", "POST", form, f"csrf={csrf}&keep:title={'x' * 5_000_000}")
        assert huge.status == 400 and "far too large" in huge.text
        assert request(f"{app.base}/conflicts/nosuchref", headers=session).status == 404
        # A file that is no version of the conflict is not served, whatever the query says.
        for query in (f"field=attachment:{quote('../../library.db')}&sha=00", "field=title&sha=00", ""):
            assert request(f"{app.base}/conflicts/{ref}/file?{query}", headers=session).status == 404
    assert ok("--library", str(devices.home), "conflicts", "show", ref, "--json") == before
    assert json.loads(ok("--library", str(devices.home), "info", "--json"))["changes"] == changes


def test_the_command_line_types_a_new_value_the_same_way(devices: Devices) -> None:
    ref = conflict_in_process(devices)
    new_title = "title=Synaptic plasticity and memory"
    home = str(devices.home)
    done = json.loads(
        ok("--library", home, "conflicts", "resolve", ref, "--value", new_title, "--field", "year=local", "--json")
    )
    assert done["resolved"] == ["title", "year"]
    assert done["reference"]["title"] == "Synaptic plasticity and memory" and done["reference"]["year"] == "2001"
    assert conflicts_of(devices.home) == []


def test_an_attachment_conflict_shows_both_files_to_open_and_keeps_the_one_chosen(
    devices: Devices, tmp_path: Path
) -> None:
    home, work = str(devices.home), str(devices.work)
    ref = ref_id(devices.home, "The organization of behavior")
    home_pdf, work_pdf = tmp_path / "home" / "hebb1949.pdf", tmp_path / "work" / "hebb1949.pdf"
    home_pdf.write_bytes(b"%PDF-1.4\n% annotated at home\n" + b"h" * 3000)
    work_pdf.write_bytes(b"%PDF-1.4\n% annotated at work\n" + b"w" * 5000)
    daemon = Daemon(devices.work, "--no-auto")
    try:
        ok("--library", home, "sync", "--address", daemon.address)
        ok("--library", home, "attach", ref, str(home_pdf))
        ok("--library", work, "attach", ref, str(work_pdf))
        ok("--library", home, "sync", "--address", daemon.address)
        [listed] = conflicts_of(devices.home)
        assert listed["fields"] == ["attachment:hebb1949.pdf"]
        with web_app(devices.home) as app:
            session = log_in(app, app.login)
            text = request(f"{app.base}/conflicts/{ref}", headers=session).text
            assert f"Open {HOME}'s hebb1949.pdf" in text and f"Open {WORK}'s hebb1949.pdf" in text
            links = [part.split('"', 1)[0].replace("&amp;", "&") for part in text.split('class="open" href="')[1:]]
            assert len(links) == 2
            files = [request(app.base + link, headers=session) for link in links]
            assert {f.status for f in files} == {200}
            assert all(f.headers["Content-Type"] == "application/pdf" for f in files)
            assert all(f.headers["Content-Disposition"].startswith("inline") for f in files)
            assert {f.text.encode() for f in files} == {home_pdf.read_bytes(), work_pdf.read_bytes()}
            with Library.open(devices.work) as library:
                work_id = library.device_id
            csrf = csrf_of(app, session)
            form = {**session, "Content-Type": "application/x-www-form-urlencoded"}
            body = urlencode({"csrf": csrf, "keep:attachment:hebb1949.pdf": work_id})
            answer = request(f"{app.base}/conflicts/{ref}", "POST", form, body)
            assert answer.status == 303, answer.text
        assert conflicts_of(devices.home) == []
        out = tmp_path / "kept.pdf"
        ok("--library", home, "attachment", "export", ref, "hebb1949.pdf", "--out", str(out))
        assert out.read_bytes() == work_pdf.read_bytes()
    finally:
        daemon.stop()


def test_a_delete_that_crossed_an_edit_is_chosen_on_the_page_like_any_field(devices: Devices) -> None:
    ref = ref_id(devices.home, "Long-term potentiation")
    ok("--library", str(devices.home), "ref", "rm", ref)
    ok("--library", str(devices.home), "trash", "empty", "--yes")
    ok("--library", str(devices.work), "ref", "edit", ref, "--field", "notes=Read again for the review")
    with Library.open(devices.home) as home, Library.open(devices.work) as work:
        sync_libraries(home, work)
        work_id = work.device_id
    [listed] = conflicts_of(devices.home)
    assert listed["id"] == ref and listed["fields"] == ["deleted"]
    with web_app(devices.home) as app:
        session = log_in(app, app.login)
        text = request(f"{app.base}/conflicts/{ref}", headers=session).text
        assert "Deleted / changed" in text and "deleted the reference" in text and "changed it meanwhile" in text
        assert 'name="value:deleted"' not in text  # no typed value for a deletion: one side or the other
        csrf = csrf_of(app, session)
        form = {**session, "Content-Type": "application/x-www-form-urlencoded"}
        typed = request(
            f"{app.base}/conflicts/{ref}",
            "POST",
            form,
            urlencode({"csrf": csrf, "keep:deleted": "new", "value:deleted": "x"}),
        )
        assert typed.status == 400 and "takes no typed value" in typed.text
        kept = request(f"{app.base}/conflicts/{ref}", "POST", form, urlencode({"csrf": csrf, "keep:deleted": work_id}))
        assert kept.status == 303, kept.text
    assert conflicts_of(devices.home) == []
    assert reference(devices.home, ref)["notes"] == "Read again for the review"
