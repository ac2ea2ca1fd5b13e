"""A device's side of devices and library-key epochs on the relay (protocol/relay.md §5).

The keys this device holds are a *ring*: the library key of each epoch it knows, by number, and
the epoch in force. It lives in the library's local meta table beside the rest of the link
(relay/state.py): relay_key (the key in force, as before epochs), relay_key_epoch, relay_keys (JSON
{epoch: base64 key}) and relay_wrap (the password's wrap key, kept from the last login so that a
new key can be given to the account too). A link from before epochs has only relay_key: epoch 0.

At the start of every relay sync (`prepare`), and again after the pull if the pull brought a
removal (`enforce`):
1. this device refuses to go on if its own library says it was removed;
2. an older token is tied to this device (POST /device);
3. newer key epochs are taken in (`refresh`): this device's sealed copy, or the account's copy,
   opened; every epoch between walked down by its `previous` key to the key this device holds
   (which must come out equal), each checked against its `check`;
4. every device the library has removed (a signed `device.revoke`, the truth) is revoked on the
   relay, with this device's signature, if it is not already;
5. then, after a pull (so that every device that joined through the account's signing key is
   known before that key moves), if a revoked device may still hold the key in force (the relay
   says so, or this device just revoked one, or the key in force was made by a device removed
   here), and this device is a member, a new key is drawn
   (`rotate`): sealed for each member that proved its agreement key to the relay, wrapped for the
   account if this device's wrap key is current, chained to the old key; and the account's
   signing key moves to it (the old "online account" member removed, the new one added), so that
   the old key can introduce nobody.
A device the relay lists as revoked although this library has not removed it is reported (a
revocation the library does not back: see docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from p2psync.crypto.identity import DeviceIdentity
from p2psync.engine import ops
from p2psync.errors import DeviceRemoved, RelayError, RelayTampered
from p2psync.relay import crypto, keyring
from p2psync.relay.client import RelayClient
from p2psync.relay.device_client import KeyEpochMoved, KeysAnswer
from p2psync.relay.library_calls import LibraryCalls
from p2psync.store import relay_state
from p2psync.store.library import Library, Writer, device_add_op

ROTATE_ATTEMPTS = 3
NEED_LOGIN = (
    "The library key on the relay changed and this device holds no copy it can open; log in again with the "
    "password ('p2psync account login')."
)
PROBLEM_REASON = "relay_revocation"


@dataclass
class Ring:
    """The library keys this device holds, by epoch, and the epoch in force."""

    epoch: int
    keys: dict[int, bytes] = field(default_factory=dict)

    @property
    def current(self) -> bytes:
        return self.keys[self.epoch]

    @property
    def chunk_key(self) -> bytes:
        """Chunk ids are made with the key of epoch 0 for the library's life (relay.md §5.4)."""
        return self.keys[0]

    def get(self, epoch: int) -> bytes | None:
        return self.keys.get(epoch)

    @staticmethod
    def first(key: bytes) -> Ring:
        return Ring(0, {0: key})


def read_ring(library: Library) -> Ring | None:
    rows = relay_state.read_rows(library, ("relay_key", "relay_key_epoch", "relay_keys"))
    current = _key(rows.get("relay_key"))
    if current is None:
        return None
    try:
        epoch = int(rows.get("relay_key_epoch") or 0)
        stored = json.loads(rows.get("relay_keys") or "{}")
        keys = {int(e): k for e, text in stored.items() if (k := _key(text)) is not None}
    except (ValueError, TypeError, AttributeError):
        epoch, keys = 0, {}
    keys[epoch] = current
    return Ring(epoch, keys) if 0 in keys else Ring.first(current)


def _key(text: str | None) -> bytes | None:
    if not text:
        return None
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == crypto.KEY_BYTES else None


def ring_rows(ring: Ring) -> dict[str, str | int | None]:
    """The meta rows that hold a ring (relay_key stays the key in force, as before epochs)."""
    return {
        "relay_key": base64.b64encode(ring.current).decode("ascii"),
        "relay_key_epoch": ring.epoch,
        "relay_keys": json.dumps({str(e): base64.b64encode(k).decode("ascii") for e, k in sorted(ring.keys.items())}),
    }


