"""Executes a schedule: real `Library` objects on real SQLite files, one process, one thread.

Time is virtual (p2psync.engine.clock.now_ms is patched: virtual time plus the current device's
skew), and ids and device keys come from the seed, so a seed replays step for step. A step that
names something that does not exist is a no-op. The network is a queue of answers: Send(src, dst)
puts what dst's version vector lacks on it (if src, by the membership rule the LAN server applies,
answers dst), Deliver applies one (if dst, by the rule the client applies, accepts src).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import p2psync.store.library as library_module
from p2psync.crypto.identity import DeviceIdentity
from p2psync.engine import clock
from p2psync.engine.changesets import parse
from p2psync.errors import P2PSyncError
from p2psync.store import transfers
from p2psync.store.library import Library
from p2psync.store.peers import member_keys
from p2psync.store.sync import changesets_since, receive, seal, version_vector
from tests.chaos import model as m
from tests.chaos import schedule as s
from tests.chaos.relay_actor import RelayWorld

ATTACHMENT = "paper.pdf"
EPOCH_MS = 1_700_000_000_000  # virtual time starts here (2023): file mtimes set from it are old
STEP_MS = 7
PROGRESS_EVERY = 50  # SQLite VM steps between two progress-handler calls


@dataclass
class Message:
    src: int
    dst: int
    wires: list[bytes]


@dataclass
class Device:
    index: int
    path: Path
    lib: Library | None
    key: bytes
    device_id: str
    seq: int = 0  # this device's last log entry the model has recorded
    known: set[m.EntryId] = field(default_factory=set)
    skew_ms: int = 0
    pin: int | None = None  # the introducer a newcomer accepts before the membership arrives
    crash_after: int | None = None  # progress ticks left before the crash (armed)
    crashed: bool = False  # the crash fired: the library is dead until Restart
    annotations: dict[str, tuple[str, frozenset[m.EntryId]]] = field(default_factory=dict)  # ref -> (sha, seen)


class World:
    def __init__(self, tmp: Path, devices: int, seed: int, member_rule: bool = True) -> None:
        self.tmp = tmp
        self.rng = random.Random(seed * 7919 + 1)
        self.member_rule = member_rule  # False: members answer anyone (a planted bug)
        self.now = 0
        self.current: Device | None = None
        self.devices: list[Device] = []
        self.refs: list[str] = []
        self.queue: list[Message] = []
        self.partition: dict[int, int] = {}
        self.model = m.Model()
        self.trace: list[str] = []
        self.mtime_count = 0
        self.checked_all = False
        self.relay: RelayWorld | None = None  # started by the first relay step
        self.linked: set[int] = set()  # devices that signed up or logged in to the relay
        self._undo: list[Callable[[], None]] = []
        self._patch()
        founder = self._new_device(Library.create, "D0")
        for k in range(1, devices):
            newcomer = self._new_device(
                lambda p, name: Library.create(p, name, found=False, library_id=founder.library_id), f"D{k}"
            )
            self.devices[k].pin = 0
            key = newcomer.identity().public_bytes
            self._local(self.devices[0], lambda lib, key=key, k=k: lib.add_device(key, f"D{k}"))
        for _ in range(2):  # everyone paired and synced before the schedule starts
            for a in self.devices:
                for b in self.devices:
                    if a is not b:
                        self._deliver(Message(a.index, b.index, self._answer(a, b)), setup=True)

    # --- the patches that make a run deterministic ------------------------------------------

    def _patch(self) -> None:
        def now_ms() -> int:
            skew = self.current.skew_ms if self.current is not None else 0
            return EPOCH_MS + self.now + skew

        def new_id() -> str:
            return base64.b32encode(self.rng.randbytes(10)).decode("ascii").lower()

        def generate() -> DeviceIdentity:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            return DeviceIdentity(Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32)))

        saved_now, saved_id, saved_gen = clock.now_ms, library_module.new_id, DeviceIdentity.__dict__["generate"]
        clock.now_ms = now_ms  # type: ignore[assignment]
        library_module.new_id = new_id  # type: ignore[attr-defined]
        DeviceIdentity.generate = staticmethod(generate)  # type: ignore[method-assign]

        def undo() -> None:
            clock.now_ms = saved_now  # type: ignore[assignment]
            library_module.new_id = saved_id  # type: ignore[attr-defined]
            DeviceIdentity.generate = saved_gen  # type: ignore[method-assign]

        self._undo.append(undo)

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        for device in self.devices:
            if device.lib is not None:
                with contextlib.suppress(sqlite3.Error):
                    device.lib.db.conn.set_progress_handler(None, 0)  # (an armed crash not fired)
                    device.lib.close()
                device.lib = None
        while self._undo:
            self._undo.pop()()

    # --- devices ---------------------------------------------------------------------------------

    def _new_device(self, make: Callable[[Path, str], Library], name: str) -> Library:
        index = len(self.devices)
        path = self.tmp / f"d{index}"
        device = Device(index, path, None, b"", "")
        self.devices.append(device)
        self.current = device
        lib = make(path, name)
        device.lib, device.key, device.device_id = lib, lib.identity().public_bytes, lib.device_id
        self._observe(device, frozenset())
        device.known = m.held(lib)
        return lib

    def _live(self, index: int) -> Device | None:
        if 0 <= index < len(self.devices) and self.devices[index].lib is not None:
            return self.devices[index]
        return None

    def _arm(self, device: Device) -> None:
        assert device.lib is not None

        def tick() -> int:
            if device.crash_after is None:
                return 0
            device.crash_after -= 1
            if device.crash_after < 0:
                device.crashed = True
            return 1 if device.crashed else 0

        device.lib.db.conn.set_progress_handler(tick, PROGRESS_EVERY)

    def _die(self, device: Device) -> None:
        """The crash fired: drop the connection without a commit (SIGKILL rolls back the same)."""
        assert device.lib is not None
        with contextlib.suppress(sqlite3.Error):
            device.lib.db.conn.close()
        device.lib = None
        device.annotations.clear()  # (the files stay; what they hold is looked at after Restart)
        self.trace.append(f"  device {device.index} crashed")

    def _restart(self, device: Device) -> None:
        if device.lib is not None:
            device.crash_after = None
            device.lib.db.conn.set_progress_handler(None, 0)
            return
        device.crashed, device.crash_after = False, None
        self.current = device
        device.lib = Library.open(device.path)
        # Entries a crashed step committed before it died are still this device's writes.
        self._observe(device, frozenset(device.known))
        device.known = m.held(device.lib)

    # --- running a library call on a device ------------------------------------------------------

    def _local(self, device: Device, action: Callable[[Library], Any]) -> Any:
        """Run `action` on the device's library, as that device (its clock), recording the log
        entries it wrote. A P2PSyncError is a refused step (a no-op); the crash hook's
        interruption kills the device; anything else is a failure of the system."""
        before = frozenset(device.known)
        result = self._call(device, action)
        if device.lib is not None:
            self._call(device, lambda lib: self._observe(device, before))
        return result

    def _call(self, device: Device, action: Callable[[Library], Any]) -> Any:
        """`action` on the device's library as that device; None if refused or if it crashed."""
        assert device.lib is not None
        self.current = device
        try:
            result = action(device.lib)
        except P2PSyncError:
            result = None
        except Exception as exc:
            if not device.crashed:
                raise m.ChaosFailure("exception", f"{type(exc).__name__}: {exc}") from exc
            result = None
        if device.crashed:
            self._die(device)
            return None
        return result

    def _observe(self, device: Device, seen: frozenset[m.EntryId]) -> None:
        """Record the device's new own log entries as writes that had seen `seen`; an attachment
        written by an edit in place has seen what the version it edited had."""
        assert device.lib is not None
        for seq, op in m.new_entries(device.lib, device.seq):
            entry = (device.device_id, seq)
            writes = m.writes_of(entry, op, seen)
            for w in writes:
                annotated = device.annotations.pop(w.ref, None) if w.key == "@" + ATTACHMENT and w.ref else None
                if annotated is not None and annotated[0] == w.value:
                    w = m.Write(w.id, w.ref, w.key, w.value, annotated[1])
                self.model.add(w)
            device.known.add(entry)
            device.seq = seq

    # --- the network -------------------------------------------------------------------------------

    def _group(self, index: int) -> int:
        return self.partition.get(index, -1)

    def _answer(self, src: Device, dst: Device) -> list[bytes]:
        """What src sends dst, which asked with its version vector (nothing to a non-member)."""
        members = self._call(src, member_keys)
        if members is None or (self.member_rule and dst.key not in members):
            return []
        self._local(src, seal)  # (seal records files edited in place first, as every path does)
        theirs = self._call(dst, version_vector) if dst.lib is not None else None
        if src.lib is None or theirs is None:
            return []
        wires = self._call(src, lambda lib: list(changesets_since(lib, theirs)))
        return wires or []

    def _accepts(self, dst: Device, src: Device) -> bool:
        members = self._call(dst, member_keys)
        if members is None:
            return False
        if src.key in members:
            return True
        # A newcomer whose membership has not arrived yet takes its introducer's word (join pin).
        return dst.pin == src.index and dst.device_id not in members.values()

    def _deliver(self, message: Message, setup: bool = False) -> None:
        dst, src = self._live(message.dst), self.devices[message.src]
        if dst is None or not message.wires or not self._accepts(dst, src) or dst.lib is None:
            return
        report = self._local(dst, lambda lib: receive(lib, message.wires, peer=src.device_id, parallel=False))
        if dst.lib is not None:
            dst.known = self._call(dst, m.held) or dst.known
            if dst.lib is not None and report is not None and not setup:
                refused = [str(r["reason"]) for r in report.rejected]
                self.trace.append(
                    f"  {message.src}->{message.dst}: applied {report.applied}, duplicates {report.duplicates}, "
                    f"refused {refused}, waiting {report.waiting}"
                )

    # --- steps -------------------------------------------------------------------------------------

    def run(self, steps: list[s.Step]) -> None:
        for step in steps:
            self.now += STEP_MS
            self.trace.append(repr(step))
            self.step(step)

    def step(self, step: s.Step) -> None:
        dev = self._live(getattr(step, "dev", -1))
        if isinstance(step, s.AddRef) and dev:
            ref = self._local(dev, lambda lib: lib.add_reference({"title": f"t{len(self.refs)}"}))
            if ref is not None:
                self.refs.append(ref)
        elif isinstance(step, s.Edit) and dev and (ref := self._ref(step.ref)):
            self._local(dev, lambda lib: lib.edit_reference(ref, {step.field: step.value}))
        elif isinstance(step, s.Authors) and dev and (ref := self._ref(step.ref)):
            self._local(dev, lambda lib: lib.edit_reference(ref, {"authors": list(step.names)}))
        elif isinstance(step, s.Trash) and dev and (ref := self._ref(step.ref)):
            self._local(dev, lambda lib: lib.trash_reference(ref))
        elif isinstance(step, s.Restore) and dev and (ref := self._ref(step.ref)):
            self._local(dev, lambda lib: lib.restore_reference(ref))
        elif isinstance(step, s.EmptyTrash) and dev:
            self._local(dev, lambda lib: lib.empty_trash())
        elif isinstance(step, s.GroupCreate) and dev:
            self._local(dev, lambda lib: lib.create_group(step.name))
        elif isinstance(step, s.GroupRename) and dev:
            self._local(dev, lambda lib: lib.rename_group(step.name, step.new))
        elif isinstance(step, s.GroupDelete) and dev:
            self._local(dev, lambda lib: lib.delete_group(step.name))
        elif isinstance(step, s.GroupMember) and dev and (ref := self._ref(step.ref)):
            if step.add:
                self._local(dev, lambda lib: lib.add_to_group(step.name, [ref]))
            else:
                self._local(dev, lambda lib: lib.remove_from_group(step.name, [ref]))
        elif isinstance(step, s.SmartGroup) and dev:
            self._local(dev, lambda lib: lib.groups.create_smart("Smart " + step.name, step.query))
        elif isinstance(step, s.SetCreate) and dev:
            self._local(dev, lambda lib: lib.sets.create(step.name))
        elif isinstance(step, s.SetFile) and dev:
            self._local(dev, lambda lib: lib.groups.file_many([step.group], step.group_set))
        elif isinstance(step, s.SetDelete) and dev:
            self._local(dev, lambda lib: lib.sets.delete(step.name))
        elif isinstance(step, s.LibraryRename) and dev:
            self._local(dev, lambda lib: lib.rename(step.name))
        elif isinstance(step, s.Attach) and dev and (ref := self._ref(step.ref)):
            self._attach(dev, ref, step.content)
        elif isinstance(step, s.Annotate) and dev and (ref := self._ref(step.ref)):
            self._annotate(dev, ref, step.content)
        elif isinstance(step, s.Scan) and dev:
            self._local(dev, lambda lib: lib.scan_attachments())
        elif isinstance(step, s.FetchFiles) and dev and (src := self._live(step.src)) and src is not dev:
            self._fetch(dev, src)
        elif isinstance(step, s.RemoveDevice) and dev and (target := self._live(step.target)) and target is not dev:
            self._local(dev, lambda lib: lib.revoke_device(target.device_id))
        elif isinstance(step, s.PairNewDevice) and dev:
            self._pair(dev)
        elif isinstance(step, s.Send):
            self._send(step.src, step.dst)
        elif isinstance(step, (s.Deliver, s.Duplicate, s.Drop)) and self.queue:
            self._network(step)
        elif isinstance(step, s.Partition):
            self.partition = {d: g for g, members in enumerate(step.groups) for d in members}
        elif isinstance(step, s.Heal):
            self.partition = {}
        elif isinstance(step, s.Skew) and 0 <= step.dev < len(self.devices):
            self.devices[step.dev].skew_ms = step.hours * 3_600_000
        elif isinstance(step, s.Crash) and dev:
            dev.crash_after = step.after
            self._arm(dev)
        elif isinstance(step, s.Restart) and 0 <= step.dev < len(self.devices):
            self._restart(self.devices[step.dev])
        elif isinstance(step, s.RelaySync) and dev:
            self._relay_sync(dev)
        elif isinstance(step, s.AccountReset) and dev and dev.index in self.linked and self.relay is not None:
            self._local(dev, self.relay.reset_and_relink)
            self._relayed(dev)
        elif isinstance(step, s.RelayRestart) and self.relay is not None:
            self.relay.restart()

    # --- the relay (tests/chaos/relay_actor.py: a real relay server, the real client) -----------
    # The relay is on the internet: a partition of the devices' network does not cut it off.

    def _relay_sync(self, dev: Device) -> None:
        if self.relay is None:
            self.relay = RelayWorld(self.tmp / "relay")
        relay = self.relay
        if dev.index in self.linked:
            self._local(dev, relay.sync)
        elif self._local(dev, lambda lib: (relay.login if self.linked else relay.signup)(lib) or True):
            self.linked.add(dev.index)
        self._relayed(dev)

    def _relayed(self, dev: Device) -> None:
        if dev.lib is not None:
            dev.known = self._call(dev, m.held) or dev.known
            self.trace.append(f"  relay <-> {dev.index}: holds {len(dev.known)} entries")

    def snooped(self) -> dict[int, set[m.EntryId]]:
        """What the relay still hands each linked device as an attacker: the entries it can read."""
        out: dict[int, set[m.EntryId]] = {}
        if self.relay is None:
            return out
        for index in sorted(self.linked):
            device = self.devices[index]
            if device.lib is None:
                continue
            entries: set[m.EntryId] = set()
            for wire in self.relay.snoop(device.lib):
                with contextlib.suppress(Exception):  # (a wire it cannot parse gives it nothing)
                    cs = parse(wire, device.lib.library_id)
                    entries |= {(cs.author, seq) for seq in range(cs.first, cs.last + 1)}
            out[index] = entries
        return out

    def _ref(self, index: int) -> str | None:
        return self.refs[index] if 0 <= index < len(self.refs) else None

    def _attach(self, dev: Device, ref: str, content: bytes) -> None:
        source = self.tmp / "upload" / ATTACHMENT
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(content)
        if self._local(dev, lambda lib: lib.attach(ref, source)) is not None:
            dev.annotations.pop(ref, None)  # the file now holds what was attached

    def _annotate(self, dev: Device, ref: str, content: bytes) -> None:
        """Write into the attachment's file behind the library's back, as a PDF reader does."""
        assert dev.lib is not None
        path = dev.lib.attachment_file(ref, ATTACHMENT)
        if not path.is_file():
            return
        old = path.read_bytes()
        new = old + b"\n" + content
        sha_old, sha_new = hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()
        pending = dev.annotations.get(ref)
        seen = pending[1] if pending is not None else self.model.attachment_base(ref, ATTACHMENT, sha_old)
        path.write_bytes(new)
        # An mtime of its own, from virtual time (far in the past: no racy-write wait).
        self.mtime_count += 1
        stamp = (EPOCH_MS + self.mtime_count) * 1_000_000
        os.utime(path, ns=(stamp, stamp))
        dev.annotations[ref] = (sha_new, seen)

    def _fetch(self, dst: Device, src: Device) -> None:
        """What net/chunks.py does, in-process: dst lists the versions it lacks, src (if it counts
        dst a member, as its chunk server does) locates their chunks on its disk, dst writes each
        verified chunk into the partial file, seals it and lands it (store/transfers.py)."""
        if self._group(src.index) != self._group(dst.index) or not self._accepts(dst, src):
            return
        members = self._call(src, member_keys)
        if members is None or (self.member_rule and dst.key not in members):
            return
        for need in self._local(dst, transfers.needs) or []:
            names = [chunk[0] for chunk in need.chunks]
            locations = self._call(src, lambda lib, n=need, c=names: transfers.locate(lib, c, (n.ref_id, n.name)))
            if locations is None or None in locations:
                continue
            datas = transfers.read_chunks(locations)
            partial = Path(need.partial)
            partial.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as out:
                for (sha, size), data in zip(need.chunks, datas, strict=True):
                    if data is None or len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                        break
                    out.write(data)
            if transfers.seal_partial(need) and dst.lib is not None:
                self._local(dst, lambda lib, n=need: transfers.finish(lib, n))
            if dst.lib is None:
                return

    def _pair(self, introducer: Device) -> None:
        library_id = self._call(introducer, lambda lib: lib.library_id)
        if library_id is None:  # (it crashed)
            return
        k = len(self.devices)
        newcomer = self._new_device(
            lambda p, name: Library.create(p, name, found=False, library_id=library_id), f"D{k}"
        )
        self.devices[k].pin = introducer.index
        self._local(introducer, lambda lib: lib.add_device(newcomer.identity().public_bytes, f"D{k}"))

    def _send(self, src_index: int, dst_index: int) -> None:
        src, dst = self._live(src_index), self._live(dst_index)
        if src is None or dst is None or src is dst or self._group(src.index) != self._group(dst.index):
            return
        wires = self._answer(src, dst)
        if wires:
            self.queue.append(Message(src.index, dst.index, wires))

    def _network(self, step: s.Deliver | s.Duplicate | s.Drop) -> None:
        i = step.index % len(self.queue)
        message = self.queue[i]
        if isinstance(step, s.Duplicate):
            self.queue.append(Message(message.src, message.dst, list(message.wires)))
        elif isinstance(step, s.Drop):
            del self.queue[i]
        elif self._group(message.src) == self._group(message.dst):  # held while partitioned
            del self.queue[i]
            self._deliver(message)

    # --- the end -----------------------------------------------------------------------------------

    def quiesce(self, rounds: int = 4) -> None:
        """Heal everything, restart the dead, deliver what is queued, then let every device ask
        every other until nothing changes (bounded)."""
        self.partition = {}
        for device in self.devices:
            self._restart(device)
        for device in self.devices:  # a daemon looks for files edited in place when it starts
            if device.lib is not None:
                self._local(device, lambda lib: lib.scan_attachments())
        while self.queue:
            self._deliver(self.queue.pop(0))
        for _ in range(rounds):
            before = [len(d.known) for d in self.devices]
            for a in self.devices:
                for b in self.devices:
                    if a is not b and a.lib is not None and b.lib is not None:
                        self._deliver(Message(a.index, b.index, self._answer(a, b)))
            if self.relay is not None:
                for device in self.devices:
                    if device.index in self.linked and device.lib is not None:
                        self._local(device, self.relay.sync)
                        self._relayed(device)
            if before == [len(d.known) for d in self.devices]:
                return

    def check(self) -> bool:
        """The end checks (model.py); False if members could differ by design (limitation 2)."""
        libraries = {d.index: d.lib for d in self.devices if d.lib is not None}
        return m.check(self.model, libraries, self.refs, self.snooped())


@contextlib.contextmanager
def world(tmp: Path, devices: int, seed: int, member_rule: bool = True) -> Iterator[World]:
    w = World(tmp, devices, seed, member_rule)
    try:
        yield w
    finally:
        w.close()


def run_steps(steps: list[s.Step], tmp: Path, devices: int = 3, seed: int = 0, member_rule: bool = True) -> World:
    """Run a schedule's steps to the end and check; raises ChaosFailure. (The printed tests call it.)"""
    with world(tmp, devices, seed, member_rule) as w:
        w.run(steps)
        w.quiesce()
        w.checked_all = w.check()
        return w
