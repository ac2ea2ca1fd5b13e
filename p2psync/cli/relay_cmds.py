"""relay serve: run a relay (the online account) that stores and forwards only ciphertext."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import sys
from pathlib import Path

import click
import platformdirs

from p2psync.cli.common import json_option
from p2psync.errors import FileProblem, InvalidValue, NetworkError
from p2psync.model.sizes import human_size

DEFAULT_PORT = 8740
DEFAULT_QUOTA = "1GB"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def default_data_dir() -> Path:
    return platformdirs.user_data_path("p2psync-relay", appauthor=False)


def parse_size(text: str) -> int | None:
    """Bytes in '500MB', '2GiB', '1.5 GB', '1000000' (KB, MB... are powers of 1000, KiB, MiB...
    of 1024); 'unlimited' is None."""
    if text.strip().lower() in ("unlimited", "none"):
        return None
    match = _SIZE.match(text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not a size; write e.g. 500MB, 2GiB or unlimited.")
    unit = (match.group(2) or "").lower()
    scale = 1024 ** ("kmgt".index(unit[0]) + 1) if "i" in unit else _UNITS[unit[:1]]
    size = int(float(match.group(1)) * scale)
    if size < 1:
        raise click.BadParameter(f"{text!r} is no storage at all; give at least 1 byte, or unlimited.")
    return size


def _quota(_ctx: click.Context, _param: click.Parameter, value: str) -> int | None:
    return parse_size(value)


def _listen(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, int] | None:
    """HOST:PORT ([::1]:PORT for IPv6), port 0 for any free port."""
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT; write e.g. 127.0.0.1:9741.")
    return host, int(port)


@click.group(short_help="Run a relay: the online account's server.")
def relay() -> None:
    """Run a relay: the online account that carries a library between machines that are never on
    one network at the same time. It stores and forwards only ciphertext (see docs/relay-operations.md)."""


@relay.command(short_help="Serve the relay until Ctrl-C or SIGTERM.")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on (0.0.0.0: all).")
@click.option(
    "--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535), help="0: any free port."
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help=f"Where the relay keeps its database and blobs (default: {default_data_dir()}).",
)
@click.option(
    "--database",
    envvar="P2PSYNC_RELAY_DATABASE",
    metavar="URL",
    default=None,
    help="Keep everything in PostgreSQL instead of the --data folder: postgresql://USER@HOST:PORT/DB. Better "
    "given in the environment variable P2PSYNC_RELAY_DATABASE, with the password in PGPASSWORD or ~/.pgpass, "
    "so that no password sits on a command line. Several relay processes may share one database.",
)
@click.option(
    "--quota",
    default=DEFAULT_QUOTA,
    show_default=True,
    callback=_quota,
    metavar="SIZE",
    help="Storage per account (e.g. 500MB, 2GiB, unlimited).",
)
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="Serve HTTPS: PEM.")
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="The key of --tls-cert.")
@click.option(
    "--trust-proxy",
    is_flag=True,
    help="Take the client address from X-Forwarded-For (only behind a reverse proxy that sets it).",
)
@click.option(
    "--signups-per-hour",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Accounts that one client address may make in an hour.",
)
@click.option(
    "--metrics-listen",
    callback=_listen,
    envvar="P2PSYNC_RELAY_METRICS_LISTEN",
    metavar="HOST:PORT",
    help="Also serve /metrics (Prometheus) and /healthz on this address, e.g. 127.0.0.1:9741; keep it private.",
)
@json_option
def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    database: str | None,
    quota: int | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    trust_proxy: bool,
    signups_per_hour: int,
    metrics_listen: tuple[str, int] | None,
    as_json: bool,
) -> None:
    """Serve the relay until Ctrl-C or SIGTERM (then it finishes the requests in flight and exits 0).

    Prints one line when it listens (with --json: {"listening": URL}); logs one JSON line per
    request on stderr.
    """
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("Give both --tls-cert and --tls-key, or neither.")
    from p2psync.relay import passwords, serving  # aiohttp only for this command, not every p2psync call

    try:
        token_seconds = passwords.token_seconds()
    except ValueError as exc:
        raise InvalidValue(str(exc)) from None
    folder = data_dir if data_dir is not None else default_data_dir()
    database = database or None  # an empty P2PSYNC_RELAY_DATABASE: SQLite
    if database is not None:
        database = _database_url(database, data_dir)
    where = folder if database is None else _described(database)

    def listening(url: str) -> None:
        line = json.dumps({"listening": url}) if as_json else f"Relay listening on {url} (data in {where})"
        click.echo(line)
        sys.stdout.flush()

    serving.setup_logging()
    try:
        asyncio.run(
            serving.serve(
                host,
                port,
                folder,
                quota,
                tls_cert,
                tls_key,
                listening,
                trust_proxy=trust_proxy,
                token_seconds=token_seconds,
                signups_per_hour=signups_per_hour,
                metrics_listen=metrics_listen,
                database=database,
            )
        )
    except ssl.SSLError as exc:
        raise FileProblem(
            f"The TLS certificate or key cannot be used ({exc.reason or exc}); check both files."
        ) from None
    except OSError as exc:
        if exc.filename:
            raise  # a file problem (the data folder): main() says which file
        raise NetworkError(
            f"Cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --host or --port."
        ) from None


@relay.command(short_help="Move a SQLite relay's store into PostgreSQL.")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="The SQLite relay's data folder (its --data); the relay on it must be stopped.",
)
@click.option(
    "--to",
    "target",
    envvar="P2PSYNC_RELAY_DATABASE",
    required=True,
    metavar="URL",
    help="The PostgreSQL database, postgresql://USER@HOST:PORT/DB; better given as P2PSYNC_RELAY_DATABASE "
    "(the password in PGPASSWORD or ~/.pgpass), so that no password sits on a command line.",
)
@click.option("--replace", is_flag=True, help="Empty a database that holds accounts already, then move.")
@json_option
def migrate(source: Path, target: str, replace: bool, as_json: bool) -> None:
    """Move a SQLite relay's whole store into PostgreSQL, verified, for `relay serve --database`.

    Accounts, tokens (devices stay logged in), login limits, change sets, chunks, devices and key
    epochs move in one transaction; counts and every blob's SHA-256 are checked before it commits,
    so a failure leaves the database as it was. Progress goes to stderr; with --json the result is
    one JSON document on stdout.
    """
    target = _database_url(target, None, "--to")
    try:
        from p2psync.relay import storage_move
    except ImportError:
        raise InvalidValue("relay migrate needs psycopg 3 and psycopg-pool: pip install 'p2psync[relay-pg]'.") from None

    def progress(step: storage_move.MoveProgress) -> None:
        if step.blobs_total:
            line = f"{step.step}: {step.blobs}/{step.blobs_total} ({human_size(step.bytes)})"
        else:
            line = f"{step.step}: {step.rows} rows" + (f", {step.blobs} blobs" if step.blobs else "")
        click.echo(line, err=True)

    report = storage_move.move_to_postgres(source, target, replace, progress)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(
        f"Moved {report.rows.get('accounts', 0)} accounts, {report.rows.get('changesets', 0)} change sets, "
        f"{report.rows.get('chunks', 0)} chunks and {report.blobs} blobs ({human_size(report.bytes)}) from "
        f"{report.source} to {report.target} in {report.seconds:.1f} s; verified. Start the relay with "
        "--database (or P2PSYNC_RELAY_DATABASE) at the same address: devices go on as they were."
    )


def _database_url(url: str, data_dir: Path | None, option: str = "--database") -> str:
    if not url.startswith(("postgresql://", "postgres://")):
        raise click.BadParameter(
            "must be a PostgreSQL URL, postgresql://USER@HOST:PORT/DB.",
            param_hint=f"'{option}' / P2PSYNC_RELAY_DATABASE",
        )
    if data_dir is not None:
        raise click.UsageError("Give --data (SQLite) or --database / P2PSYNC_RELAY_DATABASE (PostgreSQL), not both.")
    return url


def _described(url: str) -> str:
    """The database without its password, for the listening line."""
    try:
        from p2psync.relay.storage_pg import describe
    except ImportError:
        return "PostgreSQL"
    return describe(url)
