"""Smart groups, group sets and the library's name in the web app (p2psync/web/group_pages.py):
a real `p2psync web` over a library made with the CLI; each form does what the CLI does (the CLI
reads the result back), bad input gets one sentence and changes nothing, and a rename made on
another device and synced shows in the page header."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.support import cli
from tests.test_web_library import csl, ids_of, make_library, one_sentence, post
from tests.web_support import log_in, request, web_app


def groups_of(path: Path) -> list[Any]:
    return json.loads(cli("--library", str(path), "group", "list", "--json").stdout)


def sets_of(path: Path) -> list[Any]:
    return json.loads(cli("--library", str(path), "group", "set", "list", "--json").stdout)


def test_smart_groups_and_sets_from_the_web(tmp_path: Path) -> None:
    records = [csl(i) for i in range(4)] + [csl(9, title="Cortical maps of the mouse")]
    path = make_library(tmp_path / "lib", records)
    with web_app(path) as app:
        session = log_in(app, app.login)
        made = post(app, session, "/groups/smart", [("name", "Mouse"), ("query", "cortic  mouse")])
        assert made.status == 303, made.text
        group = made.headers["Location"].split("group=")[1]
        page = request(app.base + made.headers["Location"], headers=session).text
        assert "Created the smart group &#39;Mouse&#39;: 1 reference(s) match its search." in page
        assert len(ids_of(page)) == 1
        assert 'value="cortic mouse"' in page  # the search, editable on the group's list
        # A smart group is not offered as a target of "Add to group".
        assert not re.search(rf'<option value="{group}"[^>]*>Mouse</option>', page.split('id="target-group"')[1])

        assert post(app, session, f"/groups/{group}/query", [("query", "synaptic")]).status == 303
        assert len(ids_of(request(app.base + f"/?group={group}", headers=session).text)) == 4
        [smart] = groups_of(path)
        assert (smart["name"], smart["query"], smart["references"]) == ("Mouse", "synaptic", 4)

        assert post(app, session, "/sets", [("name", "Thesis")]).status == 303
        [thesis] = sets_of(path)
        plain = post(app, session, "/groups", [("name", "To read")]).headers["Location"].split("group=")[1]
        for group_id in (group, plain):
            assert post(app, session, f"/groups/{group_id}/set", [("set", thesis["id"])]).status == 303
        assert [g["name"] for g in sets_of(path)[0]["groups"]] == ["Mouse", "To read"]
        sidebar = request(app.base + "/", headers=session).text.split('id="library-sidebar"')[1].split("</nav>")[0]
        assert re.search(r'<h3 class="group-set" id="set-\w+"><a href="/sets/\w+">Thesis</a></h3>', sidebar)
        assert sidebar.index("Thesis") < sidebar.index("Mouse") < sidebar.index("To read")
        assert 'title="Smart group: synaptic">smart</span>' in sidebar

        set_page = request(app.base + f"/sets/{thesis['id']}", headers=session)
        assert set_page.status == 200 and "Group set: Thesis" in set_page.text
        assert post(app, session, f"/sets/{thesis['id']}/rename", [("name", "PhD")]).status == 303
        assert sets_of(path)[0]["name"] == "PhD"
        assert post(app, session, f"/groups/{plain}/set", [("set", "")]).status == 303
        assert [g["name"] for g in sets_of(path)[0]["groups"]] == ["Mouse"]
        confirm = request(app.base + f"/sets/{thesis['id']}/delete", headers=session)
        assert "its groups stay, in no set" in confirm.text
        assert post(app, session, f"/sets/{thesis['id']}/delete", []).status == 303
        assert sets_of(path) == []
        assert [(g["name"], g["set"]) for g in groups_of(path)] == [("Mouse", None), ("To read", None)]
        assert post(app, session, f"/groups/{group}/delete", []).status == 303
        assert [g["name"] for g in groups_of(path)] == ["To read"]


def test_bad_input_gets_one_sentence_and_changes_nothing(tmp_path: Path) -> None:
    path = make_library(tmp_path / "lib", [csl(i) for i in range(2)])
    assert cli("--library", str(path), "group", "create", "Plain").returncode == 0
    with web_app(path) as app:
        session = log_in(app, app.login)
        plain = groups_of(path)[0]["id"]
        before = (groups_of(path), sets_of(path), cli("--library", str(path), "info", "--json").stdout)
        for where, fields, says in (
            ("/groups/smart", [("name", "Huge"), ("query", "w " * 5000)], "at most 500 characters"),
            ("/groups/smart", [("name", "Quotes"), ("query", '"" ""')], "needs some words"),
            ("/groups/smart", [("name", ""), ("query", "words")], "cannot be empty"),
            ("/groups/smart", [("name", "Plain"), ("query", "words")], "already exists"),
            (f"/groups/{plain}/query", [("query", "words")], "plain group"),
            (f"/groups/{plain}/set", [("set", "nosuchsetatall2")], "No group set"),
            ("/sets", [("name", " ")], "cannot be empty"),
            ("/sets/nosuchsetatall2/rename", [("name", "X")], "No group set"),
            ("/library/rename", [("name", "")], "cannot be empty"),
            ("/library/rename", [("name", "x" * 201)], "at most 200 characters"),
        ):
            answer = post(app, session, where, fields)
            assert answer.status in (400, 404), (where, answer.status)
            assert says in one_sentence(answer), (where, one_sentence(answer))
        assert (groups_of(path), sets_of(path), cli("--library", str(path), "info", "--json").stdout) == before


def test_the_library_name_renamed_here_or_on_another_device(tmp_path: Path) -> None:
    with Library.create(tmp_path / "a", "Home") as a:
        b = Library.create(tmp_path / "b", "Work", found=False, library_id=a.library_id)
        a.add_device(b.identity().public_bytes, "B")
        sync_libraries(a, b)
    with web_app(tmp_path / "a") as app:
        session = log_in(app, app.login)
        assert "p2psync · Home" in request(app.base + "/", headers=session).text
        assert post(app, session, "/library/rename", [("name", "Lab  library")]).status == 303
        page = request(app.base + "/", headers=session).text
        assert "p2psync · Lab library" in page and "Renamed the library to &#39;Lab library&#39;" in page
        with Library.open(tmp_path / "a") as a:
            sync_libraries(a, b)
            assert b.name == "Lab library"
            b.rename("Renamed on B")
            sync_libraries(a, b)
        assert "p2psync · Renamed on B" in request(app.base + "/devices", headers=session).text
    b.close()
