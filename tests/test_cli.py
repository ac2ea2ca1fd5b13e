"""The `p2psync` command line, run as a real subprocess against real library folders.

Each test starts `python -m p2psync ...` with stdin at /dev/null (no terminal, so a question
cannot be asked) and checks what a user or a script sees: the exit code (0 ok, 1 failed, 2 usage,
3 needs confirmation), one JSON document on stdout with --json, and errors as exactly one line on
stderr starting with "Error: ". A process costs about 0.3 s, so each test groups several checks
on one library, and independent read-only or failing commands run side by side.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import pytest
from click.testing import CliRunner

from p2psync.cli import cli as cli_group
from p2psync.store.library import Library

A = TypeVar("A")
T = TypeVar("T")
Args = Sequence[str | Path]

# A well-formed full id that no reference has (ids are 80 random bits).
NO_SUCH_ID = "aaaaaaaaaaaaaaaa"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


@dataclass
class Result:
    code: int
    out: str
    err: str


class Cli:
    """Runs p2psync in a subprocess; the library comes from $P2PSYNC_LIBRARY unless given."""

    def __init__(self, home: Path, library: Path | None, pycache: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if k != "P2PSYNC_LIBRARY"}
        # Compiled modules cached outside the source tree: each process starts ~15% faster.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(pycache)
        # platformdirs' default library lives under XDG_DATA_HOME: keep it inside the test folder.
        self.env["XDG_DATA_HOME"] = str(home / "xdg-data")
        self.env["HOME"] = str(home)
        if library is not None:
            self.env["P2PSYNC_LIBRARY"] = str(library)

    def __call__(self, *args: str | Path, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "p2psync", *map(str, args)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=60,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str | Path, **kw: Any) -> str:
        r = self(*args, **kw)
        assert r.code == 0, f"{args}: exit {r.code}, stderr {r.err!r}"
        assert r.err == "", f"{args}: unexpected stderr {r.err!r}"
        return r.out

    def json(self, *args: str | Path, **kw: Any) -> Any:
        """Run with --json; stdout must be exactly one JSON document."""
        out = self.ok(*args, "--json", **kw)
        return json.loads(out)  # json.loads refuses trailing data: one document only

    def fail(self, code: int, *args: str | Path, **kw: Any) -> str:
        """Run a command that must fail with `code`; return the error sentence."""
        r = self(*args, **kw)
        assert r.code == code, f"{args}: exit {r.code} (wanted {code}), stderr {r.err!r}"
        assert r.out == "", f"{args}: a failed command printed to stdout: {r.out!r}"
        assert r.err.startswith("Error: "), f"{args}: stderr {r.err!r}"
        assert r.err.count("\n") == 1 and r.err.endswith("\n"), f"{args}: not one line: {r.err!r}"
        return r.err[len("Error: ") :].strip()

    def usage(self, *args: str | Path, **kw: Any) -> str:
        """A usage error: exit 2, nothing on stdout, click's message ending in an 'Error: ' line."""
        r = self(*args, **kw)
        assert r.code == 2, f"{args}: exit {r.code}, stderr {r.err!r}"
        assert r.out == ""
        assert r.err.strip().splitlines()[-1].startswith("Error: "), r.err
        return r.err

    def json_many(self, *arg_lists: Args) -> list[Any]:
        return _concurrently(lambda args: self.json(*args), arg_lists)

    def fail_many(self, code: int, *arg_lists: Args) -> list[str]:
        return _concurrently(lambda args: self.fail(code, *args), arg_lists)

    def usage_many(self, *arg_lists: Args) -> list[str]:
        return _concurrently(lambda args: self.usage(*args), arg_lists)


