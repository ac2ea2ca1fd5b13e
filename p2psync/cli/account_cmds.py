"""account: the library's link to an online account on a relay (protocol/relay.md section 4).

Passwords come from a hidden prompt or, with --password-stdin, from the first line(s) of stdin;
never from the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from p2psync.cli.common import (
    json_option,
    library_made_if_absent,
    library_option,
    library_path,
    open_library,
    print_json,
    yes_option,
)
from p2psync.errors import ConfirmationRequired, InvalidValue, P2PSyncError, RelayError, RelayLinkedElsewhere
from p2psync.relay import account as relay_account
from p2psync.relay import account_recovery as recovery_keys
from p2psync.relay import account_words as words
from p2psync.relay import link, link_rules
from p2psync.relay.client import normalize_url
from p2psync.relay.crypto import check_email
from p2psync.store import backup as backups
from p2psync.store.before_merge import BeforeMerge, leave_out_question
from p2psync.store.library import Library

if TYPE_CHECKING:
    from p2psync.relay.report import RelaySyncReport


@click.group(short_help="The online account: sync through a relay.")
def account() -> None:
    """The online account: sync this library through a relay when devices never meet on a LAN.

    \b
    p2psync account signup --relay https://relay.example.org --email ada@example.org
    p2psync account login  --relay https://relay.example.org --email ada@example.org

    The relay stores only ciphertext: everything is encrypted on this device with a library key
    that is wrapped with a key derived from your password. One account holds one library.
    Type the e-mail with the suffix #!resetLocalSync to reset this library's sync state.
    """


def _read_password(password_stdin: bool, confirm: bool, prompt: str = "Password") -> str:
    if password_stdin:
        first = sys.stdin.readline().rstrip("\r\n")
        if confirm:
            second = sys.stdin.readline().rstrip("\r\n")
            if second != first:
                raise InvalidValue("The two passwords read from stdin differ; give the same one twice.")
        return first
    if not sys.stdin.isatty():
        raise click.UsageError("No terminal to ask for the password on; give it on stdin with --password-stdin.")
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True))


def _ask(yes: bool, before: BeforeMerge, skip_trash: bool | None) -> link.Ask:
    def ask(question: link.Question) -> bool:
        if yes:
            click.echo(f"{question.text} Yes (--yes).", err=True)
        elif not sys.stdin.isatty():
            raise question.error
        elif not click.confirm(f"{question.text} Proceed?", default=False, err=True):
            raise click.Abort()
        if question.kind == "merge":
            before.skip_trash = ask_skip_trash(question.trash, skip_trash, yes)
        return True

    return ask


def ask_skip_trash(trash: int, flag: bool | None, yes: bool) -> bool:
    """Whether this library's trash is left out of a merge (store/before_merge.py says what that means):
    --skip-trash/--merge-trash, else asked on a terminal when there is any, else no."""
    if flag is not None or not trash:
        return bool(flag) and trash > 0
    if yes or not sys.stdin.isatty():
        return False
    return click.confirm(leave_out_question(trash), default=False, err=True)


skip_trash_option = click.option(
    "--skip-trash/--merge-trash",
    default=None,
    help="Merge: leave this library's trashed references out (deleted here after the backup), "
    "or merge them too (default: asked when there are any; merged with --yes).",
)


def before_merge(choice: bool | None, folder: Path | None) -> BeforeMerge:
    """The backup before a sync changes this library (the rule is BackupChoice's), said on
    stderr when it is made, then the trash, if it is left out."""
    return BeforeMerge(
        backups.BackupChoice(
            choice, folder, lambda manifest: click.echo(backups.backed_up_sentence(manifest), err=True)
        )
    )


@contextlib.contextmanager
def _open_or_create() -> Iterator[tuple[Library, bool]]:
    """The library, or an empty one made to receive the account's library (and whether it was made
    now). If the command fails before the library is linked, what it made is removed again: a
    failed sign-up or login leaves no folder behind."""
    path = library_path()
    unlinked = lambda library, _made_id: not link.is_linked(library)  # noqa: E731
    with library_made_if_absent(path, unlinked) as made, Library.open(path) as library:
        yield library, made


def _login_options(func: Any) -> Any:
    for decorator in reversed(
        [
            click.option("--relay", "url", required=True, metavar="URL", help="The relay's address (https://...)."),
            click.option("--email", required=True, metavar="E", help="The account's e-mail address."),
            click.option("--password-stdin", is_flag=True, help="Read the password from stdin (first line)."),
            click.option(
                "--backup/--no-backup",
                default=None,
                help="Back up this library before the first sync, a re-link or a merge changes it (default: yes).",
            ),
            click.option(
                "--backup-dir",
                type=click.Path(path_type=Path, file_okay=False),
                help="Where that backup goes (default: the folder that holds the library).",
            ),
            skip_trash_option,
            yes_option,
            library_option,
            json_option,
        ]
    ):
        func = decorator(func)
    return func


def _run_login(
    signup: bool,
    url: str,
    email: str,
    password_stdin: bool,
    backup: bool | None,
    backup_dir: Path | None,
    skip_trash: bool | None,
    yes: bool,
    as_json: bool,
) -> None:
    if link.is_reset_request(email):
        with open_library() as library:
            message = asyncio.run(link_rules.reset(library))
        _print_reset(message, as_json)
        return
    normalize_url(url)  # plain http:// to another machine is refused before anything else
    check_email(email)  # typos are reported before the password is asked
    with _open_or_create() as (library, made):
        if not yes:
            _check_link_first(library, url, email)
        password = _read_password(password_stdin, confirm=signup and not password_stdin)
        if not signup and not password:
            raise InvalidValue(words.EMPTY_PASSWORD)
        # a new password's strength is judged in link_rules.login, before anything is sent
        before = before_merge(backup, backup_dir)
        report = asyncio.run(
            link_rules.login(library, url, email, password, signup, _ask(yes, before, skip_trash), before)
        )
        backlog = library.search_backlog()
        if backlog:
            library.refs.index_now()
        recovery = _first_recovery_key(library) if signup else None
    if made:
        click.echo(f"Created a library at {library.path} to receive the account's library.", err=True)
    failed = report.sync.error if report.sync is not None else None
    if as_json:
        print_json(
            {
                **report.as_dict(),
                "trash_left_out": before.left_out,
                **({"recovery_key": recovery.words} if recovery else {}),
            }
        )
        if failed:
            raise RelayError(failed)  # logged in, but the first sync stopped short (e.g. the storage limit)
        return
    click.echo(words.logged_in_sentence(report, signup))
    if before.left_out:
        click.echo(before.sentences()[-1])  # (the backup's sentence was said as it was made)
    if recovery is not None:
        _echo_recovery_key(recovery)
    if report.sync is not None:
        echo_sync(report.sync, show_error=False)
    if failed:
        raise RelayError(failed)


def _first_recovery_key(library: Library) -> recovery_keys.RecoveryKey | None:
    """A new account's recovery key; a relay that cannot make one now does not undo the sign-up."""
    try:
        return asyncio.run(recovery_keys.make_if_none(library))
    except P2PSyncError as exc:
        click.echo(f"No recovery key could be made now ({exc.message}); make one with 'p2psync account recovery-key'.",
                   err=True)  # fmt: skip
        return None


