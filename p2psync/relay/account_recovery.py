"""The recovery key of an end-to-end encrypted account (protocol/relay.md §3.1), on the device.

The relay cannot reset a forgotten password: it never held the library key. So the account's
library key is wrapped a second time, under a key derived from a recovery key that only the user
holds: 16 words of the pairing word list (p2psync/crypto/wordlist.py), 128 bits drawn on this
device, shown once. From the words, with the e-mail address, the same key derivation as a
password's (crypto.derive_keys, Argon2id) gives a login key (whose hash the relay keeps, so that
a device can prove it knows the words) and a wrap key (which the relay never sees).

- make (signup, `account recovery-key`, the web app's Account page): a logged-in device draws new
  words and gives the relay the library key in force wrapped under them; the old words stop working.
- recover (`account recover`): a device with the words and no password proves them, receives the
  wrapped key, opens it, and sends the login key of a new password and the library key wrapped
  with the new password's wrap key. Every device's login stops working (they log in again with the
  new password). Wrong words: one sentence, nothing changes.

A device removal puts a new library key in force (keys.py); words made before it open the old key
only, so `recover` refuses them (nothing changes) and `account status` says to make new ones.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from p2psync.crypto.wordlist import WORDS
from p2psync.errors import InvalidValue, RelayBoundElsewhere, RelayError, RelayTampered
from p2psync.relay import crypto, kdf, keys, strength
from p2psync.relay.client import RelayClient, normalize_url
from p2psync.relay.kdf import KdfParams
from p2psync.relay.library_calls import OnThisThread
from p2psync.relay.state import logged_in
from p2psync.store.library import Library

WORD_COUNT = 16  # 16 words of 256: 128 bits
KEY_PREFIX = "p2psync recovery key\x00"  # keeps its keys apart from any password's
SHOWN_ONCE = (
    "This is your recovery key. It is shown once: write it down or keep it in a password manager, apart from "
    "this computer. If you forget your password, 'p2psync account recover' sets a new one with it; without it "
    "nobody can, not even the relay's operator."
)
BAD_KEY = (
    f"A recovery key is {WORD_COUNT} words from the list p2psync shows them from (as printed at sign-up); "
    "check the words and type them again."
)
STALE = (
    "This recovery key opens an older library key than the one in force (a device was removed since it was made), "
    "so it cannot set a new password; nothing was changed. On a device that is still logged in, change the "
    "password ('p2psync account password') and make a new recovery key ('p2psync account recovery-key')."
)
_BY_PREFIX = {word[:3]: word for word in WORDS}  # every word has a first three letters of its own


@dataclass(frozen=True)
class RecoveryKey:
    relay: str
    email: str
    words: str  # the recovery key, WORD_COUNT words separated by spaces

    def as_dict(self) -> dict[str, Any]:
        return {"relay": self.relay, "email": self.email, "recovery_key": self.words}


def new_words() -> str:
    return " ".join(secrets.choice(WORDS) for _ in range(WORD_COUNT))


def parse_words(text: str) -> str:
    """The recovery key as typed, in its one form (lower case, single spaces); each word may be given
    by its first three letters or more. InvalidValue (BAD_KEY) if it is not one."""
    found: list[str] = []
    for typed in re.findall(r"[A-Za-z]+", text):
        word = _BY_PREFIX.get(typed[:3].lower())
        if word is None or not word.startswith(typed.lower()):
            raise InvalidValue(BAD_KEY)
        found.append(word)
    if len(found) != WORD_COUNT:
        raise InvalidValue(BAD_KEY)
    return " ".join(found)


def derive(email: str, words: str, params: KdfParams) -> tuple[bytes, bytes]:
    """(login key, wrap key) of a recovery key, as a password's are derived."""
    return crypto.derive_keys(email, KEY_PREFIX + words, params)


async def make(library: Library) -> RecoveryKey:
    """New recovery words for the account this library is logged in to (the old ones stop working)."""
    link = logged_in(library)
    assert link.email is not None
    async with RelayClient(link.url or "", link.token) as client:
        account = await client.account()
        if account.library_id != library.library_id:
            raise RelayBoundElsewhere(
                "The account does not hold this library now; log in again before making a recovery key.",
                account.library_id,
            )
        ring = keys.read_ring(library)
        assert ring is not None
        await keys.refresh(OnThisThread(library), client, ring)  # the key in force, not an older one
        words = new_words()
        params = kdf.default_params()
        login_key, wrap_key = derive(link.email, words, params)
        wrapped = crypto.wrap_library_key(wrap_key, ring.current, library.library_id)
        await client.set_recovery(login_key, params, library.library_id, wrapped, ring.epoch)
    return RecoveryKey(client.url, link.email, words)


async def make_if_none(library: Library) -> RecoveryKey | None:
    """Recovery words for a new account (sign-up), unless it has some already (a sign-up to an
    existing account with its password is a login: its words stay)."""
    link = logged_in(library)
    async with RelayClient(link.url or "", link.token) as client:
        account = await client.account()
    if account.recovery_epoch is not None or account.library_id != library.library_id:
        return None
    return await make(library)


async def recover(url: str, email: str, words: str, new_password: str) -> dict[str, Any]:
    """Set a new password with the recovery key (see above); RelayAuthFailed if the words are not
    the account's, and then nothing has changed."""
    address = crypto.check_email(email)
    words = parse_words(words)
    strength.check_new_password(new_password, address)  # before anything is sent
    async with RelayClient(normalize_url(url)) as client:
        params = kdf.check(await client.recovery_prelogin(address))
        recovery_login, recovery_wrap = derive(address, words, params)
        opened = await client.open_recovery(address, recovery_login)
        try:
            library_key = crypto.unwrap_library_key(recovery_wrap, opened.wrapped_key, opened.library_id)
        except RelayTampered:
            raise RelayTampered(
                "The library key the relay keeps for this recovery key does not open with it; nothing was changed."
            ) from None
        if opened.epoch < opened.key_epoch:
            raise RelayError(STALE)
        new_params = kdf.default_params()
        login_key, wrap_key = crypto.derive_keys(address, new_password, new_params)
        wrapped = crypto.wrap_library_key(wrap_key, library_key, opened.library_id)
        await client.recover(address, recovery_login, login_key, new_params, opened.library_id, wrapped)
    return {"relay": client.url, "email": address, "password_changed": True}


def status_text(recovery_epoch: int | None, key_epoch: int) -> str:
    """What `account status` says of the recovery key."""
    if recovery_epoch is None:
        return "none; make one with 'p2psync account recovery-key'"
    if recovery_epoch < key_epoch:
        return "out of date (the library key changed since); make a new one with 'p2psync account recovery-key'"
    return "set"
