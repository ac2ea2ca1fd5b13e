"""The relay's endpoints for making accounts and for how their keys are derived (protocol/relay.md
§1 and §3): POST /prelogin, POST /signup, POST /kdf. The rest of the API is in server.py, whose
helpers (errors, body fields, tokens, client addresses) these handlers use.

What they keep from an attacker:
- Which addresses have accounts. /prelogin answers an unknown address with the parameters a new
  account gets (kdf.default_params()), as it answers every account made or upgraded by this
  version. A /signup to a taken address is a login: a session if the key is the account's,
  otherwise exactly the refusal of a wrong password, and it counts as a failed login. What a
  sign-up cannot hide is that it made an account (so the address was free): the relay sends no
  e-mail to confirm an address with, and so limits how many accounts one client address makes.
- Floods. At most `signups_per_hour` accounts per client address (relay serve
  --signups-per-hour), and the failed-login limit of /login, both checked before the address is
  looked up, so that a refusal tells nothing about it.
- A weak derivation. Parameters out of kdf.py's bounds are refused (400 weak_kdf), so a device
  built for tests cannot make accounts on a real relay.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from p2psync.errors import Refusal, RelayCode
from p2psync.relay import kdf, passwords
from p2psync.relay.device_api import tie_device
from p2psync.relay.requests import (
    b64_field,
    client_address,
    email_field,
    kdf_field,
    login_fields,
    malformed,
    read_object,
)
from p2psync.relay.server import (
    ACCOUNT,
    DEVICE,
    MAX_WRAPPED_KEY,
    RELAY,
    TOKEN,
    WRONG_LOGIN,
    Relay,
    answer,
    authed,
    authed_any,
    iso,
)
from p2psync.relay.storage import Claim, EmailTaken

SIGNUP_WINDOW = 3600.0


async def prelogin(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    email = email_field(await read_object(request))
    record = await relay.call(relay.storage.login_record, email)
    params = kdf.KdfParams.from_text(record.kdf) if record is not None else kdf.default_params()
    return answer({"kdf": params.as_wire()})


async def signup(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    body = await read_object(request)
    email, key = login_fields(body)
    params = kdf_field(body)
    client = client_address(request, relay.trust_proxy)
    async with relay.login_locks.hold("email " + email), relay.login_locks.hold("client " + client):
        # Counted before they are made (storage claims), so that sign-ups and guesses at once
        # through several relay processes cannot pass either limit; taken back below when the
        # attempt turns out not to be one (no account made, the right key).
        now = relay.clock()
        made = await relay.call(relay.storage.claim_signup, client, now, relay.signups_per_hour, SIGNUP_WINDOW)
        guess = await relay.call(relay.storage.claim_login, email, client, now)
        waits = [made.wait, guess.wait]
        wait = max((w for w in waits if w is not None), default=None)
        if wait is not None:
            await release(relay, made, guess)
            raise Refusal(
                429,
                RelayCode.RATE_LIMITED,
                f"Too many sign-ups or failed logins from this address or for this e-mail address; try again in "
                f"{wait} seconds.",
                retry_after=wait,
            )
        record = await relay.call(relay.storage.login_record, email)
        if record is not None:  # taken: a login, answered as /login answers it
            await release(relay, made)
            ok = await relay.hash(passwords.verify_login_key, key, record.salt, record.login_hash)
            if not ok:  # the claim stays: a failed login
                raise Refusal(401, RelayCode.AUTH_FAILED, WRONG_LOGIN)
            await release(relay, guess)
            request[ACCOUNT] = record.account
            return answer(await issue_token(relay, record.account, body, email))
        salt, digest = await relay.hash(passwords.new_login_hash, key)
        text = params.as_text() if params is not None else None
        try:
            account = await relay.call(relay.storage.create_account, email, salt, digest, relay.clock(), text)
        except EmailTaken:  # made a moment ago through another relay process: not proven, so refused
            await release(relay, made, guess)
            raise Refusal(401, RelayCode.AUTH_FAILED, WRONG_LOGIN) from None
        await release(relay, guess)  # the sign-up's claim stays: it made an account
    request[ACCOUNT] = account
    return answer(await issue_token(relay, account, body, email), 201)


@authed
async def upgrade_kdf(request: web.Request, account: str) -> web.Response:
    """The same password's keys, derived with stronger parameters: login hash, wrapped key and kdf
    replaced together; unlike /password every token stays (it is the same password)."""
    relay = request.app[RELAY]
    body = await read_object(request)
    key = b64_field(body, "login_key", passwords.LOGIN_KEY_BYTES, passwords.LOGIN_KEY_BYTES)
    wrapped = None if body.get("wrapped_key") is None else b64_field(body, "wrapped_key", 1, MAX_WRAPPED_KEY)
    params = kdf_field(body)
    if params is None or kdf.needs_upgrade(params):
        raise Refusal(
            400, RelayCode.WEAK_KDF, "/kdf moves an account to this relay's key derivation or a stronger one."
        )
    info = await relay.call(relay.storage.account_info, account)
    if wrapped is None and info.library_id is not None:
        raise malformed("'wrapped_key' must be the library key wrapped with the new wrap key.")
    salt, digest = await relay.hash(passwords.new_login_hash, key)
    await relay.call(relay.storage.set_login, account, salt, digest, wrapped, params.as_text())
    return answer({})


async def release(relay: Relay, *claims: Claim) -> None:
    """Take back counted attempts that turned out not to be failures (or sign-ups)."""
    for claim in claims:
        await relay.call(relay.storage.release_claim, claim)


async def issue_token(
    relay: Relay, account: str, body: dict[str, Any] | None = None, email: str = ""
) -> dict[str, Any]:
    """A new token of the account, tied to the device whose proof the login body carries (if any)."""
    device = await tie_device(relay, account, body["device"], email) if body and "device" in body else None
    token, digest = passwords.new_token()
    now = relay.clock()
    expires = now + relay.token_seconds
    await relay.call(relay.storage.add_token, account, digest, expires, now, device)
    return {"account": account, "token": token, "expires": iso(expires), "device": device}


@contextlib.asynccontextmanager
async def counted_attempt(relay: Relay, request: web.Request, email: str, what: str) -> AsyncIterator[Claim]:
    """Hold one attempt at a key for `email` (a login, a recovery): refused with 429 past the
    limit of failed ones, else counted as failed until the caller `release`s it when the key is right.

    One attempt at a time per e-mail and per client address, each checked against the failures of
    those before it: concurrent guesses cannot slip past the limit while hashes are computed. The
    count is kept in the database, so it holds across relay processes too."""
    client = client_address(request, relay.trust_proxy)
    async with relay.login_locks.hold("email " + email), relay.login_locks.hold("client " + client):
        guess = await relay.call(relay.storage.claim_login, email, client, relay.clock())
        if guess.wait is not None:
            raise Refusal(
                429,
                RelayCode.RATE_LIMITED,
                f"Too many failed {what} for this e-mail address or from this address; try again in "
                f"{guess.wait} seconds.",
                retry_after=guess.wait,
            )
        yield guess


async def login(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    body = await read_object(request)
    email, key = login_fields(body)
    async with counted_attempt(relay, request, email, "logins") as guess:
        record = await relay.call(relay.storage.login_record, email)
        ok = await relay.hash(
            passwords.verify_login_key, key, record.salt if record else None, record.login_hash if record else None
        )
        if not ok or record is None:
            raise Refusal(401, RelayCode.AUTH_FAILED, WRONG_LOGIN)
        await release(relay, guess)
    request[ACCOUNT] = record.account
    return answer(await issue_token(relay, record.account, body, email))


@authed_any
async def logout(request: web.Request, account: str) -> web.Response:
    relay = request.app[RELAY]
    await relay.call(relay.storage.delete_token, request[TOKEN])
    return web.Response(status=204)


@authed_any
async def account_info(request: web.Request, account: str) -> web.Response:
    relay = request.app[RELAY]
    info = await relay.call(relay.storage.account_info, account)
    return answer(
        {
            "account": info.account,
            "email": info.email,
            "library_id": info.library_id,
            "wrapped_key": base64.b64encode(info.wrapped_key).decode("ascii") if info.wrapped_key is not None else None,
            "used_bytes": info.used_bytes,
            "quota_bytes": relay.quota_bytes,
            "change_sets": info.change_sets,
            "chunks": info.chunks,
            "device": request.get(DEVICE),
            "key_epoch": info.key_epoch,
            "wrapped_epoch": info.wrapped_epoch,
            "recovery_epoch": await relay.call(relay.storage.recovery_epoch, account),
        }
    )


@authed_any
async def password(request: web.Request, account: str) -> web.Response:
    relay = request.app[RELAY]
    body = await read_object(request)
    key = b64_field(body, "login_key", passwords.LOGIN_KEY_BYTES, passwords.LOGIN_KEY_BYTES)
    # null is accepted for an account that has no library yet (it has no wrapped key to replace)
    wrapped = None if body.get("wrapped_key") is None else b64_field(body, "wrapped_key", 1, MAX_WRAPPED_KEY)
    params = kdf_field(body)
    info = await relay.call(relay.storage.account_info, account)
    if wrapped is None and info.library_id is not None:
        raise malformed("'wrapped_key' must be the library key wrapped with the new password's key.")
    salt, digest = await relay.hash(passwords.new_login_hash, key)
    text = params.as_text() if params else None
    await relay.call(relay.storage.change_password, account, salt, digest, wrapped, request[TOKEN], text)
    return answer({})
