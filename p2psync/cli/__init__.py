"""The `p2psync` command line: one click group, one module per area.

Errors from p2psync become one sentence on stderr and the exit code the error carries
(1 failed, 3 needs a confirmation that could not be asked); click's usage errors exit 2.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from typing import Any

import click

from p2psync import __version__
from p2psync.cli import (
    attachments,
    conflicts,
    formats_cmds,
    groups,
    library_cmds,
    pair,
    peers,
    refs,
    safety,
    sync_cmds,
    trash,
)
from p2psync.cli.account_cmds import account
from p2psync.cli.common import library_option
from p2psync.cli.relay_cmds import relay
from p2psync.errors import P2PSyncError


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


for module in (library_cmds, refs, trash, groups, attachments, conflicts, formats_cmds, safety, pair, peers, sync_cmds):
    module.register(cli)
cli.add_command(relay)
cli.add_command(account)


def main() -> None:
    try:
        cli.main(standalone_mode=False, obj={})
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
