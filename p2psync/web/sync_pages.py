"""Sync Status: what sync has done with each device and the relay, attachments not here yet and
why, and "Sync now".

The page shows `sync_status(library)`, the very record `p2psync status` prints. "Sync now" runs
ONE round through the node's orchestrator (Node.sync_once: the members the daemon sees on the
LAN, if this app lives in a daemon, then every member at its remembered address, their
attachments, then the relay if linked), as a task of the app, one at a time. Its steps go to open
pages as "sync" server-sent events (static/sync.js shows them in a live region and a progress
bar); when the round is over, the watcher in events.py sees the new change sets and the page's
live parts reload by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from p2psync.errors import NetworkError, P2PSyncError
from p2psync.folder_warnings import folder_warnings
from p2psync.model.sizes import human_size
from p2psync.net.client import PeerSync
from p2psync.node import Node, SyncRound
from p2psync.relay import state as relay_link
from p2psync.round_steps import PeerDone, PeersPlanned, RelayDone, RoundStep
from p2psync.store.backup import backup_line
from p2psync.store.library import Library, iso
from p2psync.sync_status import sync_status
from p2psync.web.app import STATE, notice, page, redirect, run, state
from p2psync.web.events import EventHub

log = logging.getLogger("p2psync.web")
routes = web.RouteTableDef()
BYTES_EVERY = 0.25  # seconds between two attachment-progress events (a page needs no more)
MISSING_ON_PAGE = 50  # attachments listed; the rest are counted (status --json lists all)
BUSY = "A sync is already running; its progress is shown below."


@dataclass
class RoundLog:
    """What the last "Sync now" of this app said, for a page opened (or reloaded) afterwards."""

    started: str
    lines: list[str] = field(default_factory=list)
    finished: str | None = None
    summary: str = ""
    ok: bool = False
    usage: dict[str, Any] | None = None  # the relay account's usage, as the relay said it


@dataclass
class SyncRunner:
    """The app's one round at a time, and the log of the last."""

    task: asyncio.Task[None] | None = None
    last: RoundLog | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


_RUNNERS: weakref.WeakKeyDictionary[Node, SyncRunner] = weakref.WeakKeyDictionary()


def runner_of(node: Node) -> SyncRunner:
    return _RUNNERS.setdefault(node, SyncRunner())


def when(text: str | None) -> str:
    """An ISO 8601 time (UTC) as people read it."""
    if not text:
        return "never"
    return text[:19].replace("T", " ") + " UTC"


def _names(library: Library) -> dict[str, str]:
    return {d.device_id: d.name for d in library.members.listing()}


def peer_line(result: PeerSync | NetworkError, names: dict[str, str], device: str | None) -> tuple[bool, str]:
    """One tried address in words: who, and what moved or why not."""
    if isinstance(result, PeerSync):
        who = result.name or names.get(result.device or "", "a device")
        text = (
            f"{who} ({(result.device or '')[:7]}) at {result.address}: {result.received.applied} change sets in "
            f"({result.received.entries} changes), {result.sent.get('applied', 0)} out"
        )
        if result.received.rejected:
            text += f"; {len(result.received.rejected)} refused, see the problems below"
        return True, text
    who = names.get(device or "", "A device")
    return False, f"{who}: not synced: {result.message}"


def relay_line(step: RelayDone) -> tuple[bool, str] | None:
    if step.error is not None:
        return False, f"Relay: {step.error.message}"
    if step.report is None:
        return None  # not linked
    text = f"Relay {step.report.relay}: {step.report.sentence()}"
    if step.report.error:
        return False, f"{text}; {step.report.error}"
    return True, text


class RoundProgress:
    """Turns a round's steps into "sync" events for open pages and lines for the RoundLog."""

    def __init__(self, hub: EventHub, names: dict[str, str], entry: RoundLog, linked: bool) -> None:
        self.hub, self.names, self.entry, self.linked = hub, names, entry, linked
        self.total = 1  # steps: one per address, one for the attachments, one for the relay
        self.done = 0
        self.bytes_total = 0
        self.bytes_done = 0
        self._bytes_said = 0.0

    def say(self, step: str, text: str, ok: bool = True, **more: Any) -> None:
        if text:
            self.entry.lines.append(text)
        self.hub.publish("sync", step=step, text=text, ok=ok, done=self.done, total=self.total, **more)

    def step(self, event: RoundStep) -> None:
        if isinstance(event, PeersPlanned):
            self.total = len(event.targets) + 1 + int(self.linked)
            count = len(event.targets)
            self.say("planned", f"Devices to try: {count}." if count else "No device to reach on the network.")
        elif isinstance(event, PeerDone):
            self.done += 1
            ok, text = peer_line(event.result, self.names, event.address.device)
            self.say("peer", text, ok)
        elif isinstance(event, RelayDone):
            line = relay_line(event)
            if event.report is not None and event.report.usage:
                self.entry.usage = dict(event.report.usage)
            if line is not None:
                self.done = self.total
                self.say("relay", line[1], line[0])

    def plan(self, size: int, files: int) -> None:  # (the order fetch_attachments calls it in)
        self.bytes_total = size
        self.say("attachments", f"Attachments to fetch: {files} ({human_size(size)}).", bytes=0, bytes_total=size)

    def advance(self, count: int) -> None:
        self.bytes_done += count
        now = time.monotonic()
        if now - self._bytes_said >= BYTES_EVERY or self.bytes_done >= self.bytes_total:
            self._bytes_said = now
            self.hub.publish(
                "sync", step="bytes", text="", ok=True, done=self.done, total=self.total,
                bytes=self.bytes_done, bytes_total=self.bytes_total,
            )  # fmt: skip


