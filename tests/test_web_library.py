"""The library list over plain HTTP (p2psync/web/library_pages.py): pages in every sort order
without overlap or gap, the views of the sidebar, the changes of groups and trash through the
same library functions as the CLI, and bad input refused in one sentence with nothing changed.
Real `p2psync web` processes over libraries made with the CLI; a real sync for the conflict."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.support import cli
from tests.sync_support import founded, joined
from tests.web_support import Answer, WebApp, csrf_of, log_in, request, web_app


def csl(i: int, **extra: Any) -> dict[str, Any]:
    """A CSL-JSON record: years, authors and journals repeat, so sorting has ties to break."""
    return {
        "type": "article-journal",
        "title": f"Paper {i:03d} on synaptic plasticity",
        "author": [{"family": f"Author{i % 7}", "given": "Ann"}, {"family": "Other", "given": "O."}],
        "issued": {"date-parts": [[1990 + i % 13]]},
        "container-title": f"Journal {'ABCDE'[i % 5]}",
        **extra,
    }


def make_library(path: Path, records: list[dict[str, Any]], *import_args: str) -> Path:
    assert cli("--library", str(path), "init", "--name", "List test").returncode == 0
    source = path.parent / f"{path.name}-refs.json"
    source.write_text(json.dumps(records))
    done = cli("--library", str(path), "import", str(source), *import_args)
    assert done.returncode == 0, done.stderr
    return path


def ids_of(page: str) -> list[str]:
    return re.findall(r'name="ref" value="([a-z0-9]+)"', page)


def next_link(page: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next"', page)
    return found.group(1).replace("&amp;", "&") if found else None


def listed(app: WebApp, session: dict[str, str]) -> list[dict[str, Any]]:
    """What the library holds, as the CLI sees it (to show a refused change changed nothing)."""
    done = cli("--library", str(app.library), "ref", "list", "--json")
    groups = cli("--library", str(app.library), "group", "list", "--json")
    trash = cli("--library", str(app.library), "trash", "list", "--json")
    return [json.loads(done.stdout), json.loads(groups.stdout), json.loads(trash.stdout)]


def post(app: WebApp, session: dict[str, str], path: str, fields: list[tuple[str, str]]) -> Answer:
    token = csrf_of(app, session)
    body = urlencode([("csrf", token), *fields])
    headers = {**session, "Content-Type": "application/x-www-form-urlencoded", "Origin": app.base}
    return request(app.base + path, "POST", headers=headers, body=body)


def one_sentence(answer: Answer) -> str:
    found = re.search(r'<p class="error" role="alert">(.*?)</p>', answer.text, re.S)
    assert found, answer.text[:500]
    return html.unescape(found.group(1).strip())


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_library(tmp_path_factory.mktemp("list") / "lib", [csl(i) for i in range(130)])


def test_every_sort_order_pages_through_the_whole_list_once_in_order(library: Path) -> None:
    with web_app(library) as app:
        session = log_in(app, app.login)
        everything = json.loads(cli("--library", str(library), "ref", "list", "--json").stdout)
        by_id = {r["id"]: r for r in everything}
        for sort in ("author", "year", "title", "journal", "added"):
            for order in ("asc", "desc"):
                url: str | None = f"/?sort={sort}&order={order}"
                seen: list[str] = []
                pages = 0
                while url is not None and pages < 10:
                    answer = request(app.base + url, headers=session)
                    assert answer.status == 200, answer.text[:300]
                    assert "Server-Timing" in answer.headers
                    found = ids_of(answer.text)
                    assert 0 < len(found) <= 50
                    seen += found
                    url = next_link(answer.text)
                    pages += 1
                assert sorted(seen) == sorted(by_id), (sort, order)  # each once: no overlap, no gap
                assert pages == 3

                def key(ref_id: str, sort: str = sort) -> Any:
                    r = by_id[ref_id]
                    return {
                        "author": (r["authors"][0]["family"].lower(), ref_id),
                        "year": (r.get("year", ""), ref_id),
                        "title": (r["title"].lower(), ref_id),
                        "journal": (r.get("journal", "").lower(), ref_id),
                        "added": (r["added"], ref_id),
                    }[sort]

                assert seen == sorted(seen, key=key, reverse=order == "desc"), (sort, order)


def test_the_column_headers_are_links_that_sort_and_say_so(library: Path) -> None:
    with web_app(library) as app:
        session = log_in(app, app.login)
        first = request(app.base + "/", headers=session).text
        assert re.search(r'<th scope="col" class="col-added" aria-sort="descending">', first)
        assert re.search(r'class="col-year" aria-sort="none">\s*<a href="/\?sort=year&amp;order=asc"', first)
        by_year = request(app.base + "/?sort=year&order=asc", headers=session).text
        assert 'class="col-year" aria-sort="ascending"' in by_year
        assert '<a href="/?sort=year&amp;order=desc"' in by_year  # clicking again turns it round


def test_previous_page_goes_back_to_the_same_rows(library: Path) -> None:
    with web_app(library) as app:
        session = log_in(app, app.login)
        first = request(app.base + "/?sort=title&order=asc", headers=session).text
        second = request(app.base + str(next_link(first)), headers=session).text
        back = re.search(r'<a href="([^"]+)" rel="prev"', second)
        assert back is not None
        again = request(app.base + back.group(1).replace("&amp;", "&"), headers=session).text
        assert ids_of(again) == ids_of(first)
        assert 'rel="prev"' not in again


def test_search_narrows_the_list_keeps_its_order_and_pages(library: Path) -> None:
    with web_app(library) as app:
        session = log_in(app, app.login)
        answer = request(
            app.base + "/?" + urlencode({"q": "paper 01", "sort": "year", "order": "asc"}), headers=session
        )
        assert answer.status == 200
        assert "found for “paper 01”" in answer.text
        found = ids_of(answer.text)
        # "01" matches 010-019 as a prefix, and 001 does not.
        assert len(found) == 10
        part = request(app.base + "/library/results?q=synaptic+plast", headers=session)
        assert part.status == 200 and "130 references found" in part.text and "<nav" in part.text
        assert "library-sidebar" not in part.text
        rows = request(app.base + "/library/rows?q=synaptic", headers={**session, "Accept": "application/json"})
        data = json.loads(rows.text)
        assert len(ids_of(data["rows"])) == 50 and data["next"].startswith("/library/rows?")


def test_bad_list_addresses_get_one_sentence(library: Path) -> None:
    with web_app(library) as app:
        session = log_in(app, app.login)
        cases = {
            "/?sort=price": "Cannot sort by 'price': sort by author, year, title, journal or added.",
            "/?page=-1": "The page number must be a whole number from 1.",
            "/?page=abc": "The page number must be a whole number from 1.",
            "/?size=100000": "A page holds 1 to 500 references.",
            "/?order=sideways": "The order is asc or desc.",
            "/?view=everything": "There is no such view: choose one in the sidebar.",
            "/?group=forgedgroupid00": "There is no such group (it may have been deleted, here or on another device).",
            "/?group=../../etc": "There is no such group (it may have been deleted, here or on another device).",
            "/?after=%27%3B%20DROP": "This page's place in the list is not a reference id; start from the first page.",
            "/?q=" + "x" * 600: "A search is at most 500 characters.",
        }
        for path, sentence in cases.items():
            answer = request(app.base + path, headers=session)
            assert answer.status in (400, 404), path
            assert one_sentence(answer) == sentence, path
        rows = request(app.base + "/library/rows?sort=price", headers={**session, "Accept": "application/json"})
        assert rows.status == 400 and json.loads(rows.text)["error"].startswith("Cannot sort by 'price'")


def test_groups_and_trash_through_forms_as_the_cli_does(tmp_path: Path) -> None:
    path = make_library(tmp_path / "lib", [csl(i) for i in range(6)])
    with web_app(path) as app:
        session = log_in(app, app.login)
        ids = ids_of(request(app.base + "/", headers=session).text)
        made = post(app, session, "/groups", [("name", "Reading list")])
        assert made.status == 303
        group = made.headers["Location"].split("group=")[1]
        added = post(
            app,
            session,
            "/library/selection",
            [("action", "add"), ("group", group), ("ref", ids[0]), ("ref", ids[1]), ("back", "/")],
        )
        assert added.status == 303 and added.headers["Location"] == "/"
        page = request(app.base + "/", headers=session).text
        assert "Added 2 references to &#39;Reading list&#39;." in page
        assert re.search(r'Reading list <span class="count">2</span>', page)
        in_group = request(app.base + f"/?group={group}", headers=session).text
        assert sorted(ids_of(in_group)) == sorted(ids[:2])
        groups = json.loads(cli("--library", str(path), "group", "list", "--json").stdout)
        assert [(g["name"], g["references"]) for g in groups] == [("Reading list", 2)]

        renamed = post(app, session, f"/groups/{group}/rename", [("name", "To read")])
        assert renamed.status == 303
        removed = post(app, session, "/library/selection", [("action", "remove"), ("group", group), ("ref", ids[0])])
        assert removed.status == 303
        groups = json.loads(cli("--library", str(path), "group", "list", "--json").stdout)
        assert [(g["name"], g["references"]) for g in groups] == [("To read", 1)]

        trashed = post(app, session, "/library/selection", [("action", "trash"), ("ref", ids[2]), ("ref", ids[3])])
        assert trashed.status == 303
        in_trash = json.loads(cli("--library", str(path), "trash", "list", "--json").stdout)
        assert sorted(r["id"] for r in in_trash) == sorted(ids[2:4])
        assert sorted(ids_of(request(app.base + "/?view=trash", headers=session).text)) == sorted(ids[2:4])
        assert post(app, session, "/library/selection", [("action", "restore"), ("ref", ids[2])]).status == 303
        assert [r["id"] for r in json.loads(cli("--library", str(path), "trash", "list", "--json").stdout)] == [ids[3]]

        confirm = request(app.base + "/trash/empty", headers=session)
        assert confirm.status == 200 and "Permanently delete 1 reference in the trash" in confirm.text
        assert post(app, session, "/trash/empty", []).status == 303
        assert json.loads(cli("--library", str(path), "trash", "list", "--json").stdout) == []

        confirm = request(app.base + f"/groups/{group}/delete", headers=session)
        assert "its references stay in the library" in confirm.text
        assert post(app, session, f"/groups/{group}/delete", []).status == 303
        assert json.loads(cli("--library", str(path), "group", "list", "--json").stdout) == []
        assert len(json.loads(cli("--library", str(path), "ref", "list", "--json").stdout)) == 5


def test_forged_changes_get_one_sentence_and_change_nothing(tmp_path: Path) -> None:
    path = make_library(tmp_path / "lib", [csl(i) for i in range(4)])
    assert cli("--library", str(path), "group", "create", "Kept").returncode == 0
    with web_app(path) as app:
        session = log_in(app, app.login)
        ids = ids_of(request(app.base + "/", headers=session).text)
        group = json.loads(cli("--library", str(path), "group", "list", "--json").stdout)[0]["id"]
        before = listed(app, session)
        cases: list[tuple[str, list[tuple[str, str]], str]] = [
            (
                "/library/selection",
                [("action", "add"), ("group", "forgedgroupid00"), ("ref", ids[0])],
                "There is no such group (it may have been deleted, here or on another device).",
            ),
            # one good id and one forged: the good one is not added either (one transaction)
            (
                "/library/selection",
                [("action", "add"), ("group", group), ("ref", ids[0]), ("ref", "zzzzzzzzzzzzzzzz")],
                "No reference with id zzzzzzzzzzzzzzzz; list them with 'p2psync ref list'.",
            ),
            (
                "/library/selection",
                [("action", "trash"), ("ref", ids[1]), ("ref", "../etc/passwd")],
                "'../etc/passwd' is not a reference id: ids are letters a-z and digits 2-7, like "
                "'74vmorehoj6dvnlf' or its start '74vm' (use your own, from 'p2psync ref list').",
            ),
            (
                "/library/selection",
                [("action", "restore"), ("ref", ids[1])],
                f"Reference {ids[1]} is not in the trash.",
            ),
            (
                "/library/selection",
                [("action", "explode"), ("ref", ids[1])],
                "Choose what to do with the selected references.",
            ),
            (
                "/library/selection",
                [("action", "trash")],
                "Select one or more references first (the boxes at the start of each row).",
            ),
            (
                "/library/selection",
                [("action", "add"), ("group", "sync-conflicts"), ("ref", ids[0])],
                "Sync Conflicts holds the conflicted references until they are resolved; choose another group.",
            ),
            ("/groups", [("name", "x" * 5000)], "A group name is at most 200 characters."),
            ("/groups", [("name", "Kept")], "A group named 'Kept' already exists."),
            (
                "/groups/forgedgroupid00/rename",
                [("name", "New")],
                "There is no such group (it may have been deleted, here or on another device).",
            ),
            (
                "/groups/forgedgroupid00/delete",
                [],
                "There is no such group (it may have been deleted, here or on another device).",
            ),
        ]
        for path_, fields, sentence in cases:
            answer = post(app, session, path_, fields)
            assert answer.status in (400, 404, 409), (path_, fields, answer.status)
            assert one_sentence(answer) == sentence, (path_, fields)
        # a "back" address to another site is not followed
        away = post(
            app, session, "/library/selection", [("action", "trash"), ("ref", ids[3]), ("back", "//evil.example/")]
        )
        assert away.status == 303 and away.headers["Location"] == "/"
        after = listed(app, session)
        assert after[1] == before[1]
        assert [r["id"] for r in after[2]] == [ids[3]]  # only the one good change
        assert len(after[0]) == len(before[0]) - 1


def test_sync_conflicts_and_duplicates_have_their_views_and_marks(tmp_path: Path) -> None:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    ref = a.add_reference({"title": "Shared paper", "year": "2001"})
    a.add_reference({"title": "Calm paper", "year": "2002"})
    sync_libraries(a, b)
    a.edit_reference(ref, {"title": "Shared paper (A's title)"})
    b.edit_reference(ref, {"title": "Shared paper (B's title)"})
    sync_libraries(a, b)
    a.close()
    b.close()
    source = tmp_path / "twice.json"
    source.write_text(json.dumps([csl(1, DOI="10.1/same"), csl(2, DOI="10.1/same")]))
    assert cli("--library", str(tmp_path / "a"), "import", str(source), "--allow-duplicates").returncode == 0
    with web_app(tmp_path / "a") as app:
        session = log_in(app, app.login)
        page = request(app.base + "/", headers=session).text
        assert re.search(r'Sync Conflicts <span class="count warn">1</span>', page)
        assert re.search(r'Duplicates to review <span class="count">2</span>', page)
        marks = re.findall(r'value="([a-z0-9]+)".*?\n\s*<td class="flag">(.*?)</td>', page)
        assert [ref_id for ref_id, mark in marks if "conflict-mark" in mark] == [ref]
        assert ids_of(request(app.base + "/?view=conflicts", headers=session).text) == [ref]
        twins = ids_of(request(app.base + "/?view=duplicates", headers=session).text)
        assert len(twins) == 2
        # Trashing one leaves nothing to review: the other has no twin in the library.
        assert post(app, session, "/library/selection", [("action", "trash"), ("ref", twins[0])]).status == 303
        assert ids_of(request(app.base + "/?view=duplicates", headers=session).text) == []


def test_the_store_finds_duplicates_by_the_importers_rule(tmp_path: Path) -> None:
    """Title + year + first author, normalised (accents, case, punctuation), or a DOI in any case."""
    from p2psync.store.library import listing

    with Library.create(tmp_path / "lib") as library:
        one = library.add_reference({"title": "Über Plastizität!", "year": "1999", "authors": [{"family": "Müller"}]})
        two = library.add_reference({"title": "uber plastizitat", "year": "1999a", "authors": [{"family": "MULLER"}]})
        library.add_reference({"title": "uber plastizitat", "year": "2000", "authors": [{"family": "Muller"}]})
        three = library.add_reference({"title": "A", "doi": "10.5/ABC"})
        four = library.add_reference({"title": "B", "doi": "10.5/abc "})
        view = listing.Listing(view=listing.View.DUPLICATES, sort="title", descending=False)
        assert {r.id for r in listing.page(library, view).rows} == {one, two, three, four}
        library.edit_reference(four, {"doi": "10.5/other"})
        assert {r.id for r in listing.page(library, view).rows} == {one, two}
        library.trash.put_many([one])
        assert listing.page(library, view).rows == ()


@pytest.mark.parametrize("few_rows", [0, 2_000])
def test_a_view_reads_the_same_pages_from_its_set_or_from_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, few_rows: int
) -> None:
    """Small sets (a group, search hits) are sorted from the set; large ones walk the sort
    order's index: both give the same pages, counts and places."""
    from p2psync.store.library import listing

    monkeypatch.setattr(listing, "FEW_ROWS", few_rows)
    with Library.create(tmp_path / "lib") as library:
        ids = library.add_references(
            [{"title": f"{['Alpha', 'Beta', 'Gamma'][i % 3]} study {i}", "year": str(2000 + i % 4)} for i in range(30)]
        )
        group = library.groups.create("Some")
        library.groups.add_refs(group, ids[::2])
        library.trash.put_many([ids[0], ids[1]])
        cases = [
            listing.Listing(listing.View.GROUP, group, sort="year", descending=False),
            listing.Listing(query="beta", sort="title", descending=True),
            listing.Listing(listing.View.GROUP, group, query="study", sort="added"),
            listing.Listing(listing.View.TRASH, query="study", sort="year"),
        ]
        expected = [14, 9, 14, 2]  # (ids[1], a "Beta", is in the trash)
        for case, total in zip(cases, expected, strict=True):
            seen: list[str] = []
            after = None
            for _ in range(10):
                found = listing.page(library, case, after=after, size=4)
                assert found.total == total
                seen += [r.id for r in found.rows]
                if found.next_after is None:
                    break
                after = found.next_after
            assert len(seen) == len(set(seen)) == total, case
            if total > 4:
                back = listing.page(library, case, before=seen[4], size=4)
                assert [r.id for r in back.rows] == seen[:4] and back.previous_before is None
