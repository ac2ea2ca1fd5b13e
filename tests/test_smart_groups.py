"""Smart groups (a saved search whose members are worked out when read) and group sets (named
folders of groups): the command line, sync between three real libraries through signed change
sets (store/sync.py), concurrent edits, hostile queries from a peer, older peers, and the
schema upgrade of an existing library."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from p2psync.engine import ops
from p2psync.errors import Conflict, InvalidValue
from p2psync.store import schema
from p2psync.store.library import Library
from p2psync.store.sync import sync_libraries
from tests.support import cli, snapshot
from tests.sync_support import founded, joined, sync_all


def _ref(library: Library, title: str, **more: Any) -> str:
    return library.add_reference({"type": "journal_article", "title": title, **more})


def _groups(library: Library) -> list[tuple[str, str, int, str | None, str | None]]:
    sets = {s.id: s.name for s in library.sets.rows()}
    return [
        (g.id, g.name, g.references, g.query, sets.get(g.set) if g.set else None)
        for g in library.groups.rows(system=False)
    ]


def _sets(library: Library) -> list[tuple[str, str, list[str]]]:
    return [(s.id, s.name, [g.name for g in s.groups]) for s in library.sets.rows()]


def _shown(library: Library) -> tuple[Any, ...]:
    """What a user sees of groups and sets (what must be the same on every device)."""
    return (_groups(library), _sets(library))


@pytest.fixture
def three(tmp_path: Path) -> list[Library]:
    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    c = joined(a, tmp_path / "c", "C")
    sync_all([a, b, c])
    yield [a, b, c]
    for library in (a, b, c):
        library.close()


# --- the command line ---------------------------------------------------------------------------


def test_smart_groups_and_sets_from_the_command_line(tmp_path: Path) -> None:
    lib = ["--library", str(tmp_path / "lib")]
    assert cli("init", *lib).returncode == 0

    def run(*args: str) -> Any:
        done = cli(*args, *lib, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    cat = run("ref", "add", "--type", "journal_article", "--title", "Neural coding in the cat cortex")["id"]
    run("ref", "add", "--type", "journal_article", "--title", "Dogs and their owners")
    project = run("group", "set", "create", "Thesis")
    smart = run("group", "smart", "create", "Neuro", "neur   cortex", "--set", "Thesis")
    assert (smart["name"], smart["query"], smart["smart"], smart["references"]) == ("Neuro", "neur cortex", True, 1)
    assert smart["set"] == project["id"]
    plain = run("group", "create", "To read")
    assert run("group", "set", "add", "Thesis", "To read")["groups"] == [plain]

    listed = run("group", "smart", "list")
    assert [(g["name"], [m["id"] for m in g["members"]]) for g in listed] == [("Neuro", [cat])]
    assert [r["id"] for r in run("ref", "list", "--group", "Neuro")] == [cat]
    sets = run("group", "set", "list")
    assert [(s["name"], [g["name"] for g in s["groups"]]) for s in sets] == [("Thesis", ["Neuro", "To read"])]

    # A smart group is not filled by hand; its search changes with 'smart edit'.
    refused = cli("group", "add", "Neuro", cat, *lib)
    assert refused.returncode == 1 and "smart group" in refused.stderr and refused.stderr.count("\n") == 1
    assert run("group", "smart", "edit", "Neuro", "dogs")["references"] == 1
    assert [r["title"] for r in run("ref", "list", "--group", "Neuro")] == ["Dogs and their owners"]
    text = cli("group", "list", *lib).stdout
    assert "Neuro  (smart: dogs)  [set: Thesis]" in text

    # Rename and delete work for smart groups as for plain ones; a set's delete keeps its groups.
    assert run("group", "rename", "Neuro", "Canines")["name"] == "Canines"
    assert run("group", "set", "rename", "Thesis", "PhD")["name"] == "PhD"
    assert run("group", "set", "remove", "To read")["groups"] == [plain]
    assert run("group", "set", "delete", "PhD")["deleted"]["name"] == "PhD"
    groups = run("group", "list")
    assert [(g["name"], g["set"], g["smart"]) for g in groups] == [("Canines", None, True), ("To read", None, False)]
    assert run("group", "delete", "Canines")["deleted"]["name"] == "Canines"
    assert [g["name"] for g in run("group", "list")] == ["To read"]
    assert run("group", "set", "list") == []


def test_bad_queries_and_names_are_refused_with_one_sentence_and_change_nothing(tmp_path: Path) -> None:
    lib = ["--library", str(tmp_path / "lib")]
    assert cli("init", *lib).returncode == 0
    before = cli("info", *lib, "--json").stdout
    for args in (
        ("group", "smart", "create", "Big", "word " * 200),
        ("group", "smart", "create", "Quotes", '"" """'),
        ("group", "smart", "create", "Blank", "   "),
        ("group", "smart", "create", "Control", "a\x01b"),
        ("group", "smart", "create", "", "words"),
        ("group", "set", "create", " "),
        ("group", "set", "add", "No such set", "x"),
    ):
        done = cli(*args, *lib)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr
    assert json.loads(cli("info", *lib, "--json").stdout)["changes"] == json.loads(before)["changes"]


