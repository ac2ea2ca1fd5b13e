"""daemon install / daemon uninstall: start this library's daemon at login (systemd user unit on
Linux, launchd agent on macOS; on Windows, the Task Scheduler command to run).

The files themselves come from p2psync/service_files.py (pure); this module finds where they go,
writes them whole, and asks systemctl or launchctl to start or stop them when those are present.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from p2psync import service_files as sf
from p2psync.cli.common import json_option, library_option, library_path, open_library, print_json
from p2psync.errors import FileProblem, P2PSyncError
from p2psync.files import fsync_dir, write_atomic

SYSTEMS = ("systemd", "launchd", "windows")
TOOL_SECONDS = 60


def this_system() -> str | None:
    if sys.platform.startswith("linux"):
        return "systemd"
    if sys.platform == "darwin":
        return "launchd"
    if sys.platform == "win32":
        return "windows"
    return None


def running_program() -> tuple[str, ...]:
    """The absolute command that runs this p2psync: its script when started as `p2psync` (a pipx or
    venv install), else this interpreter with `-m p2psync`. Not resolved through symlinks, so a
    `pipx upgrade` that moves the target keeps working."""
    script = Path(sys.argv[0])
    if script.name in ("p2psync", "p2psync.exe") and script.is_file():
        return (os.path.abspath(script),)
    return (os.path.abspath(sys.executable), "-m", "p2psync")


def _config_home() -> Path:
    value = os.environ.get("XDG_CONFIG_HOME", "")
    return Path(value) if os.path.isabs(value) else Path.home() / ".config"


@dataclass(frozen=True)
class Plan:
    """What install writes (or would) for this library on one system."""

    system: str
    service: sf.DaemonService
    path: Path | None  # None on Windows: nothing to write
    content: bytes
    logs: str  # where the daemon's output goes, in words a user can act on

    @property
    def start_commands(self) -> list[list[str]]:
        if self.system == "systemd":
            unit = sf.systemd_unit_name(self.service.slug)
            return [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", unit],
                    ["systemctl", "--user", "restart", unit]]  # fmt: skip
        if self.system == "launchd":
            return [["launchctl", "bootstrap", f"gui/{os.getuid()}", str(self.path)]]
        return []

    @property
    def stop_commands(self) -> list[list[str]]:
        if self.system == "systemd":
            unit = sf.systemd_unit_name(self.service.slug)
            return [["systemctl", "--user", "disable", "--now", unit]]
        if self.system == "launchd":
            return [["launchctl", "bootout", f"gui/{os.getuid()}/{sf.launchd_label(self.service.slug)}"]]
        return []

    def is_ours(self, data: bytes) -> bool:
        if self.system == "systemd":
            return sf.is_ours_systemd(data.decode("utf-8", "replace"))
        return sf.is_ours_launchd(data)


def plan_for(library: Path, system: str) -> Plan:
    library = library.absolute()
    slug = sf.library_slug(library)
    home = Path.home()
    if system == "systemd":
        service = sf.DaemonService(running_program(), library, slug)
        try:
            text = sf.systemd_unit(service)
        except ValueError as exc:
            raise FileProblem(f"{exc}; 'p2psync daemon' still runs by hand.") from None
        return Plan(system, service, sf.systemd_unit_path(_config_home(), slug), text.encode(),
                    f"the journal: {sf.systemd_log_command(slug)}")  # fmt: skip
    if system == "launchd":
        log = sf.launchd_log_path(home, slug)
        service = sf.DaemonService(running_program(), library, slug, log)
        return Plan(system, service, sf.launchd_plist_path(home, slug), sf.launchd_plist(service), str(log))
    service = sf.DaemonService(running_program(), library, slug)
    create, _delete = sf.windows_commands(service)
    return Plan(system, service, None, create.encode(), "nowhere: Task Scheduler keeps no output")


def installed(library: Path) -> Plan | None:
    """This library's start-at-login file on this system, if p2psync wrote one (for `status`)."""
    system = this_system()
    if system not in ("systemd", "launchd"):
        return None
    try:
        plan = plan_for(library, system)
        assert plan.path is not None
        return plan if plan.is_ours(plan.path.read_bytes()) else None
    except (OSError, P2PSyncError):  # none there, or a library path no unit can hold: none installed
        return None


def _tool_present(plan: Plan) -> bool:
    return shutil.which("systemctl" if plan.system == "systemd" else "launchctl") is not None


