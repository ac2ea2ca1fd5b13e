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

from aiohttp import web

from p2psync.relay import kdf, passwords
from p2psync.relay.server import (
    ACCOUNT,
    MAX_WRAPPED_KEY,
    RELAY,
    WRONG_LOGIN,
    Refusal,
    _issue_token,
    answer,
    authed,
    b64_field,
    client_address,
    email_field,
    kdf_field,
    login_fields,
    malformed,
    read_object,
)
from p2psync.relay.storage import EmailTaken

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
        now = relay.clock()
        waits = [
            await relay.call(relay.storage.signup_wait, client, now, relay.signups_per_hour, SIGNUP_WINDOW),
            await relay.call(relay.storage.login_wait, email, client, now),
        ]
        wait = max((w for w in waits if w is not None), default=None)
        if wait is not None:
            raise Refusal(
                429,
                "rate_limited",
                f"Too many sign-ups or failed logins from this address or for this e-mail address; try again in "
                f"{wait} seconds.",
                retry_after=wait,
            )
        record = await relay.call(relay.storage.login_record, email)
        if record is not None:  # taken: a login, answered as /login answers it
            ok = await relay.hash(passwords.verify_login_key, key, record.salt, record.login_hash)
            if not ok:
                await relay.call(relay.storage.record_failed_login, email, client, relay.clock())
                raise Refusal(401, "auth_failed", WRONG_LOGIN)
            request[ACCOUNT] = record.account
            return answer(await _issue_token(relay, record.account, body, email))
        salt, digest = await relay.hash(passwords.new_login_hash, key)
        text = params.as_text() if params is not None else None
        try:
            account = await relay.call(relay.storage.create_account, email, salt, digest, relay.clock(), text)
        except EmailTaken:  # made a moment ago through another relay process: not proven, so refused
            raise Refusal(401, "auth_failed", WRONG_LOGIN) from None
        await relay.call(relay.storage.record_signup, client, relay.clock(), SIGNUP_WINDOW)
    request[ACCOUNT] = account
    return answer(await _issue_token(relay, account, body, email), 201)


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
        raise Refusal(400, "weak_kdf", "/kdf moves an account to this relay's key derivation or a stronger one.")
    info = await relay.call(relay.storage.account_info, account)
    if wrapped is None and info.library_id is not None:
        raise malformed("'wrapped_key' must be the library key wrapped with the new wrap key.")
    salt, digest = await relay.hash(passwords.new_login_hash, key)
    await relay.call(relay.storage.set_login, account, salt, digest, wrapped, params.as_text())
    return answer({})
