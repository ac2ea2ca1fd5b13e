"""Which PostgreSQL driver for the relay (docs/dependencies.md): a push/pull-shaped workload run
through each candidate, from one asyncio loop, as the relay's handlers would run it.

- psycopg 3, synchronous, ConnectionPool, calls on a thread pool (what PostgresStorage does:
  the relay's storage threads, one per pooled connection);
- psycopg 3, asynchronous, AsyncConnectionPool, on the loop;
- asyncpg, its own pool, on the loop.

A push is one transaction: lock the account row, insert a change set (a 4 KiB blob as bytea),
move the account's counters. A pull reads the next 32 change sets with their blobs. CLIENTS
tasks alternate the two for SECONDS each, on ACCOUNTS accounts; every driver has POOL
connections. Prints operations per second and p50/p99 latency per driver.

Run: python bench/bench_pg_drivers.py [--database postgresql://...]; without it, a temporary
cluster is started as the tests do (tests/pg_support.py) and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CLIENTS = 32
POOL = 8
ACCOUNTS = 200
SECONDS = 6.0
BLOB = os.urandom(4096)

SCHEMA = """
DROP TABLE IF EXISTS b_changesets, b_accounts;
CREATE TABLE b_accounts (id INT PRIMARY KEY, used BIGINT NOT NULL DEFAULT 0, next_num BIGINT NOT NULL DEFAULT 1);
CREATE TABLE b_changesets (account INT, num BIGINT, size INT, data BYTEA, PRIMARY KEY (account, num));
INSERT INTO b_accounts (id) SELECT generate_series(0, 199);
"""
LOCK = "SELECT next_num FROM b_accounts WHERE id = {} FOR UPDATE"
INSERT = "INSERT INTO b_changesets (account, num, size, data) VALUES ({}, {}, {}, {})"
UPDATE = "UPDATE b_accounts SET used = used + {}, next_num = {} WHERE id = {}"
PULL = "SELECT num, data FROM b_changesets WHERE account = {} AND num > {} ORDER BY num LIMIT 32"


def sql(template: str, style: str) -> str:
    marks = [f"${n}" for n in range(1, 5)] if style == "asyncpg" else ["%s"] * 4
    return template.format(*marks[: template.count("{}")])


async def drive(
    name: str, push: Callable[[int], Awaitable[None]], pull: Callable[[int], Awaitable[None]]
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + SECONDS

    async def client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        turn = 0
        while time.monotonic() < deadline:
            account = rng.randrange(ACCOUNTS)
            start = time.perf_counter()
            try:
                await (push(account) if turn % 2 == 0 else pull(account))
            except Exception:
                errors += 1
            latencies.append(time.perf_counter() - start)
            turn += 1

    await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    cuts = statistics.quantiles(latencies, n=100)
    return {"driver": name, "ops_per_s": len(latencies) / SECONDS, "p50_ms": cuts[49] * 1000,
            "p99_ms": cuts[98] * 1000, "errors": errors}  # fmt: skip


async def psycopg_sync(url: str) -> dict[str, Any]:
    import psycopg
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(url, min_size=POOL, max_size=POOL, kwargs={"autocommit": True}, open=True)
    pool.wait()
    threads = ThreadPoolExecutor(max_workers=POOL)
    loop = asyncio.get_running_loop()

    def push_sync(account: int) -> None:
        with pool.connection() as conn, conn.transaction():
            row = conn.execute(sql(LOCK, "psycopg"), [account]).fetchone()
            assert row is not None
            conn.execute(sql(INSERT, "psycopg"), [account, row[0], len(BLOB), BLOB])
            conn.execute(sql(UPDATE, "psycopg"), [len(BLOB), row[0] + 1, account])

    def pull_sync(account: int) -> None:
        with pool.connection() as conn:
            rows = conn.execute(sql(PULL, "psycopg"), [account, 0]).fetchall()
            sum(len(bytes(r[1])) for r in rows)

    async def push(account: int) -> None:
        await loop.run_in_executor(threads, push_sync, account)

    async def pull(account: int) -> None:
        await loop.run_in_executor(threads, pull_sync, account)

    try:
        return await drive(f"psycopg {psycopg.__version__} sync pool + {POOL} threads", push, pull)
    finally:
        threads.shutdown()
        pool.close()


async def psycopg_async(url: str) -> dict[str, Any]:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(url, min_size=POOL, max_size=POOL, kwargs={"autocommit": True}, open=False)
    await pool.open(wait=True)

    async def push(account: int) -> None:
        async with pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(sql(LOCK, "psycopg"), [account])).fetchone()
            assert row is not None
            await conn.execute(sql(INSERT, "psycopg"), [account, row[0], len(BLOB), BLOB])
            await conn.execute(sql(UPDATE, "psycopg"), [len(BLOB), row[0] + 1, account])

    async def pull(account: int) -> None:
        async with pool.connection() as conn:
            rows = await (await conn.execute(sql(PULL, "psycopg"), [account, 0])).fetchall()
            sum(len(bytes(r[1])) for r in rows)

    try:
        return await drive(f"psycopg {psycopg.__version__} async pool", push, pull)
    finally:
        await pool.close()


async def asyncpg_pool(url: str) -> dict[str, Any]:
    import asyncpg

    pool = await asyncpg.create_pool(url, min_size=POOL, max_size=POOL)

    async def push(account: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            next_num = await conn.fetchval(sql(LOCK, "asyncpg"), account)
            await conn.execute(sql(INSERT, "asyncpg"), account, next_num, len(BLOB), BLOB)
            await conn.execute(sql(UPDATE, "asyncpg"), len(BLOB), next_num + 1, account)

    async def pull(account: int) -> None:
        async with pool.acquire() as conn:
            rows = await conn.fetch(sql(PULL, "asyncpg"), account, 0)
            sum(len(r[1]) for r in rows)

    try:
        return await drive(f"asyncpg {asyncpg.__version__} pool", push, pull)
    finally:
        await pool.close()


def reset(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default=os.environ.get("P2PSYNC_RELAY_DATABASE"))
    args = parser.parse_args()
    cluster = None
    url = args.database
    if url is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests import pg_support

        reason = pg_support.unavailable()
        if reason:
            sys.exit(reason)
        cluster = pg_support.start_cluster()
        url = cluster.create_database("bench_drivers")
    try:
        print(f"{CLIENTS} clients alternating push (4 KiB, row lock) and pull (32 rows), {POOL} connections, "
              f"{SECONDS:.0f} s each")  # fmt: skip
        for run in (psycopg_sync, psycopg_async, asyncpg_pool):
            reset(url)
            result = asyncio.run(run(url))
            print(f"{result['driver']:<42} {result['ops_per_s']:7.0f} ops/s   p50 {result['p50_ms']:6.1f} ms   "
                  f"p99 {result['p99_ms']:6.1f} ms   errors {result['errors']}")  # fmt: skip
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