def test_a_query_is_words_never_sql(tmp_path: Path) -> None:
    with Library.create(tmp_path / "lib", "L") as library:
        kept = _ref(library, "Robert'); DROP TABLE refs; -- tables")
        _ref(library, "Something else")
        for query in ("'); DROP TABLE refs; --", 'title:x OR "a" NEAR(b c)', "* ^ - + : (", "NOT AND OR"):
            group_id = library.groups.create_smart(f"G {len(query)} {query[:3]}", query)
            members = [r.id for r in library.refs.listing(group=group_id)]
            assert members in ([], [kept]), query
        assert [r.id for r in library.refs.listing(group=library.groups.find("G 23 ');").id)] == [kept]
        assert library.count_references() == 2  # the table is there, whole


def test_members_are_worked_out_when_read_never_stored(tmp_path: Path) -> None:
    with Library.create(tmp_path / "lib", "L") as library:
        group_id = library.groups.create_smart("Cortex", "cortex")
        assert library.refs.count(group="Cortex") == 0
        ref = _ref(library, "The visual cortex")
        assert library.refs.count(group="Cortex") == 1
        library.trash_reference(ref)
        assert library.refs.count(group="Cortex") == 0
        library.restore_reference(ref)
        library.edit_reference(ref, {"title": "The auditory system"})
        assert library.refs.count(group="Cortex") == 0
        assert library.db.execute("SELECT count(*) FROM memberships").fetchone()[0] == 0
        with pytest.raises(Conflict):
            library.add_to_group(group_id, [ref])
        with pytest.raises(Conflict):
            library.groups.set_query(library.groups.create("Plain"), "words")


# --- sync ----------------------------------------------------------------------------------------


def test_smart_groups_and_sets_reach_every_device(three: list[Library]) -> None:
    a, b, c = three
    ref = _ref(a, "Neural coding")
    a.sets.create("Thesis")
    a.groups.create_smart("Neuro", "neur", group_set="Thesis")
    b.groups.create("Plain")
    sync_all(three)
    for library in three:
        assert _groups(library)[0][1:] == ("Neuro", 1, "neur", "Thesis")
        assert [r.id for r in library.refs.listing(group="Neuro")] == [ref]
        assert _sets(library)[0][1:] == ("Thesis", ["Neuro"])
    c.groups.file_many(["Plain"], "Thesis")
    c.groups.set_query("Neuro", "coding")
    sync_all(three)
    assert _shown(a) == _shown(b) == _shown(c)
    assert _sets(a)[0][2] == ["Neuro", "Plain"] and _groups(a)[0][3] == "coding"
    assert snapshot(a)["groups"] == snapshot(b)["groups"] == snapshot(c)["groups"]
    assert snapshot(a)["group_sets"] == snapshot(c)["group_sets"]


