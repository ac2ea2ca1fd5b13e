"""Dependencies point one way (docs/architecture.md, "Layers"): a module may import only from the
layers its package is allowed below. Read from the source with ast, so an import inside a
function or under TYPE_CHECKING counts as much as one at the top.

The rule table (package -> what of p2psync it may import, besides itself):

    errors, files, _speedups   nothing of p2psync (files: errors only)     the floor
    model                      errors                                      plain values
    engine                     model, _speedups                            the rules, sans-IO
    crypto                     engine, model, files                        device keys; low: no store/net/node/cli
    formats                    model                                       pure readers and writers, no store
    store                      crypto, engine, model, files, formats       SQL and the library's files
    net                        store, crypto, engine, model, files         the LAN peer protocol
    relay                      net, store, crypto, engine, model, files    the online account (device side
                                                                           link.py/keys.py use store and net;
                                                                           the server side uses neither)
    node                       relay, net, store, crypto, engine, model, files
    sync_status                relay, store, crypto, engine, model, files  what `status` shows (light)
    service_files              nothing of p2psync                          start-at-login files (pure)
    folder_warnings, opener    nothing of p2psync                          a risky library folder; open a file
    round_steps                net, sync_status                            what a round tells as it goes
    meeting                    node and what node may import               `sync --wait`
    regular_backups            store, engine, model, files                 the daemon's regular backups
    web                        node and everything node may import (not cli)
    cli                        everything

and everyone may import errors and the package's version (p2psync/__init__.py). engine/, model/
and formats/ never import sqlite3, asyncio, aiohttp or zeroconf: they hold no I/O. The sans-IO
modules of net/ (protocol.py, frames.py) import only engine and model, like the engine itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "p2psync"

BASE = {"errors", "__init__"}  # every layer may raise our errors and read __version__
_NODE = {"relay", "net", "store", "crypto", "engine", "model", "files", "formats"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "files": set(),
    "_speedups": set(),
    "__init__": set(),
    "__main__": {"cli"},
    "model": set(),
    "engine": {"model", "_speedups"},
    "crypto": {"engine", "model", "files"},
    "formats": {"model"},
    "store": {"crypto", "engine", "model", "files", "formats"},
    "net": {"store", "crypto", "engine", "model", "files"},
    "relay": {"net", "store", "crypto", "engine", "model", "files"},
    "watching": {"store"},  # the daemon's file notifications: it names paths (store/folder.py), no more
    "node": _NODE | {"watching", "round_steps", "sync_status", "regular_backups"},
    "regular_backups": {"store", "engine", "model", "files"},  # the daemon's regular backups: a thread, store below
    "round_steps": {"net", "sync_status"},  # what a round tells as it goes: node's values, below it
    "meeting": _NODE | {"node"},  # `sync --wait`: a node that waits for the others
    "sync_status": {"relay", "store", "crypto", "engine", "model", "files"},
    "service_files": set(),  # the start-at-login files `daemon install` writes: pure text, nothing below
    "folder_warnings": set(),  # a library folder in Dropbox or on a USB stick: paths and a probe, nothing below
    "opener": set(),  # `attachment open`: the desktop's opener, nothing below
    "web": _NODE | {"node", "round_steps", "sync_status", "folder_warnings"},
    "cli": _NODE
    | {"node", "web", "sync_status", "service_files", "folder_warnings", "opener", "meeting", "regular_backups"},
}
# The relay's server side runs without a library: it imports no store, net or node.
RELAY_SERVER = {
    "server", "requests", "storage", "storage_data", "storage_keys", "storage_migrations", "passwords",
    "account_api", "device_api", "operations", "metrics", "storage_blobs", "storage_pg", "storage_pg_data",
    "storage_pg_keys", "storage_pg_migrations", "storage_move",
}  # fmt: skip
SANS_IO = {"net/protocol.py", "net/frames.py"}
NO_IO = {"sqlite3", "asyncio", "aiohttp", "zeroconf"}
PURE = {"engine": NO_IO, "model": NO_IO, "formats": NO_IO}


def _package(path: Path) -> str:
    """The top-level part of p2psync a module belongs to: 'store', 'errors', 'node', ..."""
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the module, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = ["p2psync", *path.relative_to(ROOT).with_suffix("").parts]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*here[: len(here) - node.level], *([base] if base else [])])
            if base == "p2psync":  # `from p2psync import formats`: the names are modules
                found.extend((node.lineno, f"p2psync.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, base))
    return found


def _target(name: str) -> str | None:
    """The part of p2psync an import reaches, or None for a foreign module."""
    parts = name.split(".")
    if parts[0] != "p2psync":
        return None
    if len(parts) == 1 or parts[1] == "__version__":
        return "__init__"
    return parts[1]


MODULES = sorted(ROOT.rglob("*.py"))


def test_the_table_names_every_package() -> None:
    assert {_package(p) for p in MODULES} <= set(ALLOWED), "a new package needs its row in ALLOWED"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    package = _package(path)
    allowed = ALLOWED[package] | BASE | {package}
    if package == "relay" and path.stem in RELAY_SERVER:
        allowed = allowed - {"store", "net", "node"}
    if str(path.relative_to(ROOT)) in SANS_IO:
        allowed = ALLOWED["engine"] | {"engine"} | BASE
    wrong = []
    for line, name in _imports(path):
        target = _target(name)
        if target is not None and target not in allowed:
            wrong.append(f"line {line}: {name}")
        pure = NO_IO if str(path.relative_to(ROOT)) in SANS_IO else PURE.get(package, set())
        if target is None and name.split(".")[0] in pure:
            wrong.append(f"line {line}: {name} (no I/O in {package}/)")
    assert not wrong, f"{path.relative_to(ROOT)} ({package}) imports across the layers: {wrong}"
