"""The relay's endpoints for the recovery key (protocol/relay.md §3.1): POST /recovery (a logged-in
device sets the account's recovery key), POST /recover/prelogin, POST /recover/open and POST
/recover (a device that knows the recovery key, and no password, sets a new password).

The relay never learns the recovery key: it keeps the scrypt hash of a login key derived from it
(as for a password) and the library key wrapped with a wrap key derived from it. /recover/open and
/recover each prove the recovery key again, under the failed-login limit of /login (the same
count, per e-mail and per client address), and answer an unknown address, an account without a
recovery key and a wrong key alike.
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from p2psync.errors import Refusal, RelayCode
from p2psync.model.ids import ID_PATTERN
from p2psync.relay import kdf, passwords
from p2psync.relay.account_api import counted_attempt, release
from p2psync.relay.requests import b64_field, email_field, kdf_field, malformed, read_object
from p2psync.relay.server import MAX_WRAPPED_KEY, RELAY, Relay, answer, authed
from p2psync.relay.storage_recovery import RecoveryRecord

WRONG_RECOVERY = "The e-mail address or the recovery key is wrong."
NOT_HELD = "The account no longer holds that library; log in again and make a new recovery key."


def _key(body: dict[str, Any], name: str) -> bytes:
    return b64_field(body, name, passwords.LOGIN_KEY_BYTES, passwords.LOGIN_KEY_BYTES)


def _library_id(body: dict[str, Any]) -> str:
    library_id = body.get("library_id")
    if not isinstance(library_id, str) or ID_PATTERN.fullmatch(library_id) is None:
        raise malformed("'library_id' must be a library id (16 characters a-z and 2-7).")
    return library_id


def _params(body: dict[str, Any]) -> kdf.KdfParams:
    params = kdf_field(body)
    if params is None or kdf.needs_upgrade(params):
        raise Refusal(400, RelayCode.WEAK_KDF, "A recovery key or a new password uses this relay's key derivation.")
    return params


@authed
async def set_recovery(request: web.Request, account: str) -> web.Response:
    relay = request.app[RELAY]
    body = await read_object(request)
    key, library_id, params = _key(body, "login_key"), _library_id(body), _params(body)
    wrapped = b64_field(body, "wrapped_key", 1, MAX_WRAPPED_KEY)
    epoch = body.get("epoch")
    info = await relay.call(relay.storage.account_info, account)
    if type(epoch) is not int or not 0 <= epoch <= info.key_epoch:
        raise malformed("'epoch' must be the epoch of the wrapped library key (at most the one in force).")
    salt, verifier = await relay.hash(passwords.new_login_hash, key)
    done = await relay.call(
        relay.storage.set_recovery, account, library_id, salt, verifier, params.as_text(), wrapped, epoch
    )
    if not done:
        raise Refusal(409, RelayCode.NOT_BOUND, NOT_HELD)
    return answer({})


async def prelogin(request: web.Request) -> web.Response:
    """How the recovery key's keys are derived (for an unknown address or one without a recovery
    key, the parameters a new one gets: the answer tells nothing)."""
    relay = request.app[RELAY]
    email = email_field(await read_object(request))
    record = await relay.call(relay.storage.recovery_record, email)
    text = record.kdf if record is not None else None
    params = kdf.KdfParams.from_text(text) if text else kdf.default_params()
    return answer({"kdf": params.as_wire()})


async def _proven(relay: Relay, request: web.Request, email: str, key: bytes) -> RecoveryRecord:
    """The account whose recovery key `key` is (derived from), under the failed-login limit."""
    async with counted_attempt(relay, request, email, "logins or recovery attempts") as guess:
        record = await relay.call(relay.storage.recovery_record, email)
        salt = record.salt if record is not None else None
        verifier = record.verifier if record is not None else None
        ok = await relay.hash(passwords.verify_login_key, key, salt, verifier)
        if not ok or record is None or record.wrapped_key is None or record.library_id is None:
            raise Refusal(401, RelayCode.AUTH_FAILED, WRONG_RECOVERY)
        await release(relay, guess)
    return record


async def open_recovery(request: web.Request) -> web.Response:
    """The library key wrapped with the recovery key, to the device that proves it knows the key."""
    relay = request.app[RELAY]
    body = await read_object(request)
    email, key = email_field(body), _key(body, "recovery_key")
    record = await _proven(relay, request, email, key)
    assert record.wrapped_key is not None
    return answer(
        {
            "library_id": record.library_id,
            "wrapped_key": base64.b64encode(record.wrapped_key).decode("ascii"),
            "epoch": record.epoch,
            "key_epoch": record.key_epoch,
        }
    )


async def recover(request: web.Request) -> web.Response:
    """A new password: its login key and the library key wrapped with it replace the old ones, and
    every token of the account stops working (as after /password)."""
    relay = request.app[RELAY]
    body = await read_object(request)
    email, key = email_field(body), _key(body, "recovery_key")
    login_key, library_id, params = _key(body, "login_key"), _library_id(body), _params(body)
    wrapped = b64_field(body, "wrapped_key", 1, MAX_WRAPPED_KEY)
    record = await _proven(relay, request, email, key)
    if record.library_id != library_id or record.epoch is None:
        raise Refusal(409, RelayCode.NOT_BOUND, NOT_HELD)
    salt, digest = await relay.hash(passwords.new_login_hash, login_key)
    done = await relay.call(
        relay.storage.recover_password,
        record.account,
        library_id,
        salt,
        digest,
        params.as_text(),
        wrapped,
        record.epoch,
    )
    if not done:
        raise Refusal(409, RelayCode.NOT_BOUND, NOT_HELD)
    return answer({})


ROUTES = [
    ("POST", "/recovery", set_recovery),
    ("POST", "/recover/prelogin", prelogin),
    ("POST", "/recover/open", open_recovery),
    ("POST", "/recover", recover),
]
