"""pair: make two devices members of one library with a one-time code."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import signal
import sys
from pathlib import Path

import click

from p2psync.cli.account_cmds import ask_skip_trash, before_merge, skip_trash_option
from p2psync.cli.common import (
    json_option,
    library_made_if_absent,
    library_option,
    library_path,
    mdns_options,
    open_library,
    print_json,
    progress,
    warn_about_folder,
    yes_option,
)
from p2psync.cli.sync_cmds import duration_option
from p2psync.crypto.pairing import parse_code
from p2psync.errors import ConfirmationRequired, InvalidValue, NetworkError
from p2psync.net import discovery
from p2psync.net.pair_join import DEFAULT_PAIR_PORT, JoinResult, Offered, find_offer, join, merge_question
from p2psync.net.pair_offer import OfferOutcome, OfferSession
from p2psync.net.worker import LibraryWorker
from p2psync.node import Node, announce_addresses, parse_address
from p2psync.store import rebase
from p2psync.store.before_merge import BeforeMerge


@click.command()
@click.argument("code", required=False)
@click.option(
    "--address", metavar="HOST[:PORT]", help=f"Join: where 'p2psync pair' waits (default port {DEFAULT_PAIR_PORT})."
)
@click.option(
    "--listen",
    default=f"0.0.0.0:{DEFAULT_PAIR_PORT}",
    show_default=True,
    metavar="HOST:PORT",
    help="Offer: where to wait for the other device (port 0: any free port).",
)
@click.option("--timeout", default="10m", show_default=True, help="Offer: how long the code stays valid.")
@click.option(
    "--backup/--no-backup",
    default=None,
    help="Back up this library before a merge changes it (default: yes when merging).",
)
@click.option(
    "--backup-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where that backup goes (default: the folder that holds the library).",
)
@skip_trash_option
@mdns_options
@yes_option
@library_option
@json_option
def pair(
    code: str | None,
    address: str | None,
    listen: str,
    timeout: str,
    backup: bool | None,
    backup_dir: Path | None,
    skip_trash: bool | None,
    no_mdns: bool,
    mdns_interfaces: tuple[str, ...],
    yes: bool,
    as_json: bool,
) -> None:
    """Pair this device with another so that both hold one library.

    \b
    On the first machine (it has the library):
      p2psync pair                 prints a code such as 4-crossover-clockwork, then waits
    On the second machine:
      p2psync pair 4-crossover-clockwork

    The first line printed by the offering side is the code, so scripts can read it. The second
    machine finds the offer on the LAN with mDNS, or goes to --address HOST[:PORT]. The code is
    good for one attempt: a wrong code fails on both sides and is used up; start again.

    If the joining library is empty (or absent) it becomes a copy of the other. If both hold
    references, you are asked first (--yes to agree), a backup is made (--no-backup to skip),
    the joining library's trashed references are left out if you say so (--skip-trash), and
    references that are plainly the same (same DOI, or same title, year and first author) are
    merged instead of doubled; those whose fields differ are kept and put in the group
    "Duplicates to review". Works with or without a daemon running on either machine.
    """
    interfaces = list(mdns_interfaces) or None
    if code is None:
        if address:
            raise InvalidValue("--address is for joining: give the code too (p2psync pair CODE --address HOST:PORT).")
        _offer(listen, duration_option(timeout, "--timeout"), backup, backup_dir, no_mdns, interfaces, as_json)
    else:
        try:
            parse_code(code)  # a typo is a usage error (exit 2), reported before anything else happens
        except InvalidValue as exc:
            raise click.BadParameter(exc.message, param_hint="'CODE'") from None
        _join(code, address, before_merge(backup, backup_dir), skip_trash, no_mdns, interfaces, yes, as_json)


# --- offering ---------------------------------------------------------------------------------


def _offer(
    listen: str,
    seconds: float,
    backup: bool | None,
    backup_dir: Path | None,
    no_mdns: bool,
    interfaces: list[str] | None,
    as_json: bool,
) -> None:
    where = parse_address(listen, DEFAULT_PAIR_PORT, allow_any_port=True)
    path = library_path()
    before = before_merge(backup, backup_dir)  # the offering side's trash stays: it is the library joined
    with open_library():
        pass  # the offering side must have the library: fail early, in words
    warnings = warn_about_folder(path)

    async def run() -> OfferOutcome:
        node = Node(path)
        announcer: discovery.Announcer | None = None
        loop = asyncio.get_running_loop()
        session = OfferSession(node.worker, seconds, before)
        code = session.code
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, session.end)
        try:
            shown = await session.open(
                lambda host, port, setup: node.serve(host, port, setup=setup), where.host, where.port
            )
            if as_json:
                click.echo(json.dumps({"code": code, "listening": shown}))
            else:
                click.echo(code)
            sys.stdout.flush()
            if not no_mdns:
                announcer = await _announce(where.host, session.port, interfaces, parse_code(code).nameplate)
            click.echo(
                f"On the other device run:  p2psync pair {code}\n"
                f"(without mDNS add --address {shown}). The code works once and expires in "
                f"{_minutes(seconds)}; waiting...",
                err=True,
            )
            return await session.outcome()
        finally:
            if announcer is not None:
                await announcer.stop()
            await node.close()

    outcome = asyncio.run(run())
    if as_json:
        print_json({**outcome.as_dict(), "warnings": warnings, "backup": before.made})
        return
    for line in outcome.sentences():
        click.echo(line)


async def _announce(host: str, port: int, interfaces: list[str] | None, nameplate: int) -> discovery.Announcer | None:
    """Announce the offer under a random id: the daemon may be announcing this device already,
    and a pairing offer need not say which device makes it."""
    random_id = base64.b32encode(secrets.token_bytes(20)).decode("ascii")
    addresses = announce_addresses(host, interfaces)  # the daemon's rule: never loopback to the LAN
    if not addresses:
        click.echo(f"Not announcing on the LAN (listening on {host} only); the other device needs --address.", err=True)
        return None
    announcer = discovery.Announcer(random_id, port, addresses, interfaces)
    await announcer.set_pairing(nameplate)
    try:
        await announcer.start()
    except NetworkError as exc:
        click.echo(f"Not announcing on the LAN ({exc.message}); the other device needs --address.", err=True)
        return None
    return announcer


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} seconds"


# --- joining ----------------------------------------------------------------------------------


def _join(
    code: str,
    address: str | None,
    before: BeforeMerge,
    skip_trash: bool | None,
    no_mdns: bool,
    interfaces: list[str] | None,
    yes: bool,
    as_json: bool,
) -> None:
    if address is None and no_mdns:
        raise InvalidValue("With --no-mdns, give the other device's address with --address HOST:PORT.")
    path = library_path()
    warnings = warn_about_folder(path)  # (before the wait: a library about to fill up is at risk too)
    # A new, empty library becomes a copy of the other one; if pairing fails before it joined,
    # it is removed again (once it took the other's id, it stays: the next sync finishes the join).
    with library_made_if_absent(path, lambda library, made_id: library.library_id == made_id) as made:
        if made:
            click.echo(f"Created an empty library at {path} to receive the other one.", err=True)
        result = _join_with(path, code, address, before, skip_trash, interfaces, yes)
    with open_library() as library, progress(library.search_backlog(), "Indexing for search") as advance:
        for done in library.catch_up_search():
            advance(done)
    _print_joined(result, before, as_json, warnings)


def _join_with(
    path: Path,
    code: str,
    address: str | None,
    before: BeforeMerge,
    skip_trash: bool | None,
    interfaces: list[str] | None,
    yes: bool,
) -> JoinResult:

    def ask_merge(ours: rebase.Content, theirs: Offered) -> bool:
        question = merge_question(ours, theirs)
        if yes:
            click.echo(question + " Yes (--yes).", err=True)
        elif not sys.stdin.isatty():
            raise ConfirmationRequired(f"{question} Run again with --yes to confirm (no terminal to ask on).")
        elif not click.confirm(question, default=False, err=True):
            return False
        before.skip_trash = ask_skip_trash(ours.trash, skip_trash, yes)
        return True

    async def run() -> JoinResult:
        if address is not None:
            target = parse_address(address, DEFAULT_PAIR_PORT)
            host, port = target.host, target.port
        else:
            click.echo("Looking for the offering device on the LAN...", err=True)
            host, port = await find_offer(parse_code(code).nameplate, interfaces)
        worker = LibraryWorker(path)
        try:
            return await join(worker, code, host, port, ask_merge, before, announce=_say)
        finally:
            await worker.close()

    return asyncio.run(run())


def _print_joined(result: JoinResult, before: BeforeMerge, as_json: bool, warnings: list[dict[str, str]]) -> None:
    if as_json:
        print_json({**result.as_dict(), "warnings": warnings, "backup": before.made, "trash_left_out": before.left_out})
        return
    for line in result.sentences():
        click.echo(line)
    if before.left_out:
        click.echo(before.sentences()[-1])  # (the backup's sentence was said as it was made)
    click.echo("Run 'p2psync daemon' on both devices to keep them in sync.")


def _say(text: str) -> None:
    click.echo(text, err=True)
