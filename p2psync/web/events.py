"""Pushing news to open pages: server-sent events on /events.

One hub per app. A watcher notices every change to the library, whoever made it (this app, the
command line, a sync of the daemon) by SQLite's data_version and, for change sets received or
sealed through this process's own connection (which data_version does not count: a sync this app
or its daemon ran), by the version vector; it publishes "library"; a sync
round publishes "sync" events as it goes. Each open page holds one EventSource; static/app.js
reloads the parts of the page marked `data-live` when "library" arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from p2psync.net.worker import LibraryWorker
from p2psync.store.library import Library
from p2psync.store.sync import version_vector

WATCH_SECONDS = 0.5
QUEUE_LIMIT = 100  # a page that stopped reading loses old news, never the server's memory
KEEPALIVE_SECONDS = 15.0


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any]

    def encode(self) -> bytes:
        return f"event: {self.kind}\ndata: {json.dumps(self.data)}\n\n".encode()


@dataclass
class EventHub:
    listeners: set[asyncio.Queue[Event | None]] = field(default_factory=set)  # None: the app stops
    _watcher: asyncio.Task[None] | None = None

    def publish(self, kind: str, **data: Any) -> None:
        event = Event(kind, data)
        for queue in self.listeners:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    def start(self, worker: LibraryWorker) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch(worker))

    async def stop(self) -> None:
        """Stop watching and end every open stream now (an open page would otherwise hold the
        app's shutdown until its next keepalive)."""
        for queue in self.listeners:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(None)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _watch(self, worker: LibraryWorker) -> None:
        version = await worker.call(_news)
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                current = await worker.call(_news)
            except Exception:  # a closing worker: the app is stopping
                return
            if current != version:
                version = current
                self.publish("library")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_LIMIT)
        self.listeners.add(queue)
        try:
            await response.write(b": hello\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if event is None:
                    break
                await response.write(event.encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.listeners.discard(queue)
        return response


def _news(library: Library) -> tuple[int, dict[str, int]]:
    """What changes when the library does: another connection's commit, or a change set that
    arrived or was sealed on this one (both cheap: a pragma and one indexed GROUP BY)."""
    return library.data_version(), dict(version_vector(library))
