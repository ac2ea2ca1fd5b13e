"""`p2psync completion bash|zsh|fish` (issue 23, point 10): the script a shell sources, and the
completion it gives, asked through click's protocol by the script itself in a real bash."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import cli

ROOT = Path(__file__).resolve().parent.parent

BASH_SESSION = r"""
set -e
eval "$(p2psync completion bash)"
complete -p p2psync
ask() {  # ask WHO WORD...: complete the last word as bash would after Tab
    local who=$1; shift
    COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
    _p2psync_completion p2psync "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf "$who:%s\n" "${COMPREPLY[@]}"
}
ask top p2psync re
ask daemon p2psync daemon in
ask option p2psync ref list --js
ask shell p2psync completion ""
"""


@pytest.fixture()
def shell_env(tmp_path: Path) -> dict[str, str]:
    """PATH with a `p2psync` that runs this checkout, as an installed one would be found."""
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "p2psync"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m p2psync "$@"\n')
    script.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k not in ("P2PSYNC_LIBRARY", "_P2PSYNC_COMPLETE")}
    return {**base, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}


def test_bash_completes_commands_subcommands_options_and_shells(shell_env: dict[str, str]) -> None:
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", BASH_SESSION],
        capture_output=True, text=True, timeout=120, env=shell_env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "complete -o nosort -F _p2psync_completion p2psync"
    answers: dict[str, list[str]] = {}
    for line in lines[1:]:
        who, _, word = line.partition(":")
        answers.setdefault(who, []).append(word)
    assert {"ref", "relay", "restore"} <= set(answers["top"]) and "sync" not in answers["top"]
    assert answers["daemon"] == ["install"]
    assert answers["option"] == ["--json"]
    assert answers["shell"] == ["bash", "zsh", "fish"]


@pytest.mark.parametrize(
    ("shell", "registers"),
    [("zsh", "compdef _p2psync_completion p2psync"), ("fish", "complete --no-files --command p2psync")],
)
def test_zsh_and_fish_scripts_register_and_are_answered(shell: str, registers: str, shell_env: dict[str, str]) -> None:
    done = cli("completion", shell)
    assert done.returncode == 0 and registers in done.stdout, done.stdout
    assert json.loads(cli("completion", shell, "--json").stdout) == {"shell": shell, "script": done.stdout}
    # What the script asks (the same variables it sets), answered by p2psync. fish's COMP_CWORD is
    # the word being completed, zsh's its index.
    cword = "un" if shell == "fish" else "2"
    env = {
        **shell_env,
        "_P2PSYNC_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": "p2psync daemon un",
        "COMP_CWORD": cword,
    }
    answer = subprocess.run(["p2psync"], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert answer.returncode == 0, answer.stderr
    assert re.search(r"\buninstall\b", answer.stdout) and not re.search(r"\binstall\b", answer.stdout), answer.stdout


def test_an_unknown_shell_is_a_usage_error() -> None:
    done = cli("completion", "tcsh")
    assert done.returncode == 2 and "tcsh" in done.stderr and done.stdout == ""
