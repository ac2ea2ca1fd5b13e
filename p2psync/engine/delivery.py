"""The order in which received change sets become ready: a pure state machine, no database.

A peer streams change sets oldest first per author, but one may depend on another author's
change set that has not arrived yet. The receiver offers each parsed change set here, then asks
for the next one to try, checks it against its own state (engine/changesets.check) and reports
the outcome back. How the parts move:

  offer(cs)         queues it, unless its author was rejected in this receive (then it is dropped:
                    an author's later change sets continue a chain that was refused).
  next()            the next queued change set worth checking now, or None when nothing can move.
                    Queued change sets are tried in arrival order, in passes; within a pass an
                    author whose earliest queued change set still waits is skipped (its later
                    ones cannot apply before it). A pass that applied something starts another,
                    since what it applied may be what others waited for.
  settle(cs, out)   reports the check's Outcome: NEW (applied) or DUPLICATE leave the queue;
                    WAITING stays, and its author is skipped for the rest of the pass.
  reject(author)    the check refused a change set: it and every queued one of its author go,
                    and later offers of that author are dropped.
  waiting           how many are still queued (they wait for dependencies that did not come).

The store (store/sync.py) wraps each check in a savepoint and writes what applies; this object
only decides the order, so the same order holds for every store and can be tested alone.
"""

from __future__ import annotations

from p2psync.engine.changesets import ChangeSet, Outcome


class Delivery:
    """The queue of change sets received but not yet applied (see the module docstring)."""

    def __init__(self) -> None:
        self._queue: list[ChangeSet] = []  # arrival order
        self._rejected: set[str] = set()  # authors refused in this receive
        self._pass: list[ChangeSet] = []  # the current pass: a snapshot of the queue
        self._at = 0  # position in the current pass
        self._stuck: set[str] = set()  # authors whose earliest queued change set waits, this pass
        self._progress = False  # something was applied in this pass
        self._trying: ChangeSet | None = None

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def offer(self, cs: ChangeSet) -> bool:
        """Queue a parsed change set; False if it was dropped (its author was rejected)."""
        assert self._trying is None, "settle() or reject() the change set in hand first"
        if cs.author in self._rejected:
            return False
        self._queue.append(cs)
        self._start_pass()  # a new arrival may be what the queue waited for
        return True

    def next(self) -> ChangeSet | None:
        """The next change set to check, or None: none can become ready until more arrive.
        Each one returned must be answered by settle() or reject() before the next call."""
        assert self._trying is None, "settle() or reject() the change set in hand first"
        while True:
            while self._at < len(self._pass):
                cs = self._pass[self._at]
                self._at += 1
                if cs.author in self._stuck or cs.author in self._rejected:
                    continue
                self._trying = cs
                return cs
            if not (self._progress and self._queue):
                return None
            self._start_pass()

    def settle(self, cs: ChangeSet, outcome: Outcome) -> None:
        """Report what checking the change set from next() gave."""
        self._answer(cs)
        if outcome == Outcome.WAITING:
            self._stuck.add(cs.author)
            return
        self._queue.remove(cs)
        if outcome == Outcome.NEW:
            self._progress = True

    def reject(self, cs: ChangeSet) -> None:
        """The check refused this change set: drop it and every queued or later one of its author."""
        self._answer(cs)
        self._rejected.add(cs.author)
        self._queue = [queued for queued in self._queue if queued.author != cs.author]

    def _answer(self, cs: ChangeSet) -> None:
        assert cs is self._trying, "answer the change set next() gave"
        self._trying = None

    def _start_pass(self) -> None:
        self._pass = list(self._queue)
        self._at = 0
        self._stuck = set()
        self._progress = False
