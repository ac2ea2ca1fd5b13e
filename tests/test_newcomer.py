"""What a newcomer meets first (issue 23, point 12): example ids that are real ids, help summaries
that are not cut off, usage errors that are usage errors, and sizes in words a person reads.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from p2psync.model.ids import is_id, is_id_prefix
from tests.support import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = sorted((ROOT / "p2psync").rglob("*.py"))

# A command that takes a reference id, and the id it is given (a placeholder such as ID, ID...,
# {ref_id} or a shell variable is not an example).
_ID_COMMAND = re.compile(
    r"p2psync (?:ref (?:edit|show|rm)|conflicts (?:show|resolve)|trash restore|attach|attachment [a-z]+)"
    r" ([^\s`'\"]+)"
    r"|p2psync group (?:add|remove) (?:\"[^\"]*\"|\S+) ([^\s`'\"]+)"
)
_PLACEHOLDER = re.compile(r"[A-Z_.]+|\{\w+\}|\$\w+|--\S*|\[.*")
# A 16-character word of letters and digits, with a digit in it: what an id looks like.
_ID_LIKE = re.compile(r"(?<![A-Za-z0-9_/.-])(?=[a-z0-9]*[0-9])(?=[a-z0-9]*[a-z])[a-z0-9]{16}(?![A-Za-z0-9_])")
# An example of an id inside a message: ids look like '...'
_IN_MESSAGE = re.compile(r"ids? (?:look|looks) like '([^']+)'|ids? (?:are|is) [^']*like '([^']+)'")


def _examples() -> list[tuple[str, int, str]]:
    found: list[tuple[str, int, str]] = []
    for path in [*DOCS, *SOURCES]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = str(path.relative_to(ROOT))
            for match in _ID_COMMAND.finditer(line):
                value = match.group(1) or match.group(2)
                if not _PLACEHOLDER.fullmatch(value):
                    found.append((where, number, value))
            found.extend((where, number, m.group(0)) for m in _ID_LIKE.finditer(line))
            for match in _IN_MESSAGE.finditer(line):
                found.append((where, number, (match.group(1) or match.group(2)).rstrip(".")))
    return found


def test_every_example_id_in_the_readme_docs_and_messages_is_a_valid_id() -> None:
    examples = _examples()
    assert len(examples) > 30  # the scan finds the examples (README, docs/cli.md, quickstart, messages)
    hexlike = re.compile(r"[0-9a-f]{16}")  # hashes and hex digests are not ids
    bad = [
        (where, number, value)
        for where, number, value in examples
        if not (is_id_prefix(value) if len(value) < 16 else is_id(value) or hexlike.fullmatch(value))
    ]
    assert bad == [], "example ids that can never be ids (a-z and 2-7 only): " + repr(bad)


def test_the_readme_says_to_use_your_own_ids() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "use your own" in readme.lower()


def test_a_malformed_reference_id_gets_a_valid_example(tmp_path: Path) -> None:
    assert cli("--library", str(tmp_path / "lib"), "init").returncode == 0
    done = cli("--library", str(tmp_path / "lib"), "ref", "show", "k3x9")
    assert done.returncode != 0
    quoted = re.findall(r"'([a-z0-9]{4,16})(?:\.\.\.)?'", done.stderr)
    assert quoted and all(is_id_prefix(q) for q in quoted if q != "k3x9"), done.stderr
    assert "your own" in done.stderr


# --- help summaries --------------------------------------------------------------------------


def _groups(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Group]]:
    if not isinstance(command, click.Group):
        return []
    found = [(path, command)]
    for name, sub in command.commands.items():
        found.extend(_groups(sub, (*path, name)))
    return found


def test_no_help_summary_is_cut_off() -> None:
    from p2psync.cli import cli as main

    runner = CliRunner()
    groups = _groups(main)
    assert len(groups) > 5
    cut: list[str] = []
    for path, _group in groups:
        # An 80-column terminal gives click a help width of 78 (it keeps two columns free).
        result = runner.invoke(main, [*path, "--help"], terminal_width=78)
        assert result.exit_code == 0, (path, result.output)
        listing = result.output.split("Commands:", 1)[1] if "Commands:" in result.output else ""
        lines = [line.strip() for line in listing.splitlines() if line.rstrip().endswith("...")]
        cut.extend(f"p2psync {' '.join(path)}: {line}" for line in lines)
    assert cut == [], "summaries cut off with '...':\n" + "\n".join(cut)


# --- usage errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["5 parsecs", "-3m", "0s", "abc"])
def test_a_bad_interval_is_a_usage_error(tmp_path: Path, value: str) -> None:
    assert cli("--library", str(tmp_path / "lib"), "init").returncode == 0
    done = cli("--library", str(tmp_path / "lib"), "daemon", "--interval", value)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "interval" in done.stderr.lower()


@pytest.mark.parametrize("code", ["hello", "4-nosuchword-clockwork", "4-crossover", "x-crossover-clockwork"])
def test_a_malformed_pairing_code_is_a_usage_error(tmp_path: Path, code: str) -> None:
    assert cli("--library", str(tmp_path / "lib"), "init").returncode == 0
    done = cli("--library", str(tmp_path / "lib"), "pair", code)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "pairing code" in done.stderr.lower()


# --- sizes -----------------------------------------------------------------------------------


def test_sizes_have_one_formatter_with_units_a_person_reads() -> None:
    from p2psync.model.sizes import human_size
    from p2psync.web import reference_form

    assert [human_size(n) for n in (0, 300, 999, 1000, 52_000, 999_999, 1_234_567, 3 * 10**9)] == [
        "0 bytes", "300 bytes", "999 bytes", "1.0 KB", "52.0 KB", "1.0 MB", "1.2 MB", "3.0 GB",
    ]  # fmt: skip
    assert reference_form.human_size is human_size  # the web app's is the same function
    # No face prints megabytes of its own: every size goes through human_size.
    hand_made = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in SOURCES
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"1e6:?\.?1?f?\}? ?MB|/ 1e6", line) and "MB" in line
    ]
    assert hand_made == []


def test_a_small_attachment_synced_by_hand_says_bytes_not_0_0_mb(tmp_path: Path) -> None:
    import json
    import signal
    import subprocess

    from tests.support import P2PSYNC
    from tests.sync_support import founded, joined

    a = founded(tmp_path / "a")
    b = joined(a, tmp_path / "b", "B")
    ref = a.add_reference({"title": "Small file"})
    (tmp_path / "note.pdf").write_bytes(b"%PDF-1.4\n" + b"x" * 3000)
    a.attach(ref, tmp_path / "note.pdf")
    a.close()
    b.close()
    daemon = subprocess.Popen(
        [*P2PSYNC, "daemon", "--library", str(tmp_path / "a"), "--listen", "127.0.0.1:0", "--json", "--no-mdns"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert daemon.stdout is not None
        port = int(json.loads(daemon.stdout.readline())["listening"].rsplit(":", 1)[1])
        done = cli("--library", str(tmp_path / "b"), "sync", "--address", f"127.0.0.1:{port}", "--no-mdns",
                   "--wait", "0")  # fmt: skip
    finally:
        daemon.send_signal(signal.SIGTERM)  # the daemon this test started, by its handle
        daemon.communicate(timeout=20)
    assert done.returncode == 0, done.stderr
    assert "(3.0 KB fetched, 0 bytes already on this disk)" in done.stdout, done.stdout
