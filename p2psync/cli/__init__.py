"""The `p2psync` command line: one click group, one module per area.

Errors from p2psync become one sentence on stderr and the exit code the error carries
(1 failed, 3 needs a confirmation that could not be asked); click's usage errors exit 2.

The group loads its commands lazily: `COMMANDS` names the module and attribute of each top-level
command, and `cli.commands` imports a module the first time one of its commands is asked for. So
`p2psync ref list` imports the store and refs.py, never aiohttp, zeroconf, the pairing code or the
relay client, which `sync`, `pair` and `account` need (docs/performance.md: start-up).
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import click

from p2psync import __version__
from p2psync.cli.common import library_option
from p2psync.errors import P2PSyncError

# Each top-level command: the module under p2psync.cli that defines it, and its attribute there.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("library_cmds", "init"),
    "info": ("library_cmds", "info"),
    "device": ("library_cmds", "device"),
    "library": ("library_cmds", "library"),
    "ref": ("refs", "ref"),
    "trash": ("trash", "trash"),
    "group": ("groups", "group"),
    "attach": ("attachments", "attach"),
    "attachment": ("attachments", "attachment"),
    "conflicts": ("conflicts", "conflicts"),
    "import": ("formats_cmds", "import_"),
    "export": ("formats_cmds", "export"),
    "backup": ("safety", "backup"),
    "restore": ("safety", "restore"),
    "pair": ("pair", "pair"),
    "peers": ("peers", "peers"),
    "sync": ("sync_cmds", "sync"),
    "daemon": ("sync_cmds", "daemon"),
    "status": ("status_cmd", "status"),
    "relay": ("relay_cmds", "relay"),
    "account": ("account_cmds", "account"),
    "web": ("web_cmd", "web"),
    "completion": ("completion", "completion"),
}


class LazyCommands(MutableMapping[str, click.Command]):
    """`Group.commands` that imports a command's module on first use (listing names imports nothing).

    click's Group reads its commands only through this mapping (get_command, list_commands,
    add_command), so the stock Group works unchanged on top of it.
    """

    def __init__(self, table: dict[str, tuple[str, str]]) -> None:
        self._table = dict(table)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, attribute = self._table[name]  # KeyError: no such command
            self._loaded[name] = getattr(importlib.import_module(f"p2psync.cli.{module}"), attribute)
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self._table.pop(name, None)
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter({**self._table, **self._loaded})

    def __len__(self) -> int:
        return len({**self._table, **self._loaded})

    def __contains__(self, name: object) -> bool:
        return name in self._table or name in self._loaded


class _Cli(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # The reader went away (`p2psync ref list | head`): not a failure. Caught here, not in
            # main(), because click.main() turns it into exit code 1 before main() could see it.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the final flush at exit cannot fail again
            raise click.exceptions.Exit(0) from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="p2psync")
@library_option
def cli() -> None:
    """Keep one reference library identical on your machines, peer to peer.

    \b
    Start here:
      p2psync init --name "My library"
      p2psync ref add --title "On the Electrodynamics of Moving Bodies" \\
          --author "Einstein, Albert" --year 1905 --journal "Annalen der Physik"
      p2psync ref list
      p2psync attach ID paper.pdf

    Every command takes --library PATH (or $P2PSYNC_LIBRARY); commands that print data take --json.
    """


cli.commands = LazyCommands(COMMANDS)


def main() -> None:
    try:
        # complete_var: the completion script's variable, whatever name started us (`python -m p2psync` too)
        cli.main(standalone_mode=False, obj={}, complete_var="_P2PSYNC_COMPLETE")
    except P2PSyncError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted; nothing was changed.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted; whatever was saved before is intact.", err=True)
        sys.exit(130)
    except OSError as exc:
        # A file problem the store did not translate (e.g. a folder that cannot be created):
        # still one sentence and exit 1, never a traceback.
        where = f" ({exc.filename})" if exc.filename else ""
        reason = exc.strerror or str(exc)
        click.echo(f"Error: {reason}{where}; check the path and its permissions.", err=True)
        sys.exit(1)
    except sqlite3.Error as exc:
        # The database refused something we did not foresee: say so plainly; the transaction
        # was rolled back, so the library is as it was.
        click.echo(
            f"Error: the library database failed ({exc}); nothing was changed. "
            "If this repeats, run 'p2psync backup' and report it.",
            err=True,
        )
        sys.exit(1)
    sys.exit(0)