def _echo_recovery_key(key: recovery_keys.RecoveryKey) -> None:
    click.echo(recovery_keys.SHOWN_ONCE)
    click.echo(f"\n    {key.words}\n")


def _check_link_first(library: Library, url: str, email: str) -> None:
    """The one-account rule, asked before the password (a TTY) or refused at once (no TTY)."""
    state = link.read_link(library)
    elsewhere = state.linked and (state.url != normalize_url(url) or state.email != check_email(email))
    if elsewhere and not sys.stdin.isatty():
        raise RelayLinkedElsewhere(link.LINKED_ELSEWHERE)


def _print_reset(message: str, as_json: bool) -> None:
    if as_json:
        print_json({"reset": True, "message": message})
    else:
        click.echo(message)


def echo_sync(sync: RelaySyncReport, show_error: bool = True) -> None:
    """The text lines of a relay sync (the error on stderr unless the caller raises it)."""
    click.echo(f"Relay: {sync.sentence()}")
    if sync.merge is not None:
        merge = sync.merge
        click.echo(f"Merged: {merge.added} references added, {len(merge.merged)} plainly identical ones merged.")
    for item in sync.missing:
        click.echo(f"Still missing: {item.name} of {item.ref}: {item.detail}", err=True)
    if sync.error and show_error:
        click.echo(f"Relay: {sync.error}", err=True)


