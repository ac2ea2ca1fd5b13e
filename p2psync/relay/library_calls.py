"""How the relay client reaches the library: every database call is `await lib.call(function,
*args)`, run as function(library, *args).

The daemon passes its net/worker.py LibraryWorker, so the library's blocking SQLite work runs on
the worker's thread and the event loop keeps serving the LAN peers while the relay round waits on
the network. A caller that holds a Library and has nothing else to serve (the CLI, scripts, the
tests) passes `OnThisThread(library)`: the same calls, made at once on the caller's thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from p2psync.store.library import Library

T = TypeVar("T")


class LibraryCalls(Protocol):
    """What the relay client needs of a library: LibraryWorker has it."""

    async def call(self, function: Callable[..., T], *args: Any) -> T: ...

    async def next_batch(self, items: Iterator[T], count: int) -> list[T]: ...


class OnThisThread:
    """A LibraryCalls for a Library used on the caller's own thread."""

    def __init__(self, library: Library) -> None:
        self.library = library

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        return function(self.library, *args)

    async def next_batch(self, items: Iterator[T], count: int) -> list[T]:
        return [item for _, item in zip(range(count), items, strict=False)]