def wrap_rows(wrap_key: bytes | None) -> dict[str, str | int | None]:
    return {"relay_wrap": base64.b64encode(wrap_key).decode("ascii") if wrap_key else None}


FORGET_ROWS: dict[str, str | int | None] = {"relay_key_epoch": None, "relay_keys": None, "relay_wrap": None}


def read_wrap(library: Library) -> bytes | None:
    return _key(relay_state.read_row(library, "relay_wrap"))


def save_ring(library: Library, ring: Ring) -> None:
    relay_state.write_rows(library, ring_rows(ring))


def proof(library: Library, email: str) -> keyring.DeviceProof:
    """This device's proof of its key for the account `email` (sent at login)."""
    identity = library.identity()
    assert identity.private_key is not None
    return keyring.make_proof(identity.private_key, email, time.time())


# --- taking in newer epochs ------------------------------------------------------------------------


def _walk(library_id: str, answer: KeysAnswer, top: int, key: bytes) -> dict[int, bytes]:
    """Every key from `top` down to epoch 0, each opened from the one above and checked."""
    keys = {top: key}
    for epoch in range(top, 0, -1):
        record = answer.epochs.get(epoch)
        if record is None or keyring.key_check(keys[epoch]) != record.check:
            raise RelayTampered(f"the library key of epoch {epoch} on the relay does not match its record")
        try:
            keys[epoch - 1] = keyring.unwrap_previous(keys[epoch], record.previous, library_id, epoch)
        except keyring.ProofError as exc:
            raise RelayTampered(str(exc)) from None
    return keys


def _epoch_of(answer: KeysAnswer, key: bytes) -> int:
    """Which epoch a key is, by the checks (0 has none); the relay's label is only a hint."""
    check = keyring.key_check(key)
    return next((e for e, record in answer.epochs.items() if record.check == check), 0)


def _open_account_copy(library_id: str, answer: KeysAnswer, wrap_key: bytes | None) -> tuple[int, bytes] | None:
    if wrap_key is None or answer.wrapped_key is None:
        return None
    try:
        key = crypto.unwrap_library_key(wrap_key, answer.wrapped_key, library_id)
    except RelayTampered:
        return None  # the password changed since this device's login: its wrap key is not current
    return _epoch_of(answer, key), key


async def ring_at_login(lib: LibraryCalls, client: RelayClient, key: bytes, wrap_key: bytes, library_id: str) -> Ring:
    """The ring of a device that just unwrapped the account's copy (of library `library_id`) with the
    password: every older key by the chain, and newer ones from its own sealed copies (a device
    logging in again)."""
    answer = await client.keys()
    top = _epoch_of(answer, key)
    ring = Ring(top, _walk(library_id, answer, top, key))
    if answer.key_epoch > ring.epoch:
        await lib.call(_take_newer, ring, answer, wrap_key, library_id)
    return ring


async def refresh(lib: LibraryCalls, client: RelayClient, ring: Ring, answer: KeysAnswer | None = None) -> KeysAnswer:
    """Take in the key epochs the relay has beyond the ring (saved); returns the relay's answer."""
    answer = answer or await client.keys()
    if answer.key_epoch < ring.epoch:
        raise RelayError(
            "The relay holds an older library key than this device (its data was purged or replaced); log in "
            "again ('p2psync account login')."
        )
    if answer.key_epoch > ring.epoch:
        await lib.call(_take_in, ring, answer)
    return answer


def _take_in(library: Library, ring: Ring, answer: KeysAnswer) -> None:
    before = ring.epoch
    try:
        _take_newer(library, ring, answer, read_wrap(library))
    finally:  # what was taken in is kept, even when the newest key could not be opened
        if ring.epoch > before:
            _keep_taken(library, ring, answer, before)


def _keep_taken(library: Library, ring: Ring, answer: KeysAnswer, before: int) -> None:
    with library.writing() as writer:
        relay_state.write_rows_in(library, ring_rows(ring))
        for epoch in range(ring.epoch, before, -1):
            if answer.epochs[epoch].by == library.device_id:  # ours, and a crash lost the rest
                _move_account_member(library, writer, ring.keys[epoch - 1], ring.keys[epoch])
                break


