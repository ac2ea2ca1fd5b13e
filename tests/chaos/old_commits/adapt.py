"""Copy this checkout's tests/chaos into a worktree of an older commit and adapt it to that
commit's API, to show the simulation finds bugs fixed later (docs/testing.md):

    git worktree add --detach /tmp/old fd12500^
    python tests/chaos/old_commits/adapt.py /tmp/old
    cd /tmp/old && python -m tests.chaos.run --seeds 600 --start 0 --no-shrink

Steps the old library cannot do become no-ops; the relay actor is swapped for one written
against the old relay API (relay_actor_before_8638958.py.txt: a .txt, since it imports what this
commit no longer has), or left out where even that differs.
"""

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHAOS = HERE.parent
old = Path(sys.argv[1])
dst = old / "tests/chaos"
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(CHAOS, dst, ignore=shutil.ignore_patterns("__pycache__", "real*.py", "old_commits"))
w = dst / "world.py"
s = w.read_text()
if "member_keys" in (old / "p2psync/net/protocol.py").read_text():
    s = s.replace("from p2psync.store.peers import member_keys", "from p2psync.net.protocol import member_keys")
# the chunk index took the file it serves for later
s = s.replace("transfers.locate(lib, c, (n.ref_id, n.name))", "transfers.locate(lib, c)")
# operations the old library does not have: no-ops
for name in (
    "lib.groups.create_smart(",
    "lib.sets.create(",
    "lib.groups.file_many(",
    "lib.sets.delete(",
    "lib.rename(",
):
    s = s.replace(f"lambda lib: {name}", f"lambda lib: None and {name}")
w.write_text(s)
print("adapted", dst)
if not (old / "p2psync/relay/keys.py").exists():  # before 8638958: simrelay's adaptation of the relay actor
    shutil.copy(HERE / "relay_actor_before_8638958.py.txt", dst / "relay_actor.py")
    print("relay actor: the adaptation for the code before 8638958")
if not (old / "p2psync/relay/kdf.py").exists():  # older still: a relay too different to drive; LAN only
    (dst / "relay_actor.py").write_text("class RelayWorld:  # adapted: no relay at this commit\n    pass\n")
    w.write_text(
        w.read_text().replace(
            "    def _relay_sync(self, dev: Device) -> None:\n",
            "    def _relay_sync(self, dev: Device) -> None:\n        return  # adapted: no relay at this commit\n",
        )
    )
    print("relay steps: no-ops (no relay this commit's API can be driven)")
lib_py = old / "p2psync/store/library.py"
if lib_py.exists() and "def _attachment_entries" in lib_py.read_text():  # before the library's rooms
    mo = dst / "model.py"
    mo.write_text(mo.read_text().replace("lib.attachments.entries(", "lib._attachment_entries("))
    print("model: attachment registers read through Library._attachment_entries")
if (old / "p2psync/relay/keys.py").exists() and not (old / "p2psync/relay/link_rules.py").exists():
    # 8638958 itself: keys, but the blocking link API
    ra = dst / "relay_actor.py"
    t = ra.read_text()
    for a, b in [
        (
            "from p2psync.relay import crypto, keys, link_rules, sync_round",
            "from p2psync.relay import crypto, keys, link as link_rules",
        ),
        ("from p2psync.relay.library_calls import OnThisThread\n", ""),
        ("from p2psync.relay.state import read_link", "from p2psync.relay.link import read_link"),
        ("_run(link_rules.login(", "(link_rules.login("),
        ("_run(sync_round.sync_with_relay(OnThisThread(lib)))", "link_rules.sync_with_relay(lib)"),
    ]:
        assert a in t, a
        t = t.replace(a, b)
    ra.write_text(t)
    print("relay actor: adapted to the blocking relay.link API")
