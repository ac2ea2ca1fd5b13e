"""The second part of `make demo`: pairing by mDNS alone, between two "machines" that are network
namespaces on a private bridge (tests/netns.py builds them; 198.18.0.0/24, nothing reaches the
real network). Runs only where namespaces can be made (root on Linux); says so and stops otherwise.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.netns import JsonLines, Lab, netns_available  # (after the path is set)

P2PSYNC = [sys.executable, "-m", "p2psync"]


def show(machine: str, argv: list[str], done: subprocess.CompletedProcess[str]) -> None:
    print(f"\033[1m{machine}$ p2psync {' '.join(argv)}\033[0m")
    print(done.stdout.rstrip() or done.stderr.rstrip())


def main() -> int:
    reason = netns_available()
    if reason:
        print(f"(Skipping the LAN part: {reason})")
        return 0
    folder = Path(tempfile.mkdtemp(prefix="p2psync-demo-lan-"))
    home, work = folder / "home", folder / "work"
    print("\n\033[1;34m== 10. On a LAN: two machines (network namespaces) pair by mDNS, no address given.\033[0m")
    with Lab(2) as lab:
        print(f"home is {lab.address(1)}, work is {lab.address(2)}, on a private bridge.")

        def run(i: int, *argv: str) -> subprocess.CompletedProcess[str]:
            library = home if i == 1 else work
            done = lab.run(i, [*P2PSYNC, *argv, "--library", str(library)], timeout=90)
            show("home" if i == 1 else "work", list(argv), done)
            if done.returncode != 0:
                raise SystemExit(f"step failed: {done.stderr}")
            return done

        run(1, "init", "--name", "LAN demo")
        run(1, "ref", "add", "--title", "Found over mDNS", "--author", "Cheshire, Stuart", "--year", "2013")
        offer = JsonLines(lab.popen(1, [*P2PSYNC, "pair", "--json", "--library", str(home)]))
        code = str(offer.expect(lambda m: "code" in m, timeout=30, what="the code")["code"])
        print(f"\033[1mhome$ p2psync pair\033[0m\n{code}")
        run(2, "pair", code)
        if offer.wait(timeout=30) != 0:
            raise SystemExit(f"the offering side failed: {offer.stderr_text()}")
        run(2, "ref", "list")
        listed = json.loads(lab.run(2, [*P2PSYNC, "peers", "--json", "--library", str(work)], timeout=30).stdout)
        print(f"work's library has {len(listed)} member devices; it found home by mDNS alone.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
