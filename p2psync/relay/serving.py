"""The relay as a process: JSON log lines, TLS, and `serve`, which listens until SIGTERM or SIGINT
and then lets every request in flight finish before the storage closes. The CLI (relay serve)
runs `serve` with asyncio.run; the application itself is server.make_app.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from p2psync.errors import NetworkError, P2PSyncError
from p2psync.relay import operations, passwords
from p2psync.relay.server import RELAY, SHUTDOWN_SECONDS, SIGNUPS_PER_HOUR, log, log_line, make_app
from p2psync.relay.storage import RelayStorage, SqliteStorage


def open_storage(data_dir: Path, database: str | None) -> RelayStorage:
    """The relay's storage: PostgreSQL if a database URL is given, else SQLite in data_dir."""
    if database is None:
        return SqliteStorage(data_dir)
    try:
        from p2psync.relay.storage_pg import PostgresStorage
    except ImportError:
        raise P2PSyncError(
            "The PostgreSQL backend needs psycopg 3 and psycopg-pool: pip install 'p2psync[relay-pg]'."
        ) from None
    return PostgresStorage(database)


class _JsonLines(logging.Formatter):
    """Access lines are JSON already; anything else (errors, aiohttp's own) becomes a JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "p2psync.relay" and message.startswith("{") and not record.exc_info:
            return message
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line)


def setup_logging() -> None:
    handler = logging.StreamHandler()  # stderr
    handler.setFormatter(_JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(logging.INFO)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def url_for(host: str, port: int, tls: bool) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


async def serve(
    host: str,
    port: int,
    data_dir: Path,
    quota: int | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    on_listening: Callable[[str], None],
    *,
    trust_proxy: bool = False,
    token_seconds: float = passwords.TOKEN_SECONDS,
    signups_per_hour: int = SIGNUPS_PER_HOUR,
    metrics_listen: tuple[str, int] | None = None,
    database: str | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; then finish the requests in flight, close the storage, return.
    With metrics_listen, /metrics and /healthz also answer on that address (relay/operations.py);
    `database`: a PostgreSQL URL to keep everything in instead of data_dir (storage_pg.py)."""
    context = tls_context(tls_cert, tls_key) if tls_cert and tls_key else None
    storage = open_storage(data_dir, database)
    app = make_app(
        storage, quota, token_seconds=token_seconds, trust_proxy=trust_proxy, signups_per_hour=signups_per_hour
    )
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    metrics_runner: web.AppRunner | None = None
    try:
        site = web.TCPSite(runner, host, port, ssl_context=context)
        await site.start()
        bound_port = runner.addresses[0][1]
        metrics_url = None
        if metrics_listen is not None:
            metrics_runner = web.AppRunner(operations.metrics_app(app[RELAY]), access_log=None, shutdown_timeout=1)
            await metrics_runner.setup()
            try:
                await web.TCPSite(metrics_runner, *metrics_listen).start()
            except OSError as exc:
                raise NetworkError(
                    f"Cannot serve metrics on {metrics_listen[0]}:{metrics_listen[1]} ({exc.strerror or exc}); "
                    "choose another --metrics-listen."
                ) from None
            metrics_url = url_for(metrics_listen[0], metrics_runner.addresses[0][1], False) + operations.METRICS
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        url = url_for(host, bound_port, context is not None)
        log_line(event="listening", url=url, quota_bytes=quota, metrics=metrics_url)
        on_listening(url)
        await stop.wait()
        log_line(event="stopping")
        # aiohttp's own shutdown drops what a request still uploads; so first stop listening and
        # let every request in flight finish (its body arrive, its answer go out).
        for active in list(runner.sites):
            await active.stop()
        await app[RELAY].drain(SHUTDOWN_SECONDS)
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()  # before the storage closes: no ping on a closed database
        await runner.cleanup()  # stops listening, waits for requests in flight, closes storage
    log_line(event="stopped")
