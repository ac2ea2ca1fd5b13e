"""Chaos with real processes: three `p2psync daemon`s and a relay in network namespaces, edited
through the CLI while faults are injected from outside, then checked (tests/chaos/real_checks.py).

    python -m tests.chaos.real --minutes M [--seed S] [--json] [--keep DIR]

The schedule (tests/chaos/real_plan.py) comes from the seed alone. At the end the harness stops
injecting, heals everything, waits (bounded) until the devices agree, stops every process cleanly
and checks the folders. A failure prints the seed, the timeline of what was injected when, the
last lines of every process's log and the command that replays it. Needs root (namespaces,
tmpfs); without them it says why in one sentence and exits 0.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos import real_procs
from tests.chaos.real_checks import Ledger, Verdict, check, digests_now, sha256_file
from tests.chaos.real_plan import Step, plan
from tests.chaos.real_procs import Cluster
from tests.netns import LabError, netns_available

CONVERGE_LIMIT = 180.0  # seconds the devices get to agree once everything is healed
FAULTS = ("kill", "restart", "relay_restart", "cut", "heal", "netem", "netem_clear", "rate", "rate_clear")
FAULTS += ("disk_full", "disk_free")
RETRY = 2.0  # seconds before starting again a process that could not start
NOT_THERE = "No reference with id"  # an edit on a device the reference has not reached yet


@dataclass
class Outcome:
    seed: int
    seconds: float
    verdict: Verdict | None = None
    timeline: list[str] = field(default_factory=list)
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    failed_edits: collections.Counter[str] = field(default_factory=collections.Counter)
    surprises: list[str] = field(default_factory=list)  # processes that ended by themselves
    converged_after: float | None = None
    took: float = 0.0
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict is not None and self.verdict.ok and not self.surprises

    def replay(self) -> str:
        return f"python -m tests.chaos.real --minutes {self.seconds / 60:g} --seed {self.seed}"


class Runner:
    def __init__(self, cluster: Cluster, outcome: Outcome) -> None:
        self.c = cluster
        self.out = outcome
        self.ledger = Ledger()
        self.start = time.monotonic()
        self.down: set[int] = set()  # machines whose process we killed and will restart
        self.retry_at: dict[int, float] = {}  # machines whose process could not start: when to try again
        self.src = cluster.work / "src"
        self.src.mkdir(exist_ok=True)
        (cluster.work / "timeline.txt").write_text("")

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self.start:8.2f}s {text}"
        self.out.timeline.append(line)
        with (self.c.work / "timeline.txt").open("a") as f:  # as it happens: a long run can be followed
            f.write(line + "\n")

    def proc(self, machine: int) -> real_procs.Proc:
        return self.c.relay if machine == 4 else self.c.daemons[machine - 1]

    def run(self, steps: list[Step]) -> None:
        for step in steps:
            while (wait := step.at - (time.monotonic() - self.start)) > 0:
                time.sleep(min(wait, 0.25))
                self.watch()
            self.watch()
            if step.kind in FAULTS:
                self.out.counts[step.kind] += 1
                self.note(f"[{step.seq}] {step.describe()}")
                self.fault(step)
            else:
                self.out.counts["edit:" + step.kind] += 1
                if self.edit(step):
                    self.note(f"[{step.seq}] {step.describe()}: ok")
                else:
                    self.out.failed_edits[step.kind] += 1

    def watch(self) -> None:
        """A process that ended without being told to is noted and started again; one that
        could not start is tried again."""
        for machine, at in sorted(self.retry_at.items()):
            if time.monotonic() >= at:
                self.restart(machine)
        for machine in (1, 2, 3, 4):
            if machine in self.down:
                continue
            proc = self.proc(machine)
            code = proc.exited_by_itself()
            if code is not None:
                self.out.surprises.append(f"{proc.name} exited by itself (exit {code}); log:\n{proc.tail(20)}")
                self.note(f"!! {proc.name} exited by itself (exit {code}); starting it again")
                self.restart(machine)

    def restart(self, machine: int) -> None:
        """Start a process again; one that cannot start now (a daemon on a full disk says so and
        exits) is tried again every RETRY seconds by watch()."""
        proc = self.proc(machine)
        try:
            proc.start(self.c.lab)
        except AssertionError as exc:
            self.note(f"!! {proc.name} did not start: {str(exc)[:200]}; trying again in {RETRY:g} s")
            proc.kill()
            self.down.add(machine)
            self.retry_at[machine] = time.monotonic() + RETRY
            return
        self.down.discard(machine)
        self.retry_at.pop(machine, None)

    def fault(self, step: Step) -> None:
        lab, m = self.c.lab, step.device
        try:
            if step.kind == "kill":
                self.proc(m).kill()
                self.down.add(m)
                self.retry_at.pop(m, None)  # down until its planned restart
            elif step.kind == "restart":
                self.restart(m)
            elif step.kind == "relay_restart":
                self.down.add(4)
                code = self.c.relay.stop()
                if code != 0:
                    self.out.surprises.append(f"the relay's clean stop exited {code}:\n{self.c.relay.tail(20)}")
                self.restart(4)
            elif step.kind == "cut":
                lab.cut(m)
            elif step.kind == "heal":
                lab.heal(m)
            elif step.kind == "netem":
                self.netem(m, step.value)
            elif step.kind == "netem_clear":
                lab.netem(m, "")
            elif step.kind == "rate":
                if not lab.limit_rate(m, step.value):
                    self.note("   (no tbf qdisc here: not limited)")
            elif step.kind == "rate_clear":
                lab.limit_rate(m, None)
            elif step.kind == "disk_full":
                self.note(f"   filler wrote {real_procs.fill(self.c.disk)} B")
            elif step.kind == "disk_free":
                real_procs.free(self.c.disk)
        except LabError as exc:
            self.note(f"!! {step.kind} failed: {exc}")

    def netem(self, machine: int, spec: str) -> None:
        """Delay and loss with tc netem; where the kernel has no netem, a token bucket so small
        that bursts are dropped (loss without the delay)."""
        try:
            self.c.lab.netem(machine, spec)
        except LabError as exc:
            lossy = ["tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "256kbit", "burst", "4kb"]
            done = self.c.lab.run(machine, [*lossy, "latency", "5ms"], timeout=10)
            self.note(f"   no netem here ({str(exc)[-40:]}): a lossy token bucket instead (exit {done.returncode})")

    # --- edits ----------------------------------------------------------------------------------

    def cli(self, step: Step, *args: str | Path) -> str | None:
        done = self.c.cli(step.device, *args)
        if done.returncode != 0:
            self.note(f"[{step.seq}] {step.describe()}: exit {done.returncode}: {done.stderr.strip()[-200:]}")
            return None
        return done.stdout

    def edit(self, step: Step) -> bool:
        ledger = self.ledger
        if step.kind == "add":
            out = self.cli(step, "ref", "add", "--title", step.value)
            ledger.added[step.ref] = out is not None
            if out is not None:
                ledger.ref_ids[step.ref] = out.strip()
            ledger.record(step.seq, step.device, step.ref, "title", step.value, out is not None)
            return out is not None
        if step.kind == "rename":
            out = self.cli(step, "library", "rename", step.value)
            ledger.record(step.seq, step.device, -1, "library.name", step.value, out is not None)
            return out is not None
        ref_id = ledger.ref_ids.get(step.ref)
        if ref_id is None:
            return False  # its `ref add` failed: nothing to act on
        if step.kind == "edit":
            option = {"title": ["--title"], "journal": ["--journal"], "year": ["--year"]}.get(step.field)
            args = [*option, step.value] if option else ["--field", f"{step.field}={step.value}"]
            done = self.c.cli(step.device, "ref", "edit", ref_id, *args)
            out = done.stdout if done.returncode == 0 else None
            if out is None:
                self.note(f"[{step.seq}] {step.describe()}: exit {done.returncode}: {done.stderr.strip()[-200:]}")
            if out is not None or NOT_THERE not in done.stderr:  # (that one certainly wrote nothing)
                ledger.record(step.seq, step.device, step.ref, step.field, step.value, out is not None)
        elif step.kind == "trash":
            out = self.cli(step, "ref", "rm", ref_id)
        elif step.kind == "restore":
            out = self.cli(step, "trash", "restore", ref_id)
        elif step.kind == "group_add":
            out = self.cli(step, "group", "add", step.value, ref_id)
            if out is None and self.cli(step, "group", "create", step.value) is not None:
                out = self.cli(step, "group", "add", step.value, ref_id)
        elif step.kind == "group_remove":
            out = self.cli(step, "group", "remove", step.value, ref_id)
        elif step.kind == "attach":
            name = step.field.split(":", 1)[1]
            source = self.src / f"{step.seq}-{name}"
            source.write_bytes(content(step.value, step.size))
            out = self.cli(step, "attach", ref_id, source, "--name", name)
            ledger.record(step.seq, step.device, step.ref, step.field, sha256_file(source), out is not None)
        elif step.kind == "append":
            return self.append(step, ref_id)
        else:
            raise ValueError(f"unknown step {step.kind}")
        return out is not None

    def append(self, step: Step, ref_id: str) -> bool:
        """Append to an attachment in place, as a PDF reader saving an annotation does."""
        name = step.field.split(":", 1)[1]
        out = self.c.cli(step.device, "attachment", "path", ref_id, name)
        if out.returncode != 0:
            return False  # not on this device (yet): nothing was written
        path = Path(out.stdout.strip())
        try:
            with path.open("ab") as f:
                f.write(content(step.value, step.size))
            value, acked = sha256_file(path), True
        except OSError as exc:
            self.note(f"[{step.seq}] {step.describe()}: {exc}")
            value, acked = "", False
        self.ledger.record(step.seq, step.device, step.ref, step.field, value, acked)
        return acked

    # --- the end ----------------------------------------------------------------------------------

    def heal_all(self) -> None:
        self.note("end of faults: healing everything")
        real_procs.free(self.c.disk)
        for m in (1, 2, 3, 4):
            self.c.lab.heal(m)
            self.c.lab.netem(m, "")
        for m in sorted(self.down):
            self.restart(m)

    def converge(self) -> float | None:
        """Seconds until two looks in a row, 2 s apart, find the same library everywhere."""
        begin = time.monotonic()
        last: list[str] | None = None
        while time.monotonic() - begin < CONVERGE_LIMIT:
            self.watch()
            now = digests_now(self.c.libraries)
            if now is not None and len(set(now)) == 1 and now == last:
                return time.monotonic() - begin
            last = now
            time.sleep(2.0)
        return None


def content(value: str, size: int) -> bytes:
    """`size` bytes determined by `value` (the plan's random hex)."""
    out = b""
    block = value.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return out[:size]


def run(seed: int, seconds: float, keep: Path | None = None) -> Outcome:
    outcome = Outcome(seed, seconds)
    began = time.monotonic()
    work = keep if keep is not None else Path(tempfile.mkdtemp(prefix="p2psync-chaos-"))
    cluster = real_procs.build(work)
    runner = Runner(cluster, outcome)
    try:
        runner.note(f"seed {seed}: {seconds:g} s of edits and faults")
        runner.run(plan(seed, seconds))
        runner.heal_all()
        outcome.converged_after = runner.converge()
        runner.note(
            f"converged after {outcome.converged_after:.1f} s"
            if outcome.converged_after is not None
            else f"not converged within {CONVERGE_LIMIT:g} s"
        )
        for daemon in cluster.daemons:
            code = daemon.stop()
            if code != 0:
                outcome.surprises.append(f"{daemon.name}'s clean stop exited {code}:\n{daemon.tail(20)}")
        cluster.relay.stop()
        outcome.logs = {p.name: p.tail(40) for p in cluster.processes()}
        outcome.verdict = check(cluster.libraries, work / "relay", runner.ledger)
        if keep is not None:  # device 3's library lives on the tmpfs, unmounted below
            shutil.copytree(cluster.libraries[2], work / "c", dirs_exist_ok=True)
    finally:
        cluster.close()
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    outcome.took = time.monotonic() - began
    return outcome


def report(outcome: Outcome) -> str:
    faults = {k: v for k, v in sorted(outcome.counts.items()) if not k.startswith("edit:")}
    edits = {k[5:]: v for k, v in sorted(outcome.counts.items()) if k.startswith("edit:")}
    lines = [
        f"seed {outcome.seed}: {'PASS' if outcome.ok else 'FAIL'} in {outcome.took:.0f} s "
        f"({outcome.seconds:g} s of chaos, converged after "
        f"{'-' if outcome.converged_after is None else f'{outcome.converged_after:.1f} s'})",
        f"faults: {faults}",
        f"edits: {edits} (failed: {dict(sorted(outcome.failed_edits.items()))})",
    ]
    if not outcome.ok:
        problems = outcome.verdict.problems if outcome.verdict else ["the run did not finish"]
        lines += ["", "PROBLEMS:", *problems[:40], *outcome.surprises, "", "TIMELINE (faults and failed edits):"]
        lines += [
            t for t in outcome.timeline if ("] " in t and _is_fault_or_failure(t)) or "!!" in t or "converged" in t
        ]
        for name, log in outcome.logs.items():
            lines += ["", f"--- last lines of {name}:", log]
        lines += ["", f"replay: {outcome.replay()}"]
    return "\n".join(lines)


def _is_fault_or_failure(line: str) -> bool:
    kind = line.split("] ", 1)[1].split(" ", 1)[0]
    return kind in FAULTS or ": exit " in line


def as_json(outcome: Outcome) -> dict[str, object]:
    return {
        "seed": outcome.seed,
        "ok": outcome.ok,
        "seconds": outcome.seconds,
        "took": round(outcome.took, 1),
        "converged_after": outcome.converged_after,
        "counts": dict(sorted(outcome.counts.items())),
        "failed_edits": dict(sorted(outcome.failed_edits.items())),
        "problems": (outcome.verdict.problems if outcome.verdict else []) + outcome.surprises,
        "timeline": outcome.timeline,
        "replay": outcome.replay(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.real", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="how long to inject faults")
    parser.add_argument("--seed", type=int, help="the schedule's seed (default: a random one, printed first)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--keep", type=Path, help="keep the libraries, logs and timeline in this folder")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be more than 0")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    print(f"seed {seed}", file=sys.stderr if args.json else sys.stdout, flush=True)
    reason = netns_available()
    if reason is not None:
        print(f"Skipped: real-process chaos needs network namespaces, and {reason}.")
        return 0
    outcome = run(seed, args.minutes * 60, args.keep)
    print(json.dumps(as_json(outcome), indent=2) if args.json else report(outcome))
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
