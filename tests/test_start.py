"""A fast start (docs/performance.md, "Start-up"): local commands import neither the network nor
the heavy cryptography, so `p2psync --version` or `p2psync ref list` starts in tens of
milliseconds instead of the 0.6 s that importing aiohttp, zeroconf, the pairing code and the
relay client took. Each command runs in a real process whose exit hook writes `sys.modules`, so
an import that creeps back in fails here, not in a stopwatch months later.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from p2psync.cli import COMMANDS, cli
from p2psync.relay import crypto as relay_crypto
from p2psync.relay import state as relay_state
from p2psync.store.library import Library

# Run like the console script, then write the names of the imported modules to argv[1].
HOOK = (
    "import atexit, json, sys\n"
    "out = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
    "from p2psync.cli import main\n"
    "main()\n"
)
# Whole packages a local command must not import: the network, pairing and the relay's client.
FORBIDDEN_PACKAGES = ("aiohttp", "zeroconf", "spake2", "ifaddr", "ssl", "rich", "sqlite_utils", "p2psync.net")
# The heavy parts of cryptography: certificates (TLS), the AEADs and KDFs (pairing, the relay).
# Ed25519 and PEM for the device key are light and the store needs them.
FORBIDDEN_CRYPTO = (
    "cryptography.x509",
    "cryptography.hazmat.primitives.ciphers.aead",
    "cryptography.hazmat.primitives.kdf",
)
# What of the relay `status` may read: the link as recorded in the library, no client.
STATUS_RELAY = {"p2psync.relay", "p2psync.relay.state"}


def imported(tmp_path: Path, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    subprocess.run([sys.executable, "-c", HOOK, str(out), *args], check=True, capture_output=True)
    return set(json.loads(out.read_text()))


def offending(modules: set[str], allowed_relay: set[str]) -> list[str]:
    def under(name: str, package: str) -> bool:
        return name == package or name.startswith(package + ".")

    bad = [m for m in modules if any(under(m, p) for p in (*FORBIDDEN_PACKAGES, *FORBIDDEN_CRYPTO))]
    bad += [m for m in modules if under(m, "p2psync.relay") and m not in allowed_relay]
    return sorted(bad)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("start") / "lib"
    with Library.create(path, name="Start") as lib:
        ref = lib.add_reference({"title": "On start-up", "authors": [{"family": "Quick", "given": "A."}]})
    return path, ref


@pytest.mark.parametrize(
    "command",
    [["--version"], ["ref", "list", "--limit", "20"], ["ref", "show", "REF"], ["info"], ["status"]],
    ids=lambda c: " ".join(c),
)
def test_local_commands_import_no_network(tmp_path: Path, library: tuple[Path, str], command: list[str]) -> None:
    path, ref = library
    args = [ref if a == "REF" else a for a in command]
    if command != ["--version"]:
        args += ["--library", str(path)]
    modules = imported(tmp_path, *args)
    allowed_relay = STATUS_RELAY if command == ["status"] else set()
    assert offending(modules, allowed_relay) == [], f"p2psync {' '.join(command)} imports the network"


def test_a_linked_library_status_reads_no_client(tmp_path: Path) -> None:
    """With a relay link recorded, status still imports no HTTP client (only the key derivation)."""
    path = tmp_path / "linked"
    with Library.create(path) as lib:
        lib.db.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('relay_url', 'https://relay.example'), "
            "('relay_email', 'a@example.org'), ('relay_key', ?)",
            ["A" * 43 + "="],
        )
    modules = imported(tmp_path, "status", "--library", str(path))
    allowed = {*STATUS_RELAY, "p2psync.relay.crypto", "p2psync.relay.kdf"}
    assert "p2psync.relay.crypto" in modules  # it did derive the account's device id
    bad = [m for m in offending(modules, allowed) if not m.startswith("cryptography.hazmat.primitives.")]
    assert bad == [], "status on a linked library imports the relay client"


def test_the_lazy_table_holds_every_command() -> None:
    """Each name in COMMANDS loads the command of that name, and a command module defines no
    command that the table forgets."""
    for name, (module, _attribute) in COMMANDS.items():
        assert cli.commands[name].name == name, (name, module)
    assert sorted(cli.list_commands(None)) == sorted(COMMANDS)  # type: ignore[arg-type]


def test_the_link_state_reads_keys_of_the_relay_length() -> None:
    assert relay_state.KEY_BYTES == relay_crypto.KEY_BYTES