def test_concurrent_renames_and_queries_converge_on_the_newest(three: list[Library]) -> None:
    a, b, c = three
    a.groups.create_smart("Neuro", "neur")
    a.sets.create("Thesis")
    sync_all(three)
    # Each write is stamped in a later millisecond than the one before it (the clock counts
    # milliseconds; two devices writing in the same one tie, and the tie goes by device id), so
    # the later writes are B's name and C's query and set name.
    for write in (
        lambda: a.groups.rename("Neuro", "Brain"),
        lambda: b.groups.rename("Neuro", "Mind"),
        lambda: a.groups.set_query("Brain", "cortex"),
        lambda: c.groups.set_query("Neuro", "synapse"),
        lambda: b.sets.rename("Thesis", "PhD"),
        lambda: c.sets.rename("Thesis", "Doctorate"),
    ):
        time.sleep(0.003)
        write()
    sync_libraries(c, b)
    sync_libraries(a, b)
    sync_all(three)
    assert _shown(a) == _shown(b) == _shown(c)
    group = _groups(a)[0]
    assert (group[1], group[3]) == ("Mind", "synapse")
    assert _sets(a)[0][1] == "Doctorate"


def test_a_smart_group_renamed_here_and_deleted_there_comes_back_smart(three: list[Library]) -> None:
    """The rule of plain groups: a rename concurrent with a delete survives it (merge.md)."""
    a, b, _ = three
    a.groups.create_smart("Neuro", "neur")
    a.groups.create("Plain")
    sync_all(three)
    a.groups.rename("Neuro", "Brain")
    b.delete_group("Neuro")
    a.groups.rename("Plain", "Plainer")
    b.delete_group("Plain")
    sync_all(three)
    for library in three:
        assert [(g[1], g[3]) for g in _groups(library)] == [("Brain", "neur"), ("Plainer", None)]
    assert _shown(a) == _shown(b) == _shown(three[2])


def test_a_set_deleted_while_another_device_files_a_group_in_it(three: list[Library]) -> None:
    a, b, c = three
    a.sets.create("Thesis")
    a.groups.create("Reading")
    a.groups.create_smart("Neuro", "neur")
    sync_all(three)
    a.sets.delete("Thesis")
    b.groups.file_many(["Reading"], "Thesis")
    c.groups.file_many(["Neuro"], "Thesis")
    sync_libraries(b, c)
    assert _sets(b)[0][2] == ["Neuro", "Reading"]  # before the delete arrives
    sync_all(three)
    for library in three:
        assert _sets(library) == []
        assert [(g[1], g[4]) for g in _groups(library)] == [("Neuro", None), ("Reading", None)]
    assert snapshot(a)["groups"] == snapshot(b)["groups"] == snapshot(c)["groups"]
    assert snapshot(a)["group_sets"] == snapshot(b)["group_sets"] == snapshot(c)["group_sets"]
    # Filed anew in a set of its own, a group leaves the deleted one.
    b.sets.create("New")
    b.groups.file_many(["Reading"], "New")
    sync_all(three)
    assert _sets(c)[0][1:] == ("New", ["Reading"])


def test_a_group_moved_while_deleted_elsewhere_stays_deleted(three: list[Library]) -> None:
    a, b, c = three
    a.sets.create("Thesis")
    a.groups.create("Reading")
    sync_all(three)
    a.delete_group("Reading")
    b.groups.file_many(["Reading"], "Thesis")
    sync_all(three)
    for library in three:
        assert _groups(library) == [] and _sets(library)[0][2] == []
        assert library.info()["groups"] == 0
    assert _shown(a) == _shown(c)


