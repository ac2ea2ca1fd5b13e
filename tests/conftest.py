"""Suite-wide settings.

Hypothesis's per-example deadline (200 ms by default) turns a slow minute of a shared 2-core CI
machine into a failure that says nothing about behaviour; the tests check behaviour, and bench/
measures speed, so no example has a deadline."""

import os
import signal

from hypothesis import settings

# Accounts made by tests derive their keys with tiny Argon2id parameters instead of the production
# ones (64 MiB, about 0.5 s each): relay/kdf.py. Inherited by every relay, daemon and CLI the tests
# start; tests/test_relay_accounts.py runs the production parameters without it.
os.environ["P2PSYNC_TEST_ONLY_WEAK_KDF"] = "1"
# `p2psync sync` dials out once and ends, as before issue 23 (its default --wait of 30 s would
# listen on 0.0.0.0 and wait for members a test left down); tests/test_sync_wait.py sets --wait.
os.environ["P2PSYNC_SYNC_WAIT"] = "0"


# A run stopped with SIGTERM (a CI timeout, `kill`) ends like Ctrl-C: the fixtures' clean-up runs,
# so the PostgreSQL cluster and the servers the tests started do not outlive it.
def _stop_like_ctrl_c(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _stop_like_ctrl_c)

settings.register_profile("p2psync", deadline=None)
settings.load_profile("p2psync")


# --- the real browser for tests of the web app (tests/web_support.py) --------------------------

import shutil  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

CHROMIUM = os.environ.get("P2PSYNC_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (never a browser Playwright downloads).
    Missing here: the browser tests are skipped with this one line (make test installs it as root).
    One per test module: while Playwright's sync API runs, its event loop is this thread's, and
    asyncio.run in a later module's test would refuse to start."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"browser tests need Chromium at {CHROMIUM}: apt-get install chromium chromium-driver")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need Playwright: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page in a fresh context (no cookies from other tests), 15 s per step at most."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


# --- a real PostgreSQL server for the relay's PostgreSQL backend (tests/pg_support.py) ----------

import itertools  # noqa: E402

_pg_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """This session's own PostgreSQL cluster (initdb in a temporary folder, 127.0.0.1, a free port),
    stopped by its PID at the end. Where it cannot run, the tests using it are skipped with one line."""
    from tests import pg_support

    reason = pg_support.unavailable()
    if reason is not None:
        pytest.skip(reason)
    cluster = pg_support.start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Any) -> Iterator[str]:
    """A fresh, empty database of the session's cluster for one test (dropped after it)."""
    name = f"t{os.getpid()}_{next(_pg_names)}"
    url = pg_cluster.create_database(name)
    try:
        yield url
    finally:
        pg_cluster.drop_database(name)