def _concurrently(func: Callable[[A], T], items: Sequence[A]) -> list[T]:
    """Independent read-only or failing commands run side by side: same checks, less waiting."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(func, items))


@pytest.fixture(scope="session")
def pycache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pycache")


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    return tmp_path / "lib"


@pytest.fixture
def p2p(tmp_path: Path, lib: Path, pycache: Path) -> Cli:
    """A CLI whose $P2PSYNC_LIBRARY points at a library that does not exist yet."""
    return Cli(tmp_path, lib, pycache)


@pytest.fixture
def ready(p2p: Cli, lib: Path) -> Cli:
    """A CLI with an initialised, empty library (made through the API: one process less)."""
    Library.create(lib, "Test library").close()
    return p2p


def add(p2p: Cli, *args: str) -> str:
    """`ref add` prints only the new id (so scripts can capture it)."""
    out = p2p.ok("ref", "add", *args)
    ref_id = out.strip()
    assert len(ref_id) == 16 and out == ref_id + "\n", out
    return ref_id


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in records]


def seed(library: Path, count: int, title: str = "Seeded paper") -> list[str]:
    """Many references at once through the library API (one process instead of `count`)."""
    with Library.open(library) as opened:
        return opened.add_references([{"title": f"{title} {i}"} for i in range(count)])


# --- init, info, device, where the library is ------------------------------------------------


def test_init_info_device(p2p: Cli, lib: Path) -> None:
    out = p2p.ok("init", "--name", "My library")
    assert "Created library 'My library'" in out and str(lib) in out
    assert (lib / "library.sqlite3").is_file()

    again, again_json = p2p.fail_many(1, ["init"], ["init", "--json", "--name", "Other"])
    assert "already exists" in again and str(lib) in again
    assert "already exists" in again_json

    info, device = p2p.json_many(["info"], ["device"])
    assert info["name"] == "My library"
    assert Path(info["path"]) == lib.resolve()
    assert info["references"] == info["trash"] == info["groups"] == info["attachments"] == 0
    assert info["attachment_bytes"] == 0 and info["conflicts"] == 0
    keys = {"library_id", "device_id", "device_short_id", "created", "changes", "schema_version"}
    assert keys <= set(info)
    assert device == {
        "device_id": info["device_id"],
        "short_id": info["device_short_id"],
        "library_id": info["library_id"],
    }

    text, device_text = _concurrently(lambda args: p2p.ok(*args), [["info"], ["device"]])
    for label in ("Library:", "Path:", "Device:", "References:", "Trash:", "Groups:", "Attachments:"):
        assert label in text
    assert info["library_id"] in text
    assert device_text.split() == [device["short_id"], device["device_id"]]


def test_library_option_before_or_after_the_command_and_env(tmp_path: Path, pycache: Path) -> None:
    p2p = Cli(tmp_path, None, pycache)
    one, two, env_lib = tmp_path / "one", tmp_path / "two", tmp_path / "Env folder"
    p2p.ok("--library", one, "init", "--name", "one")
    p2p.ok("init", "--name", "two", "--library", two)
    created = p2p.json("init", env={"P2PSYNC_LIBRARY": str(env_lib)})
    assert created["name"] == "Env folder"  # without --name: the folder's name
    assert created["references"] == 0 and Path(created["path"]) == env_lib.resolve()
    with_env = {"P2PSYNC_LIBRARY": str(env_lib)}
    cases: list[tuple[dict[str, str], Args]] = [
        ({}, ["--library", one, "info"]),
        ({}, ["info", "--library", two]),
        (with_env, ["info"]),
        # --library wins over the environment variable, wherever it is written.
        (with_env, ["info", "--library", one]),
        (with_env, ["--library", two, "info"]),
    ]
    results = _concurrently(lambda case: p2p.json(*case[1], env=case[0]), cases)
    assert [r["name"] for r in results] == ["one", "two", "Env folder", "one", "two"]
    # Neither: the platform's user data folder (here under $XDG_DATA_HOME).
    default = p2p.json("init")
    assert Path(default["path"]) == (tmp_path / "xdg-data" / "p2psync" / "library").resolve()


def test_library_not_initialised_and_unusable(p2p: Cli, lib: Path, tmp_path: Path) -> None:
    messages = p2p.fail_many(
        1,
        ["info"],
        ["ref", "add", "--title", "x"],
        ["group", "list", "--json"],
        ["trash", "empty", "--yes"],
        ["attachment", "list", "abc"],
    )
    for message in messages:
        assert "p2psync init" in message and str(lib) in message, message
    assert not (lib / "library.sqlite3").exists()

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # A folder that cannot be made: one sentence, not a traceback.
    assert "a-file" in p2p.fail(1, "init", "--library", blocker / "lib")
    p2p.usage("info", "--library", blocker)  # --library must be a folder


def test_usage_errors(p2p: Cli) -> None:
    p2p.usage_many(
        ["no-such-command"],
        ["ref", "show"],  # missing ID
        ["ref", "search"],  # missing TEXT
        ["ref", "list", "--limit", "-1"],
        ["ref", "add", "--title", "x", "--no-such-option"],
        ["attachment", "export", "abc", "paper.pdf"],  # --out is required
    )
    helps = _concurrently(lambda args: p2p.ok(*args), [["--help"], ["ref", "add", "-h"], ["--version"]])
    assert "Usage: " in helps[0] and "Commands:" in helps[0] and "--author" in helps[1]
    assert helps[2].startswith("p2psync, version ")


# --- references ----------------------------------------------------------------------------


def test_ref_add_and_show(ready: Cli) -> None:
    ref_id = add(
        ready,
        "--type", "book",
        "--title", "  Über   die Elektrodynamik  ",
        "--author", "Einstein, Albert",
        "--author", "Müller, Hans",
        "--author", "World Health Organization",
        "--editor", "Curie, Marie",
        "--year", "1905",
        "--journal", "Annalen der Physik",
        "--doi", "https://doi.org/10.1002/andp.19053221004",
        "--url", "https://example.org/paper",
        "--field", "volume=322",
        "--field", "keywords=relativity; electrodynamics",
        "--field", "translators=Jones, Tom; Smith, Ann",
        "--field", "abstract=First line.\nSecond line.",
    )  # fmt: skip
    # --json on add prints the whole new record.
    added = ready.json("ref", "add", "--title", "Second", "--year", "in press")
    assert added["title"] == "Second" and added["year"] == "in press"
    assert added["type"] == "journal_article"  # the default type

    record, info = ready.json_many(["ref", "show", ref_id], ["info"])
    assert info["references"] == 2
    assert record["id"] == ref_id
    assert record["type"] == "book"
    assert record["title"] == "Über die Elektrodynamik"  # whitespace folded
    assert record["authors"] == [
        {"family": "Einstein", "given": "Albert"},
        {"family": "Müller", "given": "Hans"},
        {"literal": "World Health Organization"},
    ]
    assert record["editors"] == [{"family": "Curie", "given": "Marie"}]
    assert record["translators"] == [
        {"family": "Jones", "given": "Tom"},
        {"family": "Smith", "given": "Ann"},
    ]
    assert record["year"] == "1905" and record["journal"] == "Annalen der Physik"
    assert record["doi"] == "10.1002/andp.19053221004"  # the resolver prefix is dropped
    assert record["url"] == "https://example.org/paper" and record["volume"] == "322"
    assert record["keywords"] == ["relativity", "electrodynamics"]
    assert record["abstract"] == "First line.\nSecond line."
    assert record["trashed"] is False and record["groups"] == [] and record["attachments"] == []
    assert record["added"].endswith("Z") and record["modified"].endswith("Z")

    text = ready.ok("ref", "show", ref_id[:5])  # a unique prefix is enough
    assert "ID:" in text and ref_id in text
    assert "Reference Type:" in text and "Book" in text
    assert "Einstein, Albert; Müller, Hans; World Health Organization" in text
    assert "Keywords:" in text and "relativity; electrodynamics" in text


def test_ref_add_refuses_bad_input(ready: Cli) -> None:
    add_x = ["ref", "add", "--title", "x"]
    messages = ready.fail_many(
        1,
        [*add_x, "--field", "colour=blue"],
        [*add_x, "--year", "nineteen-oh-five"],
        [*add_x, "--field", "date=2021-13-01"],
        [*add_x, "--field", "accessed=yesterday"],
        [*add_x, "--doi", "not-a-doi"],
        [*add_x, "--type", "poem"],
        ["ref", "add", "--year", "2020", "--author", "Doe, Jane"],
        ["ref", "add", "--title", "   "],
        [*add_x, "--field", "volume"],
        [*add_x, "--author", ", Jane"],
        ["ref", "add", "--json"],  # --json does not turn errors into JSON
    )
    unknown, year, date, accessed, doi, ref_type, no_title, blank, form, person, as_json = messages
    assert "'colour'" in unknown and "Known fields:" in unknown
    assert "volume" in unknown and "custom8" in unknown
    assert "Year" in year and "Date" in date and "Access Date" in accessed
    assert "10." in doi and "journal_article" in ref_type
    assert "--title" in no_title and "--title" in blank and "--title" in as_json
    assert "KEY=VALUE" in form and "Last, First" in person
    assert ready.json("info")["references"] == 0  # nothing was added


def test_ref_edit(ready: Cli) -> None:
    ref_id = add(ready, "--title", "Draft", "--author", "Doe, Jane", "--field", "volume=3")

    out = ready.ok("ref", "edit", ref_id, "--title", "Final", "--field", "pages=1-10")
    assert out == f"Updated {ref_id}.\n"
    result = ready.json("ref", "edit", ref_id[:6], "--author", "Roe, Richard", "--author", "Doe, Jane")
    assert result["changed"] is True
    record = result["reference"]
    assert record["id"] == ref_id and record["title"] == "Final" and record["pages"] == "1-10"
    assert record["authors"] == [
        {"family": "Roe", "given": "Richard"},
        {"family": "Doe", "given": "Jane"},
    ]

    # An empty value clears a field.
    cleared = ready.json("ref", "edit", ref_id, "--field", "volume=", "--field", "authors=")
    assert cleared["changed"] is True
    assert "volume" not in cleared["reference"] and "authors" not in cleared["reference"]

    # The same values again: nothing changes and nothing is logged.
    changes = ready.json("info")["changes"]
    out = ready.ok("ref", "edit", ref_id, "--title", "Final")
    assert out == f"Nothing to change in {ref_id}.\n"
    same = ready.json("ref", "edit", ref_id, "--field", "volume=")
    assert same["changed"] is False and same["reference"]["title"] == "Final"

    nothing, unknown, year, no_type, missing = ready.fail_many(
        1,
        ["ref", "edit", ref_id],
        ["ref", "edit", ref_id, "--field", "colour=red"],
        ["ref", "edit", ref_id, "--year", "soon"],
        ["ref", "edit", ref_id, "--field", "type="],
        ["ref", "edit", NO_SUCH_ID, "--title", "x"],
    )
    assert "Say what to change" in nothing and "Known fields" in unknown
    assert "Year" in year and "type" in no_type and "No reference" in missing
    info, shown = ready.json_many(["info"], ["ref", "show", ref_id])
    assert info["changes"] == changes and shown["title"] == "Final"


def test_ids_unknown_malformed_and_ambiguous(ready: Cli, lib: Path) -> None:
    # 33 ids in a 32-letter alphabet: two must share their first letter.
    seeded = seed(lib, 33)
    firsts = [i[0] for i in seeded]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    ambiguous, unknown, malformed, digits = ready.fail_many(
        1,
        ["ref", "show", shared],
        ["ref", "show", NO_SUCH_ID],
        ["ref", "show", "hello!"],
        ["ref", "rm", "0189"],  # 0, 1, 8 and 9 are not in the id alphabet
    )
    assert "type more of the id" in ambiguous
    assert "No reference" in unknown and "ref list" in unknown
    assert "not a reference id" in malformed and "not a reference id" in digits
    # Any unique prefix, in either case, names the reference.
    assert ready.json("ref", "show", seeded[0][:12].upper())["id"] == seeded[0]


def test_ref_list(ready: Cli, lib: Path) -> None:
    assert ready.ok("ref", "list") == ""
    assert ready.json("ref", "list") == []
    first = add(ready, "--title", "Alpha", "--author", "Doe, Jane", "--author", "Roe, R", "--year", "2001")
    seeded = seed(lib, 5)
    every = [first, *seeded]

    listed, two, middle, tail, none = ready.json_many(
        ["ref", "list"],
        ["ref", "list", "--limit", "2"],
        ["ref", "list", "--limit", "2", "--offset", "3"],
        ["ref", "list", "--offset", "4"],
        ["ref", "list", "--limit", "0"],
    )
    assert ids(listed) == every  # oldest first
    assert listed[0]["title"] == "Alpha" and listed[0]["authors"][0]["family"] == "Doe"
    assert ids(two) == every[:2] and ids(middle) == every[3:5] and ids(tail) == every[4:]
    assert none == []

    lines = ready.ok("ref", "list").splitlines()
    assert len(lines) == 6 and lines[0].startswith(first)
    assert "2001" in lines[0] and "Doe et al." in lines[0] and "Alpha" in lines[0]

    ready.ok("ref", "rm", seeded[0], seeded[1])
    ready.ok("group", "create", "Reading")
    ready.ok("group", "add", "Reading", first, seeded[0], seeded[2])
    live, trashed, group, group_trash = ready.json_many(
        ["ref", "list"],
        ["ref", "list", "--trash"],
        ["ref", "list", "--group", "Reading"],
        ["ref", "list", "--group", "reading", "--trash"],
    )
    assert ids(live) == [first, *seeded[2:]] and ids(trashed) == seeded[:2]
    assert ids(group) == [first, seeded[2]] and ids(group_trash) == [seeded[0]]
    assert ready.ok("ref", "list", "--group", "Reading", "--offset", "1").split()[0] == seeded[2]


def test_ref_search(ready: Cli) -> None:
    muller = add(ready, "--title", "Neuronal plasticity in the cortex", "--author", "Müller, Jürgen")
    curie = add(
        ready, "--title", "Radioactive substances", "--author", "Curie, Marie",
        "--field", "keywords=radium; polonium", "--field", "notes=Read at the café",
    )  # fmt: skip
    other = add(ready, "--title", "Plastic waste in the ocean")

    found = ready.json_many(
        ["ref", "search", "neur", "plastic"],  # every word must match, as a word's start
        ["ref", "search", "Muller"],  # diacritics do not matter
        ["ref", "search", "müller"],
        ["ref", "search", "jurgen", "cortex"],
        ["ref", "search", "POLONIUM"],  # keywords
        ["ref", "search", "cafe"],  # notes
        ["ref", "search", "plastic", "--limit", "1"],
        # Words that look like FTS5 syntax are searched as words, never an error.
        ["ref", "search", 'NEAR("x"', "AND", "*", "-", "title:x"],
    )
    assert [ids(f) for f in found[:6]] == [[muller], [muller], [muller], [muller], [curie], [curie]]
    assert len(found[6]) == 1 and found[7] == []
    assert set(ids(ready.json("ref", "search", "plastic"))) == {muller, other}

    text = ready.ok("ref", "search", "radio")
    assert text.startswith(curie) and "Curie" in text and "Radioactive substances" in text
    assert ready.ok("ref", "search", "nothing-like-this") == ""
    assert "words" in ready.fail(1, "ref", "search", "  ")

    ready.ok("ref", "rm", muller)
    live, trashed = ready.json_many(["ref", "search", "plastic"], ["ref", "search", "plastic", "--trash"])
    assert ids(live) == [other] and ids(trashed) == [muller]


# --- trash ---------------------------------------------------------------------------------


def test_rm_and_trash(ready: Cli, lib: Path, tmp_path: Path) -> None:
    keep = add(ready, "--title", "Keep me")
    gone = add(ready, "--title", "Throw me away")
    pdf = tmp_path / "gone.pdf"
    pdf.write_bytes(b"%PDF-1.4 gone\n" * 1000)
    ready.ok("attach", gone, pdf)
    files = lib / "attachments" / gone
    assert (files / "gone.pdf").is_file()

    assert ready.json("ref", "rm", gone[:7]) == {"trashed": [gone]}
    assert ready.ok("ref", "rm", gone) == "Moved 0 reference(s) to the trash.\n"  # already there
    shown, trash_list = ready.json_many(["ref", "show", gone], ["trash", "list"])
    assert shown["trashed"] is True and ids(trash_list) == [gone]
    assert "In trash:" in ready.ok("ref", "show", gone)
    assert ready.ok("trash", "list").split()[0] == gone

    assert ready.json("trash", "restore", gone[:6]) == {"restored": [gone]}
    not_trashed, unknown = ready.fail_many(1, ["trash", "restore", gone], ["trash", "restore", NO_SUCH_ID])
    assert "not in the trash" in not_trashed and "No reference" in unknown
    assert ready.ok("ref", "rm", gone, keep) == "Moved 2 reference(s) to the trash.\n"
    assert ready.ok("trash", "restore", keep) == "Restored 1 reference(s).\n"

    # No terminal and no --yes: exit 3, and nothing is deleted.
    message, as_json = ready.fail_many(3, ["trash", "empty"], ["trash", "empty", "--json"])
    assert "--yes" in message and "1 reference" in message and "--yes" in as_json
    assert ids(ready.json("trash", "list")) == [gone] and (files / "gone.pdf").is_file()

    assert ready.ok("trash", "empty", "-y") == "Deleted 1 reference(s) for good.\n"
    assert not files.exists()  # the attachment's file went with it
    assert "No reference" in ready.fail(1, "ref", "show", gone)
    trash_list, live, info = ready.json_many(["trash", "list"], ["ref", "list"], ["info"])
    assert trash_list == [] and ids(live) == [keep]
    assert info["references"] == 1 and info["trash"] == 0 and info["attachments"] == 0

    # An empty trash needs no confirmation.
    assert ready.ok("trash", "empty") == "The trash is empty.\n"
    assert ready.json("trash", "empty") == {"deleted": 0}


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_trash_empty_asks_on_a_terminal(ready: Cli, lib: Path) -> None:
    """With a terminal, the question goes to stderr (stdout keeps its one JSON document)."""
    seeded = seed(lib, 2)
    ready.ok("ref", "rm", *seeded)

    def answer(reply: bytes) -> Result:
        master, slave = os.openpty()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "p2psync", "trash", "empty", "--json"],
                stdin=slave,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=ready.env,
            )
            os.close(slave)
            os.write(master, reply)
            out, err = proc.communicate(timeout=60)
        finally:
            os.close(master)
        return Result(proc.returncode, out.decode(), err.decode())

    no = answer(b"n\n")
    assert no.code == 1 and no.out == ""
    assert "Permanently delete 2 reference(s)" in no.err and "nothing was changed" in no.err
    assert len(ready.json("trash", "list")) == 2

    yes = answer(b"y\n")
    assert yes.code == 0 and json.loads(yes.out) == {"deleted": 2}
    assert "Permanently delete 2 reference(s)" in yes.err
    assert ready.json("trash", "list") == []


# --- groups --------------------------------------------------------------------------------


def test_groups(ready: Cli) -> None:
    a = add(ready, "--title", "A")
    b = add(ready, "--title", "B")

    created = ready.json("group", "create", "Reading")
    assert created["name"] == "Reading" and len(created["id"]) == 16
    assert ready.ok("group", "create", "Writing").startswith("Created group 'Writing' (")
    taken, reserved, empty = ready.fail_many(
        1,
        ["group", "create", "reading"],  # names ignore case
        ["group", "create", "sync conflicts"],
        ["group", "create", "  "],
    )
    assert "already exists" in taken and "Sync Conflicts" in reserved and "empty" in empty

    assert ready.json("group", "add", "Reading", a, b[:5]) == {"added": 2}
    prefix = created["id"][:6]  # a group can be named by a prefix of its id
    assert ready.ok("group", "add", prefix, a, a) == f"Added 0 reference(s) to '{prefix}'.\n"
    assert "No reference" in ready.fail(1, "group", "add", "Writing", a, NO_SUCH_ID)

    groups, writing, shown = ready.json_many(
        ["group", "list"], ["ref", "list", "--group", "Writing"], ["ref", "show", a]
    )
    assert [(g["name"], g["references"], g["conflict"]) for g in groups] == [
        ("Reading", 2, False),
        ("Writing", 0, False),
    ]
    assert writing == []  # all or nothing: `a` did not go in with the unknown id
    assert [g["name"] for g in shown["groups"]] == ["Reading"]
    assert ready.ok("group", "list").splitlines()[0].split() == [created["id"], "2", "Reading"]

    assert ready.json("group", "remove", "Reading", b) == {"removed": 1}
    assert ready.ok("group", "remove", "Reading", b) == "Removed 0 reference(s) from 'Reading'.\n"
    assert ids(ready.json("ref", "list", "--group", "Reading")) == [a]

    renamed = ready.json("group", "rename", "Reading", "To read")
    assert renamed == {"id": created["id"], "name": "To read"}
    assert ready.ok("group", "rename", "to read", "To Read") == "Renamed to 'To Read'.\n"
    taken, reserved, *unknown = ready.fail_many(
        1,
        ["group", "rename", "Writing", "to read"],
        ["group", "rename", "Writing", "Sync Conflicts"],
        ["group", "rename", "Nope", "New"],
        ["group", "delete", "Nope"],
        ["group", "remove", "Nope", a],
    )
    assert "already exists" in taken and "Sync Conflicts" in reserved
    assert all("No group named 'Nope'" in m and "group list" in m for m in unknown), unknown

    deleted = ready.json("group", "delete", "Writing")
    assert deleted == {"deleted": {"id": deleted["deleted"]["id"], "name": "Writing"}}
    assert "Deleted group 'To Read'" in ready.ok("group", "delete", "To Read")
    groups, live, shown = ready.json_many(["group", "list"], ["ref", "list"], ["ref", "show", a])
    assert groups == [] and ids(live) == [a, b] and shown["groups"] == []  # references stay


# --- attachments ---------------------------------------------------------------------------


def test_attachments(ready: Cli, lib: Path, tmp_path: Path) -> None:
    ref_id = add(ready, "--title", "With a PDF")
    pdf = tmp_path / "paper.pdf"
    content = os.urandom(300_000)
    pdf.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    stored = lib / "attachments" / ref_id / "paper.pdf"

    attached = ready.json("attach", ref_id[:5], pdf)
    assert attached == {
        "ref": ref_id, "name": "paper.pdf", "size": 300_000, "sha256": digest, "path": str(stored),
    }  # fmt: skip
    out = ready.ok("attach", ref_id, pdf, "--name", "copy.pdf")
    assert out == f"Attached copy.pdf (300000 bytes) to {ref_id}.\n"
    missing, unknown, bad_name, no_export, no_path = ready.fail_many(
        1,
        ["attach", ref_id, tmp_path / "missing.pdf"],
        ["attach", NO_SUCH_ID, pdf],
        ["attach", ref_id, pdf, "--name", "../escape.pdf"],
        ["attachment", "export", ref_id, "nope.pdf", "--out", tmp_path / "x"],
        ["attachment", "path", ref_id, "nope.pdf"],
    )
    assert "does not exist" in missing and "No reference" in unknown
    assert "not allowed" in bad_name
    assert "no attachment named 'nope.pdf'" in no_export and "no attachment named" in no_path
    ready.usage("attach", ref_id, tmp_path)  # a folder is not a file

    listed, shown, where_json = ready.json_many(
        ["attachment", "list", ref_id],
        ["ref", "show", ref_id],
        ["attachment", "path", ref_id, "paper.pdf"],
    )
    assert [(i["name"], i["size"], i["sha256"], i["present"], i["conflict"]) for i in listed] == [
        ("copy.pdf", 300_000, digest, True, False),
        ("paper.pdf", 300_000, digest, True, False),
    ]
    assert shown["attachments"] == listed
    assert where_json == {"path": str(stored)}
    assert ready.ok("attachment", "list", ref_id).splitlines() == [
        f"copy.pdf  300000 bytes  sha256:{digest[:12]}",
        f"paper.pdf  300000 bytes  sha256:{digest[:12]}",
    ]

    # export: byte-identical, to a file or into a folder.
    folder = tmp_path / "exports"
    folder.mkdir()
    result = ready.json("attachment", "export", ref_id, "paper.pdf", "--out", tmp_path / "out.pdf")
    assert result == {
        "name": "paper.pdf", "size": 300_000, "sha256": digest, "path": str(tmp_path / "out.pdf"),
    }  # fmt: skip
    assert (tmp_path / "out.pdf").read_bytes() == content
    out = ready.ok("attachment", "export", ref_id, "copy.pdf", "--out", folder)
    assert out == f"Wrote {folder / 'copy.pdf'} (300000 bytes).\n"
    assert (folder / "copy.pdf").read_bytes() == content

    # path, then the file is edited in place: list and show notice the new version.
    where = ready.ok("attachment", "path", ref_id, "paper.pdf").strip()
    assert Path(where) == stored
    with open(where, "ab") as annotate:
        annotate.write(b"%% an annotation\n")
    new_digest = hashlib.sha256(stored.read_bytes()).hexdigest()
    item = {i["name"]: i for i in ready.json("attachment", "list", ref_id)}["paper.pdf"]
    assert (item["size"], item["sha256"], item["present"]) == (300_017, new_digest, True)
    shown = ready.json("ref", "show", ref_id)
    item = {i["name"]: i for i in shown["attachments"]}["paper.pdf"]
    assert (item["size"], item["sha256"]) == (300_017, new_digest)
    # Edited again and looked at through `ref show` first: it notices too.
    with open(where, "ab") as annotate:
        annotate.write(b"%% another\n")
    assert "300028 bytes" in ready.ok("ref", "show", ref_id)
    assert ready.json("info")["attachment_bytes"] == 300_000 + 300_028

    assert ready.json("attachment", "rm", ref_id, "copy.pdf") == {"removed": "copy.pdf"}
    assert not (lib / "attachments" / ref_id / "copy.pdf").exists()
    assert ready.ok("attachment", "rm", ref_id[:8], "paper.pdf") == "Removed paper.pdf.\n"
    assert "no attachment named" in ready.fail(1, "attachment", "rm", ref_id, "paper.pdf")
    listed, info = ready.json_many(["attachment", "list", ref_id], ["info"])
    assert listed == [] and info["attachments"] == 0 and info["attachment_bytes"] == 0


# --- backup and restore ----------------------------------------------------------------------


def test_backup_and_restore(ready: Cli, lib: Path, tmp_path: Path) -> None:
    ref_id = add(ready, "--title", "Kept safe", "--author", "Curie, Marie")
    pdf = tmp_path / "safe.pdf"
    pdf.write_bytes(os.urandom(50_000))
    ready.ok("attach", ref_id, pdf)

    archive = tmp_path / "backup.zip"
    made = ready.json("backup", "--out", archive)
    assert made["path"] == str(archive) and archive.is_file()
    assert made["references"] == 1 and made["attachments"] == 1 and made["bytes"] == archive.stat().st_size
    folder = tmp_path / "backups"
    folder.mkdir()
    out = ready.ok("backup", "--out", folder)
    (dated,) = folder.iterdir()  # named by date inside the folder
    assert out.startswith("Backed up 1 references, 1 attachments to ") and str(dated) in out

    exists, missing, damaged = ready.fail_many(
        1,
        ["restore", archive],  # onto the library it came from
        ["restore", tmp_path / "nope.zip", "--library", tmp_path / "r1"],
        ["restore", pdf, "--library", tmp_path / "r2"],
    )
    assert "already exists" in exists and "--force" in exists
    assert "does not exist" in missing and "damaged" in damaged

    copy = tmp_path / "restored"
    restored = ready.json("restore", archive, "--library", copy)
    original = ready.json("info")
    assert restored["library_id"] == original["library_id"] and restored["references"] == 1
    assert restored["device_id"] != original["device_id"]  # the copy is a new device
    out = ready.ok("restore", archive, "--force")
    assert out.startswith("Restored 1 references and 1 attachments to ")
    shown = ready.json("ref", "show", ref_id, "--library", copy)
    assert shown["title"] == "Kept safe" and shown["attachments"][0]["present"] is True
    assert (copy / "attachments" / ref_id / "safe.pdf").read_bytes() == pdf.read_bytes()


# --- output plumbing -----------------------------------------------------------------------


def test_closed_stdout_is_not_a_failure(ready: Cli, lib: Path) -> None:
    """`p2psync ref list | head -1`: the reader leaving early is exit 0 and no noise."""
    seed(lib, 3000, "A title long enough to fill the pipe buffer quickly, number")

    def head_one(args: Args) -> tuple[int, bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2psync", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ready.env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read()
        return proc.wait(timeout=60), err

    for code, err in _concurrently(head_one, [["ref", "list"], ["ref", "list", "--json"]]):
        assert (code, err) == (0, b"")


def test_ref_fields() -> None:
    runner = CliRunner()
    result = runner.invoke(cli_group, ["ref", "fields", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    names = [f["name"] for f in data["fields"]]
    assert names[:2] == ["type", "title"] and "custom8" in names
    assert {"name", "kind", "label", "help"} == set(data["fields"][0])
    assert data["types"]["journal_article"] == "Journal Article"
    text = runner.invoke(cli_group, ["ref", "fields"]).output
    assert text.splitlines()[1].split()[:2] == ["title", "Title"]


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def test_every_command_takes_library_and_json_and_is_documented() -> None:
    """Every command takes --library and --json, and docs/cli.md has a section for it."""
    runner = CliRunner()
    docs = DOCS.read_text(encoding="utf-8")
    for path, command in _commands(cli_group):
        assert runner.invoke(cli_group, [*path, "--help"]).exit_code == 0, path
        options = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
        if path not in (("relay", "serve"), ("relay", "migrate")):  # a relay's accounts, not a library
            assert "--library" in options, path
        assert "--json" in options, path
        assert f"### `p2psync {' '.join(path)}" in docs, f"docs/cli.md has no section for {path}"
        for option in options - {"--library", "--json", "-h", "--help"}:
            assert option in docs, f"docs/cli.md does not mention {option} of {path}"


def test_ctrl_c_stops_a_sync_even_when_a_cancellation_is_absorbed() -> None:
    """Ctrl-C on `p2psync sync` cancels the round; a library deep in the network path may absorb
    one cancellation (a sync once went on waiting for a cut cable's read timeout). The round is
    cancelled again until it stops, and the command reports the interruption either way."""
    import asyncio
    import contextlib
    import os
    import signal
    import threading
    import time

    from p2psync.cli.sync_cmds import run_interruptibly

    async def absorbs_one_cancellation() -> str:
        with contextlib.suppress(asyncio.CancelledError):  # what a misbehaving library does
            await asyncio.sleep(30)
        await asyncio.sleep(30)
        return "finished"

    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_interruptibly(absorbs_one_cancellation())
    assert time.monotonic() - start < 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back for the next test