def test_joining_another_library_keeps_smart_groups_and_sets(tmp_path: Path) -> None:
    """Pairing a full library into another (store/rebase.py) writes its groups back as they were:
    a smart group with its search, every group in its set."""
    from p2psync.store import rebase

    with Library.create(tmp_path / "home", "Home") as home, Library.create(tmp_path / "work", "Work") as work:
        _ref(home, "Cortex at home")
        home.sets.create("Shared")
        ref = _ref(work, "Neural work")
        work.sets.create("Thesis")
        work.sets.create("shared")  # the same set as home's, by name
        work.groups.create_smart("Neuro", "neur", group_set="Thesis")
        plain = work.groups.create("Reading", group_set="shared")
        work.add_to_group(plain, [ref])
        rebase.rebase(work, home.library_id, home.name)
        home.add_device(work.identity().public_bytes, "work")
        sync_libraries(home, work)
        rebase.finish_merge(work)
        sync_libraries(home, work)
        for library in (home, work):
            assert [(g[1], g[2], g[3], g[4]) for g in _groups(library)] == [
                ("Neuro", 1, "neur", "Thesis"),
                ("Reading", 1, None, "Shared"),
            ]
            assert [s[1] for s in _sets(library)] == ["Shared", "Thesis"]


def test_over_the_loopback_network_between_two_nodes(tmp_path: Path) -> None:
    """The real peer path: TLS between two Nodes on 127.0.0.1, change sets in frames."""
    import asyncio

    from p2psync.node import Address, Node

    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    a.sets.create("Thesis")
    a.groups.create_smart("Neuro", "neur", group_set="Thesis")
    _ref(a, "Neural nets")
    b.sets.create("Reading")
    b.rename("Lab library")
    a.close()
    b.close()

    async def scenario() -> Any:
        server, client = Node(tmp_path / "a"), Node(tmp_path / "b")
        await server.serve("127.0.0.1", 0)
        try:
            return await client.sync([Address("127.0.0.1", server.port or 0)])
        finally:
            await client.close()
            await server.close()

    [result] = asyncio.run(scenario())
    assert not isinstance(result, Exception), result
    with Library.open(tmp_path / "a") as a, Library.open(tmp_path / "b") as b:
        assert _shown(a) == _shown(b) and a.name == b.name == "Lab library"
        assert [s[1] for s in _sets(a)] == ["Reading", "Thesis"]
        assert _groups(b)[0][1:] == ("Neuro", 1, "neur", "Thesis")


# --- hostile input from a peer --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"name": "Huge", "query": "w " * 1_000_000}, "at most 500 characters"),
        ({"name": "Long", "query": "q" * 501}, "at most 500 characters"),
        ({"name": "Blank", "query": '"" ""'}, "needs some words"),
        ({"name": "Nul", "query": "a\x00b"}, "control characters"),
        ({"name": "Spaced", "query": "a  b"}, "not in normal form"),
        ({"name": "Typed", "query": 7}, "must be text"),
        ({"name": "Setted", "set": "DROP TABLE"}, "not a valid object id"),
        ({"name": "Odd", "colour": "red"}, "'name', 'query' and 'set'"),
    ],
)
def test_a_peers_bad_smart_group_is_refused_whole(three: list[Library], fields: dict[str, Any], says: str) -> None:
    """B's device signs a change set holding a bad group.put after a good reference (as a
    modified or broken client could): A refuses the whole change set with one sentence."""
    a, b, _ = three
    before = snapshot(a)
    with b.writing() as writer:
        writer.log(ops.ref_put("refaaaaaaaaaaaaa", {"type": "book", "title": "Fine"}))
        op = {"op": ops.GROUP_PUT, "group": "grpggggggggggggg", "fields": fields, "seen": {}}
        writer.log(op, checked=True)  # (skips this device's own check, as a broken client would)
    report = sync_libraries(b, a).sent_to_b
    assert len(report.rejected) == 1
    problem = report.rejected[0]
    assert problem["reason"] == "schema", problem
    assert "." in problem["message"] and "\n" not in problem["message"]
    assert says in problem["message"], problem
    after = snapshot(a)
    assert after["groups"] == before["groups"] == []
    if len(json.dumps(fields)) < 100_000:  # one change set with the good entry: refused whole
        assert report.applied == 0 and after == before
    # (the huge one was sealed in a change set of its own: the reference before it arrived)