def _take_newer(
    library: Library, ring: Ring, answer: KeysAnswer, wrap_key: bytes | None, library_id: str | None = None
) -> None:
    library_id = library_id or library.library_id
    identity = library.identity()
    assert identity.private_key is not None
    found: list[tuple[int, bytes]] = []
    for epoch, sealed in answer.sealed.items():
        if epoch > ring.epoch:
            opened = keyring.open_as_member(identity.private_key, sealed, library_id, library.device_id, epoch)
            if opened is not None:
                found.append((epoch, opened))
    account = _open_account_copy(library_id, answer, wrap_key)
    if account is not None and account[0] > ring.epoch:
        found.append(account)
    if not found:
        raise RelayError(NEED_LOGIN)
    top, key = max(found)
    keys = _walk(library_id, answer, top, key)
    if keys[ring.epoch] != ring.current:
        raise RelayTampered("the new library key on the relay does not lead back to the key this device holds")
    ring.keys.update(keys)
    ring.epoch = top
    if top < answer.key_epoch:
        raise RelayError(NEED_LOGIN)


# --- carrying the library's removals to the relay ------------------------------------------------


@dataclass
class Enforced:
    revoked: list[str] = field(default_factory=list)  # devices this device revoked on the relay now
    rotated: int | None = None  # the key epoch this device put in force now
    relay_revoked: frozenset[str] = frozenset()  # every device the relay has revoked
    needed: bool = False  # a new key must be put in force (left for after the pull by `prepare`)


def removed(library: Library) -> set[str]:
    """The devices this library has removed (signed device.revoke, replicated)."""
    return set(relay_state.revocations(library))


def contested(library: Library, ring: Ring, relay_revoked: frozenset[str]) -> list[str]:
    """Devices the relay revoked that this library holds as members: a revocation the library does not back."""
    return sorted(relay_revoked - removed(library) - _account_ids(ring) - {library.device_id})


def _account_ids(ring: Ring) -> set[str]:
    return {crypto.account_identity(key).device_id for key in ring.keys.values()}


def check_not_removed(library: Library) -> None:
    """A device its own library says was removed (the removal came over the LAN) stops here."""
    if library.device_id in relay_state.revocations(library):
        raise DeviceRemoved()


async def prepare(lib: LibraryCalls, client: RelayClient, ring: Ring, email: str, tied: bool) -> Enforced:
    """Steps 1 to 4 above, before anything is pushed (relay.md §5). Step 5 is left to `enforce`
    after a pull (`needed` says so): the new key must come after every change set the others
    stored, lest moving the account's signing key refuse a device that joined through it."""
    await lib.call(check_not_removed)
    if not tied:
        await client.tie_device(await lib.call(proof, email))
    answer = await refresh(lib, client, ring)
    return await enforce(lib, client, ring, email, answer, rotate=False)


async def enforce(
    lib: LibraryCalls,
    client: RelayClient,
    ring: Ring,
    email: str,
    answer: KeysAnswer | None = None,
    rotate: bool = True,
) -> Enforced:
    """Revoke on the relay what the library removed, and put a new key in force if needed (and
    `rotate`). A device not yet a member of its library (joining) leaves both to the members."""
    await lib.call(check_not_removed)
    answer = answer or await refresh(lib, client, ring)
    done = Enforced(relay_revoked=answer.revoked)
    me = await lib.call(_me)
    if not me.member:
        return done
    identity, removed = me.identity, me.removed
    skip = _account_ids(ring) | {me.device_id}  # account keys never log in; they move by rotation
    for device, upto in sorted(removed.items()):
        if device not in answer.revoked and device not in skip:
            await client.revoke(device, upto, identity.sign(keyring.revoke_message(me.library_id, device, upto)))
            done.revoked.append(device)
    done.relay_revoked = answer.revoked | set(done.revoked)
    made_by = answer.epochs[ring.epoch].by if ring.epoch in answer.epochs else None
    done.needed = bool(answer.rotate or done.revoked or (made_by is not None and made_by in removed))
    if not rotate:
        return done
    for attempt in range(ROTATE_ATTEMPTS):
        if not (answer.rotate or done.revoked or (made_by is not None and made_by in removed)):
            break
        if attempt:
            done.revoked.clear()  # told the relay already; only its flag counts now
        try:
            done.rotated = await _rotate(lib, client, ring, email, answer, identity, removed)
            break
        except KeyEpochMoved:  # another device put a key in force meanwhile: take it, look again
            answer = await refresh(lib, client, ring)
            made_by = answer.epochs[ring.epoch].by if ring.epoch in answer.epochs else None
    if done.rotated is None:
        await _give_account_its_copy(lib, client, ring, answer)
    return done


