"""The RelayStorage contract (relay/storage.py), one suite run on both backends: SQLite with blob
files, and PostgreSQL (a real server the suite starts: tests/pg_support.py). Each Protocol
method's answers and refusals, that a refusal changes nothing, and the rules under concurrency:
two connections pushing one device's next change set (exactly one wins), chunk puts racing for
the last bytes of a quota (exact), the same through two storage objects (two relay processes'
worth of connections) on PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from p2psync.relay.storage import (
    AlreadyBound,
    ChangeSetIn,
    EmailTaken,
    Gap,
    QuotaExceeded,
    RelayStorage,
    SqliteStorage,
)
from p2psync.relay.storage_keys import DeviceRecord, DeviceRevoked, EpochMoved, EpochRecord, NotBound

DEV_A = "a" * 52
DEV_B = "b" * 52
DEV_C = "c" * 52
CHUNK = [f"{n:064x}" for n in range(64)]
T0 = 1_800_000_000.0


class Backend:
    """Opens storages of one test's store: on PostgreSQL each `open` is another pool of connections
    (as another relay process holds); SQLite allows one per folder, shared by the threads."""

    def __init__(self, kind: str, make: Callable[[], RelayStorage]) -> None:
        self.kind, self._make = kind, make
        self.opened: list[RelayStorage] = []

    def open(self) -> RelayStorage:
        if self.kind == "sqlite" and self.opened:
            return self.opened[0]
        storage = self._make()
        self.opened.append(storage)
        return storage

    def many(self, count: int) -> list[RelayStorage]:
        return [self.open() for _ in range(count)]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        chosen = Backend("sqlite", lambda: SqliteStorage(tmp_path / "relay"))
    else:
        url = request.getfixturevalue("pg_url")
        from p2psync.relay.storage_pg import PostgresStorage

        chosen = Backend("postgresql", lambda: PostgresStorage(url, pool_size=4))
    yield chosen
    for storage in chosen.opened:
        storage.close()


@pytest.fixture
def store(backend: Backend) -> RelayStorage:
    return backend.open()


def account_of(store: RelayStorage, email: str = "a@x.test") -> str:
    return store.create_account(email, b"s" * 16, b"h" * 32, T0)


def cs(device: str, first: int, last: int | None = None, blob: bytes = b"blob", key: int = 0) -> ChangeSetIn:
    return ChangeSetIn(device, first, first if last is None else last, blob, key)


def device_record(device: str, when: float = T0) -> DeviceRecord:
    return DeviceRecord(device, b"P" * 32, b"A" * 32, int(when), b"S" * 64, when)


# --- accounts, logins, tokens ------------------------------------------------------------------


def test_accounts_are_one_per_email_and_keep_their_login(store: RelayStorage) -> None:
    account = store.create_account("a@x.test", b"s" * 16, b"h" * 32, T0, '{"alg":"x"}')
    assert len(account) == 32
    with pytest.raises(EmailTaken):
        store.create_account("a@x.test", b"t" * 16, b"i" * 32, T0)
    record = store.login_record("a@x.test")
    assert record is not None
    assert (record.account, record.salt, record.login_hash) == (account, b"s" * 16, b"h" * 32)
    assert record.kdf == '{"alg":"x"}'
    assert store.login_record("nobody@x.test") is None
    info = store.account_info(account)
    assert (info.email, info.library_id, info.wrapped_key, info.used_bytes, info.change_sets, info.chunks) == (
        "a@x.test", None, None, 0, 0, 0,
    )  # fmt: skip
    assert (info.key_epoch, info.wrapped_epoch) == (0, 0)
    with pytest.raises(KeyError):
        store.account_info("0" * 32)


def test_failed_logins_are_limited_per_email_and_per_client_in_a_window(store: RelayStorage) -> None:
    for n in range(5):
        claim = store.claim_login("a@x", "c1", 1000.0 + n)
        assert claim.wait is None and claim.attempt is not None  # counted as failed until released
    assert store.claim_login("a@x", "c2", 1010.0).wait == 890
    refused = store.claim_login("b@x", "c1", 1010.0)  # the client's five too
    assert (refused.wait, refused.attempt) == (890, None)
    right = store.claim_login("b@x", "c2", 1010.0)
    assert right.wait is None
    store.release_claim(right)  # the right key: not a failure
    store.release_claim(refused)  # nothing to take back
    assert store.claim_login("a@x", "c3", 1900.5).wait is None  # the oldest left the window
    assert store.claim_login("a@x", "c3", 1900.6).wait == 1  # five again: 1001 leaves at 1901
    for n in range(4):  # released claims never count
        store.release_claim(store.claim_login("d@x", "c9", 2000.0 + n))
    assert store.claim_login("d@x", "c9", 2010.0).wait is None


def test_signups_are_limited_per_client(store: RelayStorage) -> None:
    for n in range(3):
        assert store.claim_signup("c1", T0 + n, 3, 3600.0).wait is None
    assert store.claim_signup("c1", T0 + 10, 3, 3600.0).wait == 3590
    taken_back = store.claim_signup("c2", T0 + 10, 1, 3600.0)
    assert taken_back.wait is None
    store.release_claim(taken_back)  # a sign-up that made no account
    assert store.claim_signup("c2", T0 + 11, 1, 3600.0).wait is None
    assert store.claim_signup("c1", T0 + 3600.5, 3, 3600.0).wait is None


def test_tokens_expire_are_tied_and_end(store: RelayStorage) -> None:
    account = account_of(store)
    store.add_token(account, b"t1" * 16, T0 + 100, T0, DEV_A)
    store.add_token(account, b"t2" * 16, T0 + 100, T0)
    session = store.token_session(b"t1" * 16)
    assert session is not None and (session.account, session.expires, session.device, session.revoked_by) == (
        account, T0 + 100, DEV_A, None,
    )  # fmt: skip
    assert store.token_session(b"xx" * 16) is None
    assert store.tie_token(b"t2" * 16, DEV_B) is True  # a token of no device ties itself once
    assert store.tie_token(b"t2" * 16, DEV_C) is False
    assert store.tie_token(b"t1" * 16, DEV_B) is False
    assert store.tie_token(b"zz" * 16, DEV_B) is False
    store.delete_token(b"t1" * 16)
    assert store.token_session(b"t1" * 16) is None
    # long-expired tokens are forgotten when a new one is made, recently expired ones answer "expired"
    store.add_token(account, b"t3" * 16, T0 + 1, T0)
    store.add_token(account, b"t5" * 16, T0 + 20 * 86400, T0)
    store.add_token(account, b"t4" * 16, T0 + 90 * 86400, T0 + 40 * 86400)
    assert store.token_session(b"t3" * 16) is None and store.token_session(b"t2" * 16) is None
    session = store.token_session(b"t5" * 16)
    assert session is not None and session.expires == T0 + 20 * 86400


def test_password_change_ends_every_other_token_and_kdf_upgrade_keeps_them(store: RelayStorage) -> None:
    account = account_of(store)
    for name in (b"k", b"o", b"p"):
        store.add_token(account, name * 32, T0 + 100, T0, DEV_A)
    store.change_password(account, b"S" * 16, b"H" * 32, b"ignored: unbound", b"k" * 32, '{"v":2}')
    record = store.login_record("a@x.test")
    assert record is not None and (record.salt, record.login_hash, record.kdf) == (b"S" * 16, b"H" * 32, '{"v":2}')
    assert store.account_info(account).wrapped_key is None  # an unbound account keeps no wrapped key
    assert store.token_session(b"k" * 32) is not None
    assert store.token_session(b"o" * 32) is None and store.token_session(b"p" * 32) is None
    store.bind(account, "l" * 16, b"W1")
    store.add_token(account, b"q" * 32, T0 + 100, T0, DEV_A)
    store.set_login(account, b"U" * 16, b"V" * 32, b"W2", '{"v":3}')
    assert store.account_info(account).wrapped_key == b"W2"
    assert store.token_session(b"q" * 32) is not None and store.token_session(b"k" * 32) is not None


def test_bind_once_then_same_or_refused(store: RelayStorage) -> None:
    account = account_of(store)
    assert store.bind(account, "l" * 16, b"wrapped") == "new"
    assert store.bind(account, "l" * 16, b"other") == "same"
    with pytest.raises(AlreadyBound) as refused:
        store.bind(account, "m" * 16, b"wrapped")
    assert refused.value.library_id == "l" * 16
    assert store.account_info(account).wrapped_key == b"wrapped"


# --- change sets -------------------------------------------------------------------------------


def test_push_in_order_duplicates_gaps_and_pull(store: RelayStorage) -> None:
    account = account_of(store)
    assert store.state(account) == ({}, 0)
    done = store.push(account, [cs(DEV_A, 1, 3, b"one"), cs(DEV_B, 1, 1, b"two"), cs(DEV_A, 4, 4, b"three")], None)
    assert (done.stored, done.duplicates, done.last_num) == (3, 0, 3)
    assert store.state(account) == ({DEV_A: 4, DEV_B: 1}, 3)
    again = store.push(account, [cs(DEV_A, 1, 3, b"one"), cs(DEV_A, 5, 5, b"four")], None)
    assert (again.stored, again.duplicates, again.last_num) == (1, 1, 4)
    for bad in ([cs(DEV_A, 7)], [cs(DEV_A, 2, 3)], [cs(DEV_A, 6), cs(DEV_A, 8)], [cs(DEV_C, 2)]):
        with pytest.raises(Gap):
            store.push(account, bad, None)
    with pytest.raises(Gap) as gap:
        store.push(account, [cs(DEV_B, 2, 2, b"ok"), cs(DEV_A, 9)], None)  # the good item goes too
    assert (gap.value.device, gap.value.head, gap.value.first) == (DEV_A, 5, 9)
    assert store.state(account) == ({DEV_A: 5, DEV_B: 1}, 4)
    items, more = store.pull(account, 0, 10, 1 << 20)
    assert [(i.num, i.device, i.first, i.last, i.blob) for i in items] == [
        (1, DEV_A, 1, 3, b"one"), (2, DEV_B, 1, 1, b"two"), (3, DEV_A, 4, 4, b"three"), (4, DEV_A, 5, 5, b"four"),
    ] and not more  # fmt: skip
    page, more = store.pull(account, 1, 2, 1 << 20)
    assert [i.num for i in page] == [2, 3] and more
    page, more = store.pull(account, 0, 10, 4)  # at least one item, then within the byte limit
    assert [i.num for i in page] == [1] and more
    assert store.pull(account, 4, 10, 1 << 20) == ([], False)
    info = store.account_info(account)
    assert (info.change_sets, info.used_bytes) == (4, len(b"onetwothreefour"))


def test_push_checks_quota_and_key_epoch_whole(store: RelayStorage) -> None:
    account = account_of(store)
    store.push(account, [cs(DEV_A, 1, 1, b"x" * 60)], 100)
    with pytest.raises(QuotaExceeded) as over:
        store.push(account, [cs(DEV_A, 2, 2, b"x" * 30), cs(DEV_A, 3, 3, b"x" * 30)], 100)
    assert (over.value.used, over.value.quota, over.value.needed) == (60, 100, 60)
    with pytest.raises(EpochMoved):
        store.push(account, [cs(DEV_A, 2, 2, b"x", key=1)], None)
    assert store.state(account) == ({DEV_A: 1}, 1)
    assert store.push(account, [cs(DEV_A, 1, 1, b"x" * 60)], 60).duplicates == 1  # a duplicate needs no room


def test_chunks_have_put_get_once_within_quota(store: RelayStorage) -> None:
    account = account_of(store)
    assert store.have_chunks(account, [CHUNK[0], CHUNK[1]]) == [False, False]
    assert store.put_chunk(account, CHUNK[0], b"c" * 40, 100) is True
    assert store.put_chunk(account, CHUNK[0], b"c" * 40, 100) is False  # once per id
    assert store.have_chunks(account, [CHUNK[1], CHUNK[0], CHUNK[0]]) == [False, True, True]
    assert store.get_chunk(account, CHUNK[0]) == (b"c" * 40, 0)
    assert store.get_chunk(account, CHUNK[1]) is None
    with pytest.raises(QuotaExceeded):
        store.put_chunk(account, CHUNK[1], b"d" * 61, 100)
    with pytest.raises(EpochMoved):
        store.put_chunk(account, CHUNK[1], b"d" * 10, 100, key_epoch=2)
    assert store.put_chunk(account, CHUNK[2], b"c" * 40, 100) is True  # the same bytes under another id
    info = store.account_info(account)
    assert (info.chunks, info.used_bytes) == (2, 80)
    other = account_of(store, "b@x.test")
    assert store.have_chunks(other, [CHUNK[0]]) == [False] and store.get_chunk(other, CHUNK[0]) is None


def test_purge_empties_the_account_but_never_reuses_a_num(store: RelayStorage) -> None:
    account = account_of(store)
    store.bind(account, "l" * 16, b"wrapped")
    store.push(account, [cs(DEV_A, 1, 2, b"abc"), cs(DEV_A, 3, 3, b"de")], None)
    store.put_chunk(account, CHUNK[0], b"chunk", None)
    store.add_token(account, b"t" * 32, T0 + 100, T0, DEV_A)
    done = store.purge(account)
    assert (done.change_sets, done.chunks, done.bytes) == (2, 1, 10)
    info = store.account_info(account)
    assert (info.library_id, info.wrapped_key, info.used_bytes, info.change_sets, info.chunks) == (None, None, 0, 0, 0)
    assert store.state(account) == ({}, 2) and store.get_chunk(account, CHUNK[0]) is None
    assert store.token_session(b"t" * 32) is not None  # the login stays
    assert store.bind(account, "m" * 16, b"w2") == "new"
    assert store.push(account, [cs(DEV_A, 1, 1, b"abc")], None).last_num == 3
    assert store.put_chunk(account, CHUNK[0], b"chunk", None) is True
    assert store.get_chunk(account, CHUNK[0]) == (b"chunk", 0)
    assert [i.blob for i in store.pull(account, 0, 10, 1 << 20)[0]] == [b"abc"]


# --- devices and keys --------------------------------------------------------------------------


def test_devices_register_and_revocation_cuts_one_off(store: RelayStorage) -> None:
    account = account_of(store)
    store.bind(account, "l" * 16, b"wrapped")
    store.register_device(account, device_record(DEV_A, T0))
    store.register_device(account, device_record(DEV_B, T0 + 1))
    store.register_device(account, DeviceRecord(DEV_A, b"P" * 32, b"N" * 32, int(T0) + 5, b"T" * 64, T0 + 9))
    devices, revocations = store.devices(account)
    assert [(d.device, d.agreement_key, d.registered) for d in devices] == [
        (DEV_A, b"N" * 32, T0), (DEV_B, b"A" * 32, T0 + 1),
    ] and revocations == []  # fmt: skip
    assert store.public_key(account, DEV_A) == b"P" * 32 and store.public_key(account, DEV_C) is None
    store.add_token(account, b"b" * 32, T0 + 100, T0, DEV_B)
    store.add_token(account, b"n" * 32, T0 + 100, T0)  # a login of no device
    store.push(account, [cs(DEV_B, 1, 2, b"kept"), cs(DEV_B, 3, 3, b"dropped!"), cs(DEV_A, 1, 1, b"a")], None)
    done = store.revoke(account, DEV_A, DEV_B, 2, b"sig", T0 + 10)
    assert (done.already, done.dropped) == (False, 1)
    assert store.revoke(account, DEV_A, DEV_B, 2, b"sig", T0 + 11).already is True
    session = store.token_session(b"b" * 32)
    assert session is not None and session.revoked_by == DEV_A
    assert store.token_session(b"n" * 32) is None  # nobody can tell whose it was
    assert store.state(account)[0] == {DEV_A: 1, DEV_B: 2}
    assert store.account_info(account).used_bytes == len(b"kepta")
    assert [i.blob for i in store.pull(account, 0, 10, 1 << 20)[0]] == [b"kept", b"a"]
    with pytest.raises(DeviceRevoked):
        store.register_device(account, device_record(DEV_B))
    _, revocations = store.devices(account)
    assert [(r.device, r.by, r.upto, r.signature) for r in revocations] == [(DEV_B, DEV_A, 2, b"sig")]


def test_key_epochs_rotate_one_at_a_time(store: RelayStorage) -> None:
    account = account_of(store)
    record = EpochRecord(1, DEV_A, b"check", b"prev", b"sig")
    with pytest.raises(NotBound):
        store.rotate(account, record, None, [], T0)
    store.bind(account, "l" * 16, b"wrapped0")
    store.revoke(account, DEV_A, DEV_C, 0, b"sig", T0)
    view = store.keys(account, DEV_A)
    assert (view.epoch, view.rotate, view.revoked, view.wrapped_key, view.epochs, view.sealed) == (
        0, True, [DEV_C], b"wrapped0", [], [],
    )  # fmt: skip
    kept = store.rotate(account, record, b"wrapped1", [(DEV_A, b"sA"), (DEV_B, b"sB"), (DEV_C, b"sC")], T0)
    assert kept == 2  # none for the revoked device
    with pytest.raises(EpochMoved):
        store.rotate(account, EpochRecord(3, DEV_A, b"c", b"p", b"s"), None, [], T0)
    view = store.keys(account, DEV_B)
    assert (view.epoch, view.rotate, view.wrapped_key, view.wrapped_epoch) == (1, False, b"wrapped1", 1)
    assert view.epochs == [record] and view.sealed == [(1, b"sB")]
    assert store.keys(account, DEV_C).sealed == []
    with pytest.raises(EpochMoved):
        store.push(account, [cs(DEV_A, 1, 1, b"x", key=0)], None)
    assert store.push(account, [cs(DEV_A, 1, 1, b"x", key=1)], None).stored == 1
    assert store.pull(account, 0, 10, 1 << 20)[0][0].key_epoch == 1
    assert store.put_chunk(account, CHUNK[0], b"c", None, key_epoch=1) is True
    assert store.get_chunk(account, CHUNK[0]) == (b"c", 1)
    store.rotate(account, EpochRecord(2, DEV_A, b"c2", b"p2", b"s2"), None, [], T0)
    assert store.set_account_key(account, 1, b"old") is True  # not older than the copy's epoch 1
    assert store.set_account_key(account, 0, b"older") is False
    assert store.set_account_key(account, 3, b"future") is False
    assert store.set_account_key(account, 2, b"w2") is True
    assert store.keys(account, DEV_A).wrapped_key == b"w2"
    store.purge(account)
    view = store.keys(account, DEV_A)
    assert (view.epoch, view.epochs, view.sealed, view.revoked) == (0, [], [], [DEV_C])  # a removed device stays out


def test_ping_answers(store: RelayStorage) -> None:
    store.ping()


# --- across connections and processes ----------------------------------------------------------


def _race(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(0..count-1) at once on threads; each result, or the exception it raised."""
    start = threading.Barrier(count)

    def one(n: int) -> Any:
        start.wait(timeout=30)
        try:
            return work(n)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def test_two_pushes_of_a_devices_next_change_set_exactly_one_wins(backend: Backend) -> None:
    stores = backend.many(2)
    account = account_of(stores[0])
    for round_ in range(10):
        head = stores[0].state(account)[0].get(DEV_A, 0)
        # the same first sequence number, different cuts: never both, never neither
        results = _race(2, lambda n, head=head: stores[n % 2].push(account, [cs(DEV_A, head + 1, head + 1 + n)], None))
        won = [r for r in results if not isinstance(r, Exception)]
        lost = [r for r in results if isinstance(r, Exception)]
        assert len(won) == 1 and won[0].stored == 1, (round_, results)
        assert len(lost) == 1 and isinstance(lost[0], Gap), (round_, results)
    _heads, last_num = stores[0].state(account)
    assert last_num == 10 and stores[0].account_info(account).change_sets == 10
    nums = [i.num for i in stores[0].pull(account, 0, 100, 1 << 20)[0]]
    assert nums == list(range(1, 11))