def _run(command: list[str]) -> str | None:
    """Run a service manager's command; None when it worked, else what it said (one line)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    said = (done.stderr or done.stdout).strip().splitlines()
    return said[0] if said else f"exit code {done.returncode}"


def _shell_line(commands: list[list[str]]) -> str:
    import shlex

    return " && ".join(shlex.join(command) for command in commands)


def _refuse_if_not_ours(plan: Plan) -> bytes | None:
    """The file now at plan.path (None if there is none); refuses one we did not write."""
    assert plan.path is not None
    try:
        old = plan.path.read_bytes()
    except FileNotFoundError:
        return None
    if not plan.is_ours(old):
        raise FileProblem(f"{plan.path} was not written by p2psync, so it is left as it is; move it away first.")
    return old


def _system_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--for",
        "for_system",
        type=click.Choice(SYSTEMS),
        help="With --dry-run: show the file for this system instead of this machine's.",
    )(func)


@click.command()
@click.option("--dry-run", is_flag=True, help="Print the file and where it would go; write nothing.")
@click.option("--no-start", is_flag=True, help="Write the file only; do not enable or start it now.")
@_system_option
@library_option
@json_option
def install(dry_run: bool, no_start: bool, for_system: str | None, as_json: bool) -> None:
    """Start this library's daemon at every login, and now.

    Writes a systemd user unit on Linux or a launchd agent on macOS and starts it (with systemctl
    or launchctl, when present and unless --no-start); on Windows, prints the Task Scheduler command.

    \b
    Linux:   ~/.config/systemd/user/p2psync-NAME.service (log: journalctl --user -u ...)
    macOS:   ~/Library/LaunchAgents/org.p2psync.NAME.plist (log: ~/Library/Logs/p2psync/NAME.log)
    Running it again rewrites the file (e.g. after moving p2psync); `daemon uninstall` removes it.
    """
    if for_system and not dry_run:
        raise click.UsageError("--for only goes with --dry-run: a service is installed for this machine's system.")
    system = for_system or this_system()
    if system is None:
        raise P2PSyncError(f"p2psync knows no login service manager on {sys.platform}; run 'p2psync daemon' "
                           "from your session's start-up scripts instead.")  # fmt: skip
    with open_library():
        pass  # fail early, in words, if there is no library
    plan = plan_for(library_path(), system)
    if system == "windows":
        _windows(plan, as_json)
        return
    assert plan.path is not None
    if dry_run:
        if as_json:
            print_json({"system": system, "path": str(plan.path), "content": plan.content.decode(), "written": False})
        else:
            click.echo(f"Would write {plan.path}:\n", err=True)
            click.echo(plan.content.decode(), nl=False)
        return
    old = _refuse_if_not_ours(plan)
    if system == "launchd" and plan.service.log_file is not None:
        Path(plan.service.log_file).parent.mkdir(parents=True, exist_ok=True)  # launchd makes the file, not its folder
    write_atomic(plan.path, plan.content)
    started = False
    start = plan.start_commands
    if not no_start and _tool_present(plan):
        if system == "launchd" and old is not None:
            _run(plan.stop_commands[0])  # bootstrap refuses an agent that is loaded: unload the old one
        for command in start:
            failure = _run(command)
            if failure is not None:
                _put_back(plan, old)
                raise P2PSyncError(f"'{' '.join(command)}' failed ({failure}); nothing was installed. "
                                   "Use --no-start to write the file only, then start it yourself.")  # fmt: skip
        started = True
    if as_json:
        print_json({"system": system, "path": str(plan.path), "written": True, "started": started, "logs": plan.logs})
        return
    click.echo(f"Wrote {plan.path}.")
    if started:
        click.echo("Started it; it starts again at every login.")
    else:
        why = "as asked" if no_start else f"{start[0][0]} is not here"
        click.echo(f"Not started ({why}). To start it now and at every login: {_shell_line(start)}")
    click.echo(f"Its log: {plan.logs} ('p2psync status' says so too).")


def _put_back(plan: Plan, old: bytes | None) -> None:
    """After a failed start: the file as it was before install (or none), so nothing changed."""
    assert plan.path is not None
    if old is None:
        with contextlib.suppress(FileNotFoundError):
            plan.path.unlink()
        fsync_dir(plan.path.parent)
    else:
        write_atomic(plan.path, old)
    if plan.system == "systemd":
        _run(["systemctl", "--user", "daemon-reload"])


def _windows(plan: Plan, as_json: bool) -> None:
    create, delete = sf.windows_commands(plan.service)
    if as_json:
        print_json({"system": "windows", "path": None, "written": False, "create": create, "delete": delete})
        return
    click.echo("Windows has no file for this; in a Command Prompt, run once:")
    click.echo(f"  {create}")
    click.echo("To stop starting it at logon:")
    click.echo(f"  {delete}")


@click.command()
@library_option
@json_option
def uninstall(as_json: bool) -> None:
    """Stop the daemon and its start at login.

    Stops this library's daemon and removes the file `daemon install` wrote. A file of the same
    name that p2psync did not write is left alone."""
    system = this_system()
    if system is None:
        raise P2PSyncError(f"p2psync knows no login service manager on {sys.platform}; nothing to remove.")
    plan = plan_for(library_path(), system)
    if system == "windows":
        _create, delete = sf.windows_commands(plan.service)
        if as_json:
            print_json({"system": "windows", "path": None, "removed": False, "delete": delete})
        else:
            click.echo(f"In a Command Prompt, run: {delete}")
        return
    assert plan.path is not None
    if _refuse_if_not_ours(plan) is None:
        if as_json:
            print_json({"system": system, "path": str(plan.path), "removed": False})
        else:
            click.echo(f"Nothing to remove: no p2psync service for this library ({plan.path}).")
        return
    stop_failure = None
    if _tool_present(plan):
        for command in plan.stop_commands:
            stop_failure = _run(command) or stop_failure
    plan.path.unlink()
    fsync_dir(plan.path.parent)
    if system == "systemd" and _tool_present(plan):
        _run(["systemctl", "--user", "daemon-reload"])
    if as_json:
        print_json({"system": system, "path": str(plan.path), "removed": True, "stop_failed": stop_failure})
        return
    click.echo(f"Removed {plan.path}; the daemon no longer starts at login.")
    if stop_failure is not None or not _tool_present(plan):
        unit = sf.systemd_unit_name(plan.service.slug)
        stop = f"systemctl --user stop {unit}" if system == "systemd" else _shell_line(plan.stop_commands)
        click.echo(f"If a daemon it started still runs, stop it: {stop}")