def round_summary(done: SyncRound, linked: bool) -> tuple[bool, str]:
    """The round in one sentence, and whether anything it tried worked."""
    unique = list({id(r): r for r in done.peers}.values())  # a device reached at two addresses counts once
    synced = [r for r in unique if isinstance(r, PeerSync)]
    arrived = sum(r.received.applied for r in synced)
    parts = [f"{len(synced)} of {len(unique)} devices synced"] if unique else ["no device to reach on the network"]
    relay_ok = done.relay is not None and done.relay_error is None and not done.relay.error
    if linked:
        parts.append("the relay synced" if relay_ok else "the relay not synced")
        if done.relay is not None:
            arrived += done.relay.received.applied
    if done.attachments.files:
        parts.append(f"{done.attachments.files} attachment files in")
    parts.append(f"{arrived} change sets in")
    ok = bool(synced) or relay_ok
    return ok, ("Done: " if ok else "Finished, nothing synced: ") + ", ".join(parts) + "."


async def run_round(node: Node, hub: EventHub, entry: RoundLog) -> None:
    """One "Sync now": the node's round, told as it goes."""
    names = await node.worker.call(_names)
    linked = await node.worker.call(relay_link.is_linked)
    progress = RoundProgress(hub, names, entry, linked)
    progress.say("started", "Sync started.")
    try:
        lan = await node.members_on_lan()
        done = await node.sync_once(lan, on_step=progress.step, on_plan=progress.plan, on_bytes=progress.advance)
    except (P2PSyncError, OSError) as exc:  # the round itself failed (not a peer: those are in the result)
        entry.ok, entry.summary = False, f"The sync stopped: {getattr(exc, 'message', None) or exc}"
    except Exception:  # a bug: the page must still hear that the round is over
        log.exception("Sync now failed")
        entry.ok, entry.summary = False, "The sync stopped on an unexpected error; the app's log says more."
    else:
        entry.ok, entry.summary = round_summary(done, linked)
        for item in done.attachments.missing:
            progress.say("missing", f"Still missing: {item.name} of {item.ref}: {item.detail}", False)
    entry.finished = iso(int(time.time() * 1000))
    progress.done = progress.total
    progress.say("finished", entry.summary, entry.ok)
    hub.publish("library")  # whatever the watcher saw or not: the page shows the new state


@routes.get("/sync")
async def sync_page(request: web.Request) -> web.StreamResponse:
    status = await run(request, sync_status)
    runner = runner_of(state(request).node)
    # The same warnings as `init`, `pair` and the daemon's start (a few directory reads: off the loop).
    warnings = await asyncio.to_thread(folder_warnings, state(request).node.path)
    return page(
        request,
        "sync.html",
        overview=status,
        folder_warnings=warnings,
        backup_line=backup_line(status.last_backup),
        devices=status.devices,
        missing=status.missing_attachments[:MISSING_ON_PAGE],
        missing_more=max(0, len(status.missing_attachments) - MISSING_ON_PAGE),
        running=runner.running,
        last=runner.last,
        when=when,
    )


@routes.post("/sync")
async def sync_now(request: web.Request) -> web.StreamResponse:
    """Start one round; a second press while one runs says so and starts nothing."""
    web_state = state(request)
    runner = runner_of(web_state.node)
    wants_json = "application/json" in request.headers.get("Accept", "")
    if runner.running:
        if wants_json:
            return web.json_response({"started": False, "message": BUSY}, status=409)
        notice(request, BUSY)
        raise redirect("/sync")
    runner.last = RoundLog(started=iso(int(time.time() * 1000)) or "")
    runner.task = asyncio.get_running_loop().create_task(run_round(web_state.node, web_state.hub, runner.last))
    runner.task.add_done_callback(_log_failure)
    if wants_json:
        return web.json_response({"started": True, "message": "Sync started."}, status=202)
    notice(request, "Sync started; the progress is shown below.")
    raise redirect("/sync")


def _log_failure(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        if task.exception() is not None:
            log.error("Sync now failed", exc_info=task.exception())


async def on_shutdown(app: web.Application) -> None:
    """The app stops: a round still running is cut (every change set that arrived whole is kept)."""
    runner = _RUNNERS.get(app[STATE].node)
    if runner is not None and runner.task is not None and not runner.task.done():
        runner.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner.task
