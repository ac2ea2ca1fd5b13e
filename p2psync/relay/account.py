"""The account seen from a logged-in device: log out, purge, change the password, and what
`status` shows of it. Each opens a client with the token this library holds (relay/state.py)."""

from __future__ import annotations

from typing import Any

from p2psync.errors import P2PSyncError, RelayBoundElsewhere, RelayError
from p2psync.relay import crypto, kdf, keys, strength
from p2psync.relay.client import Account, RelayClient
from p2psync.relay.library_calls import OnThisThread
from p2psync.relay.state import logged_in, summary
from p2psync.store import relay_state
from p2psync.store.db import write_transaction
from p2psync.store.library import Library


async def logout(library: Library) -> dict[str, Any]:
    """Revoke this device's token and forget it and the library key. The link to the account
    stays (and so the one-account rule, and the cursor): logging in again continues."""
    link = logged_in(library)
    told = True
    try:
        async with RelayClient(link.url or "", link.token) as client:
            await client.logout()
    except RelayError:
        told = False  # unreachable, or the token was no longer valid: forgetting it is enough
    relay_state.write_rows(library, {"relay_token": None, "relay_key": None, **keys.FORGET_ROWS})
    return {"relay": link.url, "email": link.email, "logged_out": True, "relay_told": told}


async def account_info(library: Library) -> Account:
    link = logged_in(library)
    async with RelayClient(link.url or "", link.token) as client:
        return await client.account()


async def purge(library: Library) -> dict[str, Any]:
    """Delete everything the account stores on the relay and unbind it; forget the cursor and what
    was pushed. This device stays logged in; logging in again (from any library) binds it again."""
    link = logged_in(library)
    async with RelayClient(link.url or "", link.token) as client:
        await client.purge()
    with write_transaction(library.db):
        relay_state.write_rows_in(library, {"relay_cursor": None, "relay_last_moved": None})
        relay_state.forget_pushed(library)
    return {"relay": link.url, "email": link.email, "purged": True}


async def change_password(library: Library, new_password: str) -> dict[str, Any]:
    """Replace the account's password: a new login key, and the library key wrapped again. Every
    other device's login stops working (they log in again with the new password)."""
    link = logged_in(library)
    assert link.key is not None and link.email is not None
    strength.check_new_password(new_password, link.email)
    params = kdf.default_params()
    login_key, wrap_key = crypto.derive_keys(link.email, new_password, params)
    async with RelayClient(link.url or "", link.token) as client:
        account = await client.account()
        library_id = account.library_id or library.library_id
        if account.library_id not in (None, library.library_id):
            raise RelayBoundElsewhere(
                "The account now holds another library; log in again before changing its password.",
                account.library_id,
            )
        ring = keys.read_ring(library)
        assert ring is not None
        if account.library_id is not None:
            await keys.refresh(OnThisThread(library), client, ring)  # the account's copy is of the key in force
        wrapped = crypto.wrap_library_key(wrap_key, ring.current, library_id)
        await client.change_password(login_key, wrapped, params)
        if account.library_id is not None and account.wrapped_epoch != ring.epoch:
            await client.set_account_key(ring.epoch, wrapped)

    relay_state.write_rows(library, {"relay_kdf": params.as_text(), **keys.wrap_rows(wrap_key)})
    return {"relay": link.url, "email": link.email, "password_changed": True}


async def status(library: Library, online: bool = True) -> dict[str, Any]:
    """The link, and (online, when logged in) what the relay says of the account."""
    out: dict[str, Any] = {"linked": False, "library_id": library.library_id}
    info = summary(library)
    if info is None:
        return out
    out.update(info, linked=True, bound_library=None, usage=None, recovery=None, online_error=None)
    if online and info["logged_in"]:
        try:
            account = await account_info(library)
        except P2PSyncError as exc:
            out["online_error"] = exc.message
        else:
            out["bound_library"] = account.library_id
            out["bound_here"] = account.library_id == library.library_id
            out["usage"] = {
                "used_bytes": account.used_bytes,
                "quota_bytes": account.quota_bytes,
                "change_sets": account.change_sets,
                "chunks": account.chunks,
            }
            out["recovery"] = {"epoch": account.recovery_epoch, "key_epoch": account.key_epoch}
    return out