@account.command(short_help="Create an account and link this library.")
@_login_options
def signup(
    url: str,
    email: str,
    password_stdin: bool,
    backup: bool | None,
    backup_dir: Path | None,
    skip_trash: bool | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Create an account on a relay and link this library to it (then sync once).

    The password is asked twice (hidden), or read from stdin with --password-stdin. The first
    library that syncs binds the account: it holds that library alone.
    """
    _run_login(True, url, email, password_stdin, backup, backup_dir, skip_trash, yes, as_json)


@account.command(short_help="Log in to an account and link this library.")
@_login_options
def login(
    url: str,
    email: str,
    password_stdin: bool,
    backup: bool | None,
    backup_dir: Path | None,
    skip_trash: bool | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Log in to an account and link this library to it (then sync once).

    An empty library receives the account's library. A library with references of its own that
    is not the account's is merged with it, after a question (--yes to agree) and a backup
    (--no-backup to skip); --skip-trash leaves its trashed references out. A library linked to
    another account asks first, and breaking that link resets its sync state. The e-mail typed
    with the suffix #!resetLocalSync resets this library's sync state instead of logging in.
    """
    _run_login(False, url, email, password_stdin, backup, backup_dir, skip_trash, yes, as_json)


@account.command(short_help="The account: relay, storage, last sync.")
@library_option
@json_option
def status(as_json: bool) -> None:
    """The account this library is linked to: relay, e-mail, the library it holds, storage used
    against the limit, the last sync, what moved and the last error."""
    with open_library() as library:
        data = asyncio.run(relay_account.status(library))
    if as_json:
        print_json(data)
        return
    if not data["linked"]:
        click.echo(words.NOT_LINKED)
        return
    for label, text in words.status_lines(data):
        click.echo(f"{label + ':':<13}{text}")


@account.command(short_help="Log this device out of the account.")
@library_option
@json_option
def logout(as_json: bool) -> None:
    """Log this device out of the account (the library stays linked to it; log in again to sync)."""
    with open_library() as library:
        data = asyncio.run(relay_account.logout(library))
    if as_json:
        print_json(data)
        return
    click.echo(words.logged_out_sentence(data))
    if not data["relay_told"]:
        click.echo(words.RELAY_NOT_TOLD, err=True)


@account.command(short_help="Forget this library's link to its account.")
@library_option
@json_option
def reset(as_json: bool) -> None:
    """Forget this library's link to its account (the login, the library key, the sync cursor);
    keep every reference. The next login and sync are complete ones."""
    with open_library() as library:
        message = asyncio.run(link_rules.reset(library))
    _print_reset(message, as_json)


@account.command(short_help="Delete everything the account stores.")
@yes_option
@library_option
@json_option
def purge(yes: bool, as_json: bool) -> None:
    """Delete everything the account stores on the relay (change sets and attachments, all
    encrypted) and unbind it, so that another library can be bound. Your devices keep every
    reference. Asks first (--yes to agree)."""
    with open_library() as library:
        info = asyncio.run(relay_account.account_info(library))
        question = words.purge_question(info)
        if yes:
            click.echo(f"{question} Yes (--yes).", err=True)
        elif not sys.stdin.isatty():
            raise ConfirmationRequired(f"{question} Run again with --yes to confirm (no terminal to ask on).")
        elif not click.confirm(question, default=False, err=True):
            raise click.Abort()
        data = asyncio.run(relay_account.purge(library))
    if as_json:
        print_json(data)
        return
    click.echo(words.purged_sentence(data))


@account.command()
@click.option("--password-stdin", is_flag=True, help="Read the new password from stdin (two lines, the same).")
@library_option
@json_option
def password(password_stdin: bool, as_json: bool) -> None:
    """Change the account's password (asked twice). The library key is wrapped again with the new
    one; the other devices log in again with it."""
    with open_library() as library:
        new = _read_password(password_stdin, confirm=True, prompt="New password")
        data = asyncio.run(relay_account.change_password(library, new))  # refuses a weak one before anything is sent
    if as_json:
        print_json(data)
        return
    click.echo(f"The password of {data['email']} on {data['relay']} is changed; log in with it on your other devices.")


@account.command("recovery-key")
@library_option
@json_option
def recovery_key(as_json: bool) -> None:
    """Make a new recovery key (the old one stops working).

    While logged in: the account's library key is wrapped with new words, shown once. With them,
    'p2psync account recover' sets a new password if you forget yours.
    """
    with open_library() as library:
        key = asyncio.run(recovery_keys.make(library))
    if as_json:
        print_json(key.as_dict())
        return
    _echo_recovery_key(key)


@account.command()
@click.option("--email", required=True, metavar="E", help="The account's e-mail address.")
@click.option("--relay", "url", metavar="URL", help="The relay's address (default: the one this library is linked to).")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the recovery key, then the new password, from stdin.")
@library_option
@json_option
def recover(email: str, url: str | None, from_stdin: bool, as_json: bool) -> None:
    """Set a new password with the recovery key.

    The recovery key and the new password are asked (hidden), or read from stdin with --stdin (first
    line the key, second the password). A wrong key changes nothing. Every device then logs in
    again with the new password.
    """
    check_email(email)
    if url is None:
        with open_library() as library:
            url = link.read_link(library).url
        if not url:
            raise click.UsageError("This library is not linked to a relay; give its address with --relay URL.")
    normalize_url(url)
    if from_stdin:
        key = sys.stdin.readline().strip()
        new = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise click.UsageError(
            "No terminal to ask on; give the recovery key and the new password on stdin with --stdin."
        )
    else:
        key = str(click.prompt("Recovery key", hide_input=True, err=True))
        new = str(click.prompt("New password", hide_input=True, confirmation_prompt=True, err=True))
    try:
        key = recovery_keys.parse_words(key)
    except InvalidValue as exc:
        raise click.UsageError(exc.message) from None
    data = asyncio.run(recovery_keys.recover(url, email, key, new))
    if as_json:
        print_json(data)
        return
    click.echo(
        f"The password of {data['email']} on {data['relay']} is set anew; log in with it on every device "
        "('p2psync account login'). Your recovery key stays valid; make a new one once logged in if it may have been "
        "seen ('p2psync account recovery-key')."
    )