def test_chunk_puts_racing_for_a_quota_store_exactly_what_fits(backend: Backend) -> None:
    stores = backend.many(2)
    account = account_of(stores[0])
    results = _race(12, lambda n: stores[n % 2].put_chunk(account, CHUNK[n], b"q" * 100, 500))
    assert sum(r is True for r in results) == 5
    assert sum(isinstance(r, QuotaExceeded) for r in results) == 7, results
    info = stores[0].account_info(account)
    assert (info.used_bytes, info.chunks) == (500, 5)


def test_pushes_racing_for_a_quota_store_exactly_what_fits(backend: Backend) -> None:
    stores = backend.many(2)
    account = account_of(stores[0])
    devices = [chr(ord("d") + n) * 52 for n in range(8)]
    results = _race(8, lambda n: stores[n % 2].push(account, [cs(devices[n], 1, 1, b"p" * 100)], 300))
    assert sum(not isinstance(r, Exception) for r in results) == 3
    assert sum(isinstance(r, QuotaExceeded) for r in results) == 5, results
    info = stores[0].account_info(account)
    assert (info.used_bytes, info.change_sets) == (300, 3)
    assert sorted(stores[0].state(account)[0].values()) == [1, 1, 1] and stores[0].state(account)[1] == 3


def test_the_same_chunk_put_at_once_is_stored_once(backend: Backend) -> None:
    stores = backend.many(2)
    account = account_of(stores[0])
    results = _race(6, lambda n: stores[n % 2].put_chunk(account, CHUNK[0], b"same", None))
    assert sorted(results) == [False] * 5 + [True]
    assert stores[0].account_info(account).used_bytes == 4


