"""The files that start `p2psync daemon` at login: a systemd user unit (Linux), a launchd agent
(macOS), and the Task Scheduler command (Windows, which has no file to write).

Pure: typed values in, text out, no disk and no clock, so both platforms' files are generated and
checked on any machine (tests/test_daemon_install.py). cli/daemon_install.py writes and removes them.
"""

from __future__ import annotations

import hashlib
import plistlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePath

# The first line of every unit p2psync writes, and the key every agent carries: uninstall removes
# only a file that has it, never one the user wrote under the same name.
SYSTEMD_MARKER = "# Written by `p2psync daemon install`; `p2psync daemon uninstall` removes it."
LAUNCHD_MARKER_KEY = "OrgP2psyncWrittenBy"
LAUNCHD_MARKER_VALUE = "p2psync daemon install"


@dataclass(frozen=True)
class DaemonService:
    """One library's daemon, started at login.

    program: the absolute argv that runs p2psync (its script, or the interpreter and `-m p2psync`).
    slug: names the unit and agent (library_slug), so two libraries get two services.
    log_file: where launchd writes the daemon's output (systemd sends it to the journal).
    """

    program: tuple[str, ...]
    library: PurePath
    slug: str
    log_file: PurePath | None = None

    @property
    def argv(self) -> tuple[str, ...]:
        return (*self.program, "--library", str(self.library), "daemon")


def library_slug(library: PurePath) -> str:
    """`papers-1a2b3c4d`: the folder's name made safe for a unit name, and 8 hex digits of its full
    path, so two folders of the same name get two services."""
    name = re.sub(r"[^a-z0-9]+", "-", library.name.lower()).strip("-")[:32].strip("-") or "library"
    return f"{name}-{hashlib.sha256(str(library).encode()).hexdigest()[:8]}"


# systemd -------------------------------------------------------------------------------------


def systemd_unit_name(slug: str) -> str:
    return f"p2psync-{slug}.service"


def systemd_unit_path(config_home: Path, slug: str) -> Path:
    """config_home: $XDG_CONFIG_HOME, else ~/.config (where `systemctl --user` looks)."""
    return config_home / "systemd" / "user" / systemd_unit_name(slug)


def _systemd_quote(word: str, *, program: bool = False) -> str:
    """One word of ExecStart, double-quoted (systemd.service(5), "Command lines"): `%` doubled
    everywhere (specifiers); in an argument a backslash and a quote are escaped and `$` doubled
    (variables expand there), while the program's own path is taken as written (no variables) and
    may hold no quote, backslash or control character at all (systemd refuses such a path)."""
    if any(ord(c) < 32 or c == "\x7f" for c in word):
        raise ValueError(f"a path with a line break or control character cannot go into a systemd unit: {word!r}")
    if program:
        if any(c in word for c in "\"'\\"):
            raise ValueError(f"systemd cannot start a program whose path holds a quote or a backslash: {word}")
        return '"' + word.replace("%", "%%") + '"'
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def systemd_unit(service: DaemonService) -> str:
    """The user unit: started at login (default.target), restarted when it fails, stopped with
    SIGTERM (the daemon then syncs once more, so it gets a minute), its output in the journal."""
    words = [_systemd_quote(service.argv[0], program=True)] + [_systemd_quote(w) for w in service.argv[1:]]
    description = str(service.library).replace("%", "%%")
    return "\n".join(
        [
            SYSTEMD_MARKER,
            "[Unit]",
            f"Description=p2psync daemon for the library {description}",
            "",
            "[Service]",
            "Type=simple",
            "ExecStart=" + " ".join(words),
            "Environment=PYTHONUNBUFFERED=1",
            "Restart=on-failure",
            "RestartSec=10",
            "TimeoutStopSec=60",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )


def is_ours_systemd(text: str) -> bool:
    return text.splitlines()[:1] == [SYSTEMD_MARKER]


def systemd_log_command(slug: str) -> str:
    return f"journalctl --user -u {systemd_unit_name(slug)}"


# launchd -------------------------------------------------------------------------------------


def launchd_label(slug: str) -> str:
    return f"org.p2psync.{slug}"


def launchd_plist_path(home: Path, slug: str) -> Path:
    return home / "Library" / "LaunchAgents" / f"{launchd_label(slug)}.plist"


def launchd_log_path(home: Path, slug: str) -> Path:
    return home / "Library" / "Logs" / "p2psync" / f"{slug}.log"


def launchd_plist(service: DaemonService) -> bytes:
    """The agent: run at login (RunAtLoad), started again unless it stopped cleanly (KeepAlive),
    stdout and stderr to the log file. plistlib writes the XML, so any path is escaped right."""
    if service.log_file is None:
        raise ValueError("a launchd agent needs the log file's path")
    document = {
        "Label": launchd_label(service.slug),
        "ProgramArguments": list(service.argv),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Background",
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
        "StandardOutPath": str(service.log_file),
        "StandardErrorPath": str(service.log_file),
        LAUNCHD_MARKER_KEY: LAUNCHD_MARKER_VALUE,
    }
    return plistlib.dumps(document, fmt=plistlib.FMT_XML, sort_keys=True)


def is_ours_launchd(data: bytes) -> bool:
    try:
        document = plistlib.loads(data)
    except Exception:  # not a plist at all (plistlib raises several kinds): not ours
        return False
    return isinstance(document, dict) and document.get(LAUNCHD_MARKER_KEY) == LAUNCHD_MARKER_VALUE


# Windows -------------------------------------------------------------------------------------


def windows_task_name(slug: str) -> str:
    return f"p2psync {slug}"


def windows_commands(service: DaemonService) -> tuple[str, str]:
    """(create, delete): the schtasks lines that start the daemon at logon and remove it again.
    /TR takes one string, the command line; quotes inside it are written \\" (schtasks' rule)."""
    line = subprocess.list2cmdline(service.argv)
    task = windows_task_name(service.slug)
    tr = line.replace('"', '\\"')
    return (
        f'schtasks /Create /TN "{task}" /SC ONLOGON /RL LIMITED /F /TR "{tr}"',
        f'schtasks /Delete /TN "{task}" /F',
    )
