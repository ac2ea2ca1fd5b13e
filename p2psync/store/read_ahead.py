"""Change sets arriving for a receive (store/sync.receive), parsed ahead of the writer: in a
child process (store/prepare.Preparer) once a receive is large, else on this thread or, while a
COMMIT holds no GIL, on another."""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterable, Iterator

from p2psync.engine import changesets as cs_engine
from p2psync.store.prepare import Preparer


class ReadAhead:
    """Parsed change sets, in order, from one of two places.

    Past `parallel_after` bytes a Preparer (store/prepare.py) is started; once it is ready the
    wires go to it, up to LIMIT ahead, and its answers are taken in order. Until then (and if it
    fails, from the wire it failed on) they are parsed here: before each commit, prefetch() takes
    the next few wires from their source (on this thread: a source may read a database), and
    parse_ahead, run on another thread while the commit holds no GIL, parses them."""

    LIMIT = 24  # wires taken ahead at most (each at most MAX_BYTES)

    def __init__(
        self,
        wires: Iterable[bytes],
        library_id: str,
        parallel_after: int | None = None,
        shared: Preparer | None = None,
    ) -> None:
        self.wires = iter(wires)
        self.library_id = library_id
        self.raw: deque[bytes] = deque()  # taken, not parsed yet
        self.ahead: deque[cs_engine.ChangeSet | cs_engine.ChangeSetRejected] = deque()  # parsed, in order
        self.parallel_after = parallel_after
        self.taken_bytes = 0
        self.preparer: Preparer | None = shared
        self.shared = shared is not None  # the caller's, for several receives: closed by the caller
        self.submitted: deque[bytes] = deque()  # given to the preparer, not answered yet

    def prefetch(self) -> None:
        if self._preparing():
            return  # the child parses ahead already
        while len(self.raw) + len(self.ahead) < self.LIMIT:
            wire = self._take()
            if wire is None:
                return
            self.raw.append(wire)

    def parse_ahead(self, stop: threading.Event) -> None:
        while not stop.is_set() and self.raw:
            try:
                parsed = parse(self.raw[0], self.library_id)
            except BaseException:  # left in raw: the receiving thread parses it again and raises, in order
                return
            self.ahead.append(parsed)
            self.raw.popleft()

    def __iter__(self) -> Iterator[cs_engine.ChangeSet | cs_engine.ChangeSetRejected]:
        while True:
            if self.ahead:
                yield self.ahead.popleft()
            elif self._preparing():
                self._submit_ahead()
                if not self.submitted:
                    return
                sent = self.submitted.popleft()
                answer = self.preparer.answer(sent) if self.preparer is not None else None
                if answer is None:  # the child failed: this wire and the rest are parsed here
                    self.raw.extendleft(reversed([sent, *self.submitted]))
                    self.submitted.clear()
                    self.close()
                    continue
                yield answer
            else:
                wire = self.raw.popleft() if self.raw else self._take()
                if wire is None:
                    return
                yield parse(wire, self.library_id)

    def close(self) -> None:
        if self.preparer is not None:
            if not self.shared or self.submitted:  # (a shared one with answers unread is out of step: ended)
                self.preparer.close()
            self.preparer = None
            self.parallel_after = None  # not twice

    def _preparing(self) -> bool:
        return self.preparer is not None and self.preparer.ready()

    def _submit_ahead(self) -> None:
        assert self.preparer is not None
        while len(self.submitted) < self.LIMIT:
            wire = self.raw.popleft() if self.raw else self._take()
            if wire is None:
                return
            self.preparer.submit(wire)
            self.submitted.append(wire)

    def _take(self) -> bytes | None:
        """The next wire from the source, starting the preparer once enough has come."""
        wire = next(self.wires, None)
        if wire is None:
            return None
        self.taken_bytes += len(wire)
        if self.preparer is None and self.parallel_after is not None and self.taken_bytes > self.parallel_after:
            self.parallel_after = None  # once
            with contextlib.suppress(OSError):  # no interpreter to start (an embedded Python): parse here
                self.preparer = Preparer(self.library_id)
        return wire


def parse(wire: bytes, library_id: str) -> cs_engine.ChangeSet | cs_engine.ChangeSetRejected:
    # (Parsing on a second thread while this one writes was tried: the GIL hand-offs around
    # every SQLite call cost more than the overlap gained. Only a COMMIT, one long call without
    # the GIL, is overlapped: ReadAhead.)
    try:
        return cs_engine.parse(wire, library_id)
    except cs_engine.ChangeSetRejected as exc:
        return exc
