"""A library's link to an online account on a relay (protocol/relay.md section 4), and a sync
through it: the public face of the relay client.

The work is async and lives by concern: relay/state.py (the link as the library records it),
relay/link_rules.py (logging in, binding or joining, the one-account rule, reset),
relay/account.py (logout, purge, password, status), relay/sync_round.py (one sync, in order),
relay/changes.py (change sets pushed and pulled), relay/attachments.py (chunks both ways) and
relay/keys.py (key epochs). The daemon awaits those; the CLI runs them with `asyncio.run` at its
edge (the tests, with tests/relay_link.py). This module is the one import for all of it.
"""

from __future__ import annotations

from p2psync.relay.changes import CHECK_FAILED
from p2psync.relay.link_rules import (
    LINKED_ELSEWHERE,
    RESET_MESSAGE,
    RESET_SUFFIX,
    STAGING_DIR,
    Ask,
    LoginReport,
    Question,
    is_reset_request,
)
from p2psync.relay.report import RelaySyncReport
from p2psync.relay.state import PEER, PUSHED_PREFIX, LinkState, is_linked, read_link, summary

__all__ = [
    "CHECK_FAILED",
    "LINKED_ELSEWHERE",
    "PEER",
    "PUSHED_PREFIX",
    "RESET_MESSAGE",
    "RESET_SUFFIX",
    "STAGING_DIR",
    "Ask",
    "LinkState",
    "LoginReport",
    "Question",
    "RelaySyncReport",
    "is_linked",
    "is_reset_request",
    "read_link",
    "summary",
]
