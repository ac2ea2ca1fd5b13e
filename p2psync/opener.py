"""Opening a file with the desktop's default application, for `attachment open` (and any other
face that wants it): xdg-open on Linux and the BSDs, `open` on macOS, the file's association on
Windows (os.startfile). $P2PSYNC_OPENER names another command (a test's recorder, or a viewer of
choice); it is split like a shell word list and given the file's path as its last argument.

The opener is started and left to run (a viewer stays open long after the command ends); only its
failure to start is an error.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from p2psync.errors import P2PSyncError

ENV_OPENER = "P2PSYNC_OPENER"


class OpenerMissing(P2PSyncError):
    """No program to open files with could be started."""


def opener_command() -> list[str] | None:
    """The command to open a file with (None: Windows' own association)."""
    given = os.environ.get(ENV_OPENER, "").strip()
    if given:
        return shlex.split(given)
    if sys.platform == "win32":
        return None
    return ["open"] if sys.platform == "darwin" else ["xdg-open"]


def open_file(path: Path) -> str:
    """Open `path` with the default application; returns the program's name for the message."""
    command = opener_command()
    if command is None:
        os.startfile(path)  # type: ignore[attr-defined]  # (Windows only)
        return "its default application"
    if shutil.which(command[0]) is None:
        raise OpenerMissing(
            f"Cannot open files here: {command[0]!r} was not found; install it (xdg-utils on Linux) "
            f"or name a program in ${ENV_OPENER}."
        )
    try:
        # Detached: the viewer outlives this command, and its chatter stays off our output.
        subprocess.Popen(
            [*command, str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        raise OpenerMissing(f"Could not start {command[0]!r} to open the file ({exc.strerror}).") from exc
    return command[0]
