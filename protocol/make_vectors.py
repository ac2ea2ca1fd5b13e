#!/usr/bin/env python3
"""Generate the p2psync/1 known-answer test vectors in protocol/vectors/.

Everything is fixed: Ed25519 keys come from fixed 32-byte seeds (seed(name) = SHA-256 of
"p2psync/1 test vector seed " + name), timestamps and object ids are constants, and Ed25519
signatures are deterministic, so two runs write byte-identical files.

The expected results are computed by protocol/vectors_model/, an independent model of the spec
written from protocol/*.md: it imports nothing from p2psync (canonical JSON, registers, the
operation check, change sets, the receive order: all modelled there), so the vectors check the
code instead of repeating it. tests/test_vectors.py runs the real code (and store) on the same
inputs and compares; a drift between the spec's model and the code fails there.

Usage: python protocol/make_vectors.py [--out DIR]      (default: protocol/vectors beside this file)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # vectors_model/ and relay_vectors.py, beside this file
import relay_key_vectors  # relay.md §5: devices and key epochs, written apart from p2psync
import relay_vectors
from vectors_model.basic_cases import canonical_vectors, identity_vectors, introduction_vectors
from vectors_model.changeset_cases import single_changeset_vectors
from vectors_model.chunking_cases import chunking_vectors
from vectors_model.op_cases import op_vectors
from vectors_model.register_cases import register_vectors
from vectors_model.rejection_cases import rejection_vectors
from vectors_model.scenario import chain_positions, run_scenario, scenario_vectors

# --- writing ---------------------------------------------------------------------------------------


def dump(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def build_all() -> dict[str, bytes]:
    chain_positions.clear()
    scenario = run_scenario()
    files: dict[str, Callable[[], Any]] = {
        "canonical.json": canonical_vectors,
        "identity.json": identity_vectors,
        "introduction.json": introduction_vectors,
        "changeset.json": lambda: single_changeset_vectors(scenario),
        "scenario.json": lambda: scenario_vectors(scenario),
        "rejections.json": lambda: rejection_vectors(scenario),
        "ops.json": op_vectors,
        "registers.json": register_vectors,
        "chunking.json": chunking_vectors,
        "relay_kdf.json": relay_vectors.kdf_vectors,  # protocol/relay_vectors.py: written apart from p2psync
        "relay_keys.json": relay_key_vectors.key_vectors,
    }
    return {name: dump(make()) for name, make in files.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "vectors")
    args = parser.parse_args(argv)
    outputs = build_all()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in outputs.items():
        (args.out / name).write_bytes(data)
    total = sum(len(d) for d in outputs.values())
    print(f"wrote {len(outputs)} vector files ({total:,} bytes) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
