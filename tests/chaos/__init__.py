"""Chaos testing (issue 24): randomized whole-system runs, minimized when they fail.

Two harnesses, both explained in docs/testing.md:
- a deterministic simulation of 3 to 6 devices and a relay in one process, on seeded schedules
  (`python -m tests.chaos.run`);
- real processes in network namespaces: daemons, a relay and the CLI, with faults injected from
  outside (`python -m tests.chaos.real`).
"""