def test_one_account_per_email_when_made_at_once(backend: Backend) -> None:
    stores = backend.many(2)
    results = _race(6, lambda n: stores[n % 2].create_account("same@x.test", b"s" * 16, b"h" * 32, T0))
    assert sum(isinstance(r, str) for r in results) == 1
    assert sum(isinstance(r, EmailTaken) for r in results) == 5


def test_binds_at_once_bind_one_library(backend: Backend) -> None:
    stores = backend.many(2)
    account = account_of(stores[0])
    results = _race(4, lambda n: stores[n % 2].bind(account, chr(ord("a") + n) * 16, b"w"))
    assert results.count("new") == 1 and sum(isinstance(r, AlreadyBound) for r in results) == 3


def test_guesses_at_once_through_two_processes_never_pass_the_login_limit(backend: Backend) -> None:
    stores = backend.many(2)
    results = _race(12, lambda n: stores[n % 2].claim_login("v@x.test", f"client{n}", T0 + n / 100))
    assert sum(claim.wait is None for claim in results) == 5, results
    results = _race(12, lambda n: stores[n % 2].claim_login(f"e{n}@x.test", "one-client", T0 + n / 100))
    assert sum(claim.wait is None for claim in results) == 5, results


def test_sign_ups_at_once_through_two_processes_never_pass_their_limit(backend: Backend) -> None:
    stores = backend.many(2)
    results = _race(10, lambda n: stores[n % 2].claim_signup("one-client", T0, 3, 3600.0))
    assert sum(claim.wait is None for claim in results) == 3, results
