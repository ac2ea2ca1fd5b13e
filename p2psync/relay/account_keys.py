"""Signing up and logging in with the password (protocol/relay.md §1 and §3), on the device.

Logging in: ask the relay how the account's keys are derived (POST /prelogin; for an unknown
address it answers as for a new account, so the answer does not tell whether one exists), check
the parameters against kdf.py's floor and ceiling and against those this device used for the same
account before (a relay cannot talk a device down), derive, log in. An account of the first release
(scrypt) is then moved to Argon2id at once: the keys derived again with the same password, the
library key unwrapped with the old wrap key and wrapped with the new one, both sent with POST /kdf.
The relay keeps every device's login through it (it is the same password), and from then on names
Argon2id for the account.

Signing up: derive with this version's parameters and send them with the login key. To an
address that has an account, the relay answers as /login would (relay.md §3): a session if the key
is that account's, else the same refusal as a wrong password.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from p2psync.errors import P2PSyncError, RelayInsecure
from p2psync.relay import crypto, kdf
from p2psync.relay.client import RelayClient, Session
from p2psync.relay.kdf import KdfParams


@dataclass(frozen=True)
class Keys:
    """A session, the wrap key that goes with the account's current login key, and its parameters."""

    session: Session
    wrap_key: bytes
    params: KdfParams


def recall(text: str | None) -> KdfParams | None:
    """The parameters this device remembers for its account (meta relay_kdf), if readable."""
    if not text:
        return None
    try:
        return KdfParams.from_text(text)
    except ValueError:
        return None


async def sign_up(client: RelayClient, email: str, password: str) -> Keys:
    params = kdf.default_params()
    login_key, wrap_key = crypto.derive_keys(email, password, params)
    return Keys(await client.signup(email, login_key, params), wrap_key, params)


async def log_in(client: RelayClient, email: str, password: str, remembered: KdfParams | None = None) -> Keys:
    """Log in as above; RelayInsecure, with nothing derived or sent, if the relay asks for parameters
    out of bounds or weaker than `remembered` (what this device used for this account before)."""
    params = kdf.check(await client.prelogin(email))
    if remembered is not None and kdf.weaker(params, remembered):
        raise RelayInsecure(
            f"Refused to derive the password's keys with {params.describe()}: weaker than the "
            f"{remembered.describe()} this account used when this device last logged in, so the relay may be "
            "trying to make the password easier to guess; nothing was sent."
        )
    login_key, wrap_key = crypto.derive_keys(email, password, params)
    session = await client.login(email, login_key)
    if kdf.needs_upgrade(params):
        with contextlib.suppress(P2PSyncError):  # the login stands with the old keys; the next one tries again
            wrap_key, params = await _upgrade(client, email, password, wrap_key)
    return Keys(session, wrap_key, params)


async def _upgrade(client: RelayClient, email: str, password: str, old_wrap: bytes) -> tuple[bytes, KdfParams]:
    params = kdf.default_params()
    login_key, wrap_key = crypto.derive_keys(email, password, params)
    account = await client.account()
    wrapped = None
    if account.library_id is not None and account.wrapped_key is not None:
        library_key = crypto.unwrap_library_key(old_wrap, account.wrapped_key, account.library_id)
        wrapped = crypto.wrap_library_key(wrap_key, library_key, account.library_id)
    await client.upgrade_kdf(login_key, wrapped, params)
    return wrap_key, params