@dataclass(frozen=True)
class _Me:
    """What `enforce` needs of this device and its library, read in one call."""

    member: bool
    device_id: str
    library_id: str
    identity: DeviceIdentity
    removed: dict[str, int]


def _me(library: Library) -> _Me:
    return _Me(
        relay_state.is_member(library, library.device_id),
        library.device_id,
        library.library_id,
        library.identity(),
        relay_state.revocations(library),
    )


async def _give_account_its_copy(lib: LibraryCalls, client: RelayClient, ring: Ring, answer: KeysAnswer) -> None:
    """The account's copy of the key in force, when the device that made it could not wrap it
    (it held no current wrap key): this device's wrap key opens the account's older copy."""
    wrap_key, library_id = await lib.call(_wrap_and_id)
    account = _open_account_copy(library_id, answer, wrap_key)
    if wrap_key is not None and account is not None and account[0] < ring.epoch == answer.key_epoch:
        await client.set_account_key(ring.epoch, crypto.wrap_library_key(wrap_key, ring.current, library_id))


def _wrap_and_id(library: Library) -> tuple[bytes | None, str]:
    return read_wrap(library), library.library_id


async def _rotate(
    lib: LibraryCalls,
    client: RelayClient,
    ring: Ring,
    email: str,
    answer: KeysAnswer,
    identity: DeviceIdentity,
    removed: Mapping[str, int],
) -> int:
    library_id, wrap, keys = await lib.call(_rotation_inputs)
    epoch = ring.epoch + 1
    new = crypto.new_library_key()
    members = {d: base64.b64decode(k) for d, k in keys.items() if d not in removed}
    relay_devices, _ = await client.devices()
    sealed: dict[str, bytes] = {}
    for known in relay_devices:
        key = members.get(known.device)
        if key is not None and key == known.proof.public_key and known.proof.verifies(email):
            sealed[known.device] = keyring.seal_for_member(
                known.proof.agreement_key, new, library_id, known.device, epoch
            )
    account = _open_account_copy(library_id, answer, wrap)
    wrap_key = wrap if account is not None else None
    check = keyring.key_check(new)
    await client.rotate(
        epoch,
        check,
        keyring.wrap_previous(new, ring.current, library_id, epoch),
        identity.sign(keyring.rotation_message(library_id, epoch, check)),
        crypto.wrap_library_key(wrap_key, new, library_id) if wrap_key else None,
        sealed,
    )
    old = ring.current
    ring.keys[epoch] = new
    ring.epoch = epoch
    await lib.call(_save_rotation, ring, old, new)
    return epoch


def _rotation_inputs(library: Library) -> tuple[str, bytes | None, dict[str, str]]:
    return library.library_id, read_wrap(library), relay_state.member_keys(library)


def _save_rotation(library: Library, ring: Ring, old: bytes, new: bytes) -> None:
    with library.writing() as writer:
        relay_state.write_rows_in(library, ring_rows(ring))
        _move_account_member(library, writer, old, new)


def _move_account_member(library: Library, writer: Writer, old_key: bytes, new_key: bytes) -> None:
    """The account's signing key follows the library key: the old one's membership is removed (it
    could introduce devices for whoever kept the old key), the new one is added if the old one was
    a member (the user may have ended joining by password)."""
    old, new = crypto.account_identity(old_key), crypto.account_identity(new_key)
    if not relay_state.is_member(library, old.device_id) or relay_state.is_removed(library, old.device_id):
        return
    writer.log(ops.device_revoke(old.device_id, 0))
    if not relay_state.is_member(library, new.device_id):
        public = DeviceIdentity.from_public(new.public_bytes)
        writer.log(device_add_op(public, crypto.ACCOUNT_DEVICE_NAME, library.identity(), library.library_id))