def test_a_newer_kind_of_operation_is_refused_with_what_to_do(three: list[Library]) -> None:
    a, b, _ = three
    with b.writing() as writer:  # logged as a newer version would log it (this one cannot apply it)
        writer.seq += 1
        writer.ts += 1
        b.db.execute(
            "INSERT INTO changelog (device, seq, ts, op) VALUES (?, ?, ?, ?)",
            [b.device_id, writer.seq, writer.ts, json.dumps({"op": "group.colour", "group": "g" * 16})],
        )
    problem = sync_libraries(b, a).sent_to_b.rejected[0]
    assert problem["reason"] == "schema"
    assert "newer version of p2psync" in problem["message"] and "update p2psync" in problem["message"]


def test_an_older_peer_refuses_the_new_operations_whole_then_takes_them_once_updated(
    three: list[Library], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a device of the previous version does: it knows none of the new kinds, and its
    group.put takes only a name. The change set waits at the sender (it is not acknowledged), so
    the first sync after the update brings it."""
    a, b, _ = three
    b.sets.create("Thesis")
    b.groups.create_smart("Neuro", "neur")
    old_kinds = tuple(k for k in ops.KINDS if k not in (ops.GROUPSET_PUT, ops.GROUPSET_DELETE, ops.LIBRARY_NAME))
    with monkeypatch.context() as old:
        old.setattr(ops, "KINDS", old_kinds)
        report = sync_libraries(b, a).sent_to_b
        assert report.applied == 0 and report.rejected[0]["reason"] == "schema"
        assert _groups(a) == [] and _sets(a) == []
    report = sync_libraries(b, a).sent_to_b  # updated
    assert report.applied == 1 and not report.rejected
    assert _shown(a) == _shown(b)


# --- the schema upgrade ------------------------------------------------------------------------------


def test_an_existing_library_opens_and_upgrades(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library written before smart groups (schema 13, with a plain group) opens, gains the new
    tables and columns, keeps its group, and takes smart groups and sets."""
    path = tmp_path / "old"
    with Library.create(path, "Old") as library:
        ref = _ref(library, "Neural coding")
        group_id = library.groups.create("Reading")
        library.add_to_group(group_id, [ref])
    # Take the library back to schema 13: what the version before this one wrote.
    db = sqlite3.connect(path / "library.sqlite3")
    db.executescript(
        """
        DROP INDEX groups_by_set;
        ALTER TABLE groups DROP COLUMN query;
        ALTER TABLE groups DROP COLUMN set_id;
        DROP TABLE group_sets;
        DROP TABLE library_name;
        PRAGMA user_version = 13;
        """
    )
    db.close()
    assert schema.SCHEMA_VERSION == 14
    with Library.open(path) as library:
        assert library.db.execute("PRAGMA user_version").fetchone()[0] == 14
        assert _groups(library) == [(group_id, "Reading", 1, None, None)]
        library.sets.create("Thesis")
        library.groups.create_smart("Neuro", "neur", group_set="Thesis")
        library.groups.file_many(["Reading"], "Thesis")
        assert _sets(library)[0][1:] == ("Thesis", ["Neuro", "Reading"])
        assert library.rename("New name") == "New name" and library.name == "New name"


def test_invalid_value_is_the_error_of_a_bad_query() -> None:
    from p2psync.model.groups import validate_smart_query

    assert validate_smart_query("  neur\t cortex ") == "neur cortex"
    for bad in ("", '""', "x" * 501, None, "a\x7fb"):
        with pytest.raises(InvalidValue):
            validate_smart_query(bad)
