"""engine/delivery.py alone: the order in which received change sets become ready, with no store."""

from __future__ import annotations

from collections.abc import Callable

from p2psync.engine.changesets import ChangeSet, Outcome
from p2psync.engine.delivery import Delivery


def cs(author: str, first: int, needs: dict[str, int] | None = None) -> ChangeSet:
    return ChangeSet("lib", author, first, first, None, needs or {}, [], b"", f"{author}{first}".encode())


def drive(delivery: Delivery, outcome: Callable[[ChangeSet], Outcome | None], tried: list[str]) -> None:
    """What store/sync.py does around a delivery: check each change set it names (None: refused)."""
    while (item := delivery.next()) is not None:
        tried.append(f"{item.author}{item.first}")
        verdict = outcome(item)
        if verdict is None:
            delivery.reject(item)
        else:
            delivery.settle(item, verdict)


def test_dependencies_wait_until_they_arrive_and_an_author_waits_behind_its_first() -> None:
    held: dict[str, int] = {}

    def outcome(item: ChangeSet) -> Outcome:
        if held.get(item.author, 0) >= item.first:
            return Outcome.DUPLICATE
        if item.first != held.get(item.author, 0) + 1 or any(held.get(d, 0) < s for d, s in item.deps.items()):
            return Outcome.WAITING
        held[item.author] = item.first
        return Outcome.NEW

    delivery, tried = Delivery(), []
    for item in (cs("C", 1, {"A": 1}), cs("C", 2), cs("A", 1), cs("A", 1)):
        assert delivery.offer(item)
        drive(delivery, outcome, tried)
    # C2 is never tried while C1 waits; C1 is tried before A1 (arrival order), and once A1 applies
    # another pass applies C1, then C2. The second A1 is a duplicate.
    assert tried == ["C1", "C1", "C1", "A1", "C1", "C2", "A1"]
    assert held == {"A": 1, "C": 2} and delivery.waiting == 0


def test_a_rejected_author_is_dropped_now_and_later() -> None:
    delivery, tried = Delivery(), []
    for item in (cs("B", 1, {"A": 1}), cs("B", 2)):
        delivery.offer(item)
        drive(delivery, lambda _: Outcome.WAITING, tried)
    assert delivery.waiting == 2
    delivery.offer(cs("A", 1))
    drive(delivery, lambda item: Outcome.NEW if item.author == "A" else None, tried)
    assert tried == ["B1", "B1", "B1", "A1"]  # B1 refused: B2 goes without being checked
    assert delivery.waiting == 0
    assert not delivery.offer(cs("B", 3))


def test_a_pass_without_progress_ends() -> None:
    delivery, tried = Delivery(), []
    for item in (cs("A", 1, {"Z": 1}), cs("B", 1, {"Z": 1})):
        delivery.offer(item)
        drive(delivery, lambda _: Outcome.WAITING, tried)
    assert tried == ["A1", "A1", "B1"] and delivery.waiting == 2
