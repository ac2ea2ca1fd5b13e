"""What every command shares: finding the library, --json output, confirmations, progress bars."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import platformdirs

from p2psync.errors import ConfirmationRequired, LibraryNotFound, P2PSyncError

if TYPE_CHECKING:  # the store is imported by the commands that open a library, not by `--version`
    from p2psync.store.library import Library

F = TypeVar("F", bound=Callable[..., Any])
ENV_LIBRARY = "P2PSYNC_LIBRARY"


def default_library_path() -> Path:
    return platformdirs.user_data_path("p2psync", appauthor=False) / "library"


def _remember_library(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None:
        ctx.ensure_object(dict)["library"] = value
    return value


def library_option(func: F) -> F:
    """--library PATH, accepted on every command (and on `p2psync` itself)."""
    return click.option(
        "--library",
        type=click.Path(path_type=Path, file_okay=False),
        expose_value=False,
        is_eager=True,
        callback=_remember_library,
        help=f"The library folder (default: ${ENV_LIBRARY}, else {default_library_path()}).",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")(func)


def mdns_options(func: F) -> F:
    """--no-mdns and --mdns-interface, shared by the commands that use the LAN (sync, daemon, pair)."""
    func = click.option(
        "--mdns-interface",
        "mdns_interfaces",
        multiple=True,
        metavar="IPV4",
        help="Announce and look for peers only on the interface with this address (repeatable; default all).",
    )(func)
    return click.option("--no-mdns", is_flag=True, help="Do not announce or look for peers with mDNS.")(func)


def yes_option(func: F) -> F:
    return click.option("--yes", "-y", is_flag=True, help="Answer yes to the question instead of asking.")(func)


def library_path() -> Path:
    value = click.get_current_context().ensure_object(dict).get("library")
    if value is not None:
        return Path(value)
    env = os.environ.get(ENV_LIBRARY)
    return Path(env) if env else default_library_path()


@contextlib.contextmanager
def library_made_if_absent(path: Path, still_as_made: Callable[[Library, str], bool]) -> Iterator[bool]:
    """Make an empty library at `path` if there is none, to receive another (yields whether it
    did). If the command then fails while `still_as_made(library, id_it_was_made_with)` holds,
    everything this made is removed again: a failed `pair` or `account signup` leaves no empty
    library (nor folder) behind. A library that already took part (joined, linked) is kept."""
    from p2psync.store.library import Library

    path = path.absolute()
    try:
        Library.open(path).close()
        yield False
        return
    except LibraryNotFound:
        pass
    top: Path | None = None  # the outermost folder this command makes
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        top = folder
    before = set(os.listdir(path)) if path.is_dir() else set()
    with Library.create(path) as library:
        made_id = library.library_id
    try:
        yield True
    except BaseException:
        remove = False
        with contextlib.suppress(P2PSyncError), Library.open(path) as library:
            remove = still_as_made(library, made_id)
        if remove:
            _remove_made(path, top, before)
        raise


def _remove_made(path: Path, top: Path | None, before: set[str]) -> None:
    if top is not None:
        shutil.rmtree(top, ignore_errors=True)
        return
    for name in set(os.listdir(path)) - before:  # the folder was there (empty or not): only what was added
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


@contextlib.contextmanager
def open_library() -> Iterator[Library]:
    from p2psync.store.library import Library

    library = Library.open(library_path())
    try:
        yield library
    finally:
        library.close()


def warn_about_folder(path: Path) -> list[dict[str, str]]:
    """Say on stderr, in one sentence each, why the library's folder is at risk (inside a
    cloud-synced folder, on removable media: folder_warnings.py); returns the list for --json."""
    from p2psync.folder_warnings import folder_warnings

    warnings = folder_warnings(path)
    for warning in warnings:
        click.echo(warning.message, err=True)
    return [warning.as_dict() for warning in warnings]


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


def stream_json_list(items: Iterable[Any]) -> None:
    """Print a JSON array one element at a time, so 100,000 references never sit in memory."""
    out = sys.stdout
    out.write("[")
    first = True
    for item in items:
        out.write("\n  " if first else ",\n  ")
        out.write(json.dumps(item, ensure_ascii=False))
        first = False
    out.write("\n]\n" if not first else "]\n")
    out.flush()


def confirm(question: str, yes: bool) -> None:
    """Go on only with the user's yes: --yes, or an answer at the terminal. Else exit code 3."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfirmationRequired(f"{question} Run again with --yes to confirm (no terminal to ask on).")
    if not click.confirm(question, default=False, err=True):  # stderr: stdout may carry --json
        raise click.Abort()


@contextlib.contextmanager
def progress(total: int | None, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal (stderr); silent otherwise. Yields advance(n)."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


class TransferProgress:
    """Bytes, rate and files of an attachment fetch on a terminal (stderr); silent otherwise.
    Starts when the fetch knows how much it will move (plan), so nothing shows when nothing moves."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: Any = None
        self._task: Any = None
        self._files = 0

    def plan(self, total_bytes: int, files: int) -> None:
        if not sys.stderr.isatty() or not files:
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._files = files
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(f"{self.label} ({files} files)", total=total_bytes)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def truncate(text: str | None, width: int) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"
