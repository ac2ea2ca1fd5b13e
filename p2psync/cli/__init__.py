"""The `p2psync` command line: one click group, one module per area.

Errors from p2psync become one sentence on stderr and the exit code the error carries
(1 failed, 3 needs a confirmation that could not be asked); click's usage errors exit 2.
"""

from __future__ import annotations

import sys

import click

from p2psync import __version__
from p2psync.cli import attachments, groups, library_cmds, refs, trash
from p2psync.cli.common import library_option
from p2psync.errors import P2PSyncError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


for module in (library_cmds, refs, trash, groups, attachments):
    module.register(cli)


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
    except BrokenPipeError:
        sys.stderr.close()  # e.g. `p2psync ref list | head`: not an error
        sys.exit(0)
    sys.exit(0)
