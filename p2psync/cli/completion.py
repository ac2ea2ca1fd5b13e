"""completion: print the shell's completion script for p2psync (click's shell completion).

The script asks p2psync itself what completes, through click's protocol: the shell runs
`p2psync` with _P2PSYNC_COMPLETE=bash_complete (zsh_complete, fish_complete) and COMP_WORDS /
COMP_CWORD set, and p2psync prints the candidates (cli.main passes that variable's name, so
`python -m p2psync` answers too).
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from p2psync.cli.common import json_option, library_option, print_json

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_P2PSYNC_COMPLETE"


def completion_script(shell: str) -> str:
    from p2psync.cli import cli

    completer = get_completion_class(shell)
    assert completer is not None  # click knows every shell in SHELLS
    return completer(cli, {}, "p2psync", COMPLETE_VAR).source()


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@library_option
@json_option
def completion(shell: str, as_json: bool) -> None:
    """Print the shell completion script (bash, zsh or fish).

    \b
    bash:  eval "$(p2psync completion bash)"          (in ~/.bashrc)
    zsh:   eval "$(p2psync completion zsh)"           (in ~/.zshrc, after compinit)
    fish:  p2psync completion fish > ~/.config/fish/completions/p2psync.fish
    """
    script = completion_script(shell)
    if as_json:
        print_json({"shell": shell, "script": script})
        return
    click.echo(script, nl=not script.endswith("\n"))
