"""Real processes against one library: SIGKILL mid-write, and two writers at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from p2psync.store.library import Library
from tests.support import replay, snapshot

WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from p2psync.store.library import Library
    lib = Library.open(Path(sys.argv[1]))
    scratch = Path(sys.argv[2])
    print("ready", flush=True)
    i = 0
    while True:  # ended by SIGKILL from the test
        ids = lib.add_references({"title": f"Paper {i}-{k}", "abstract": "x " * 200} for k in range(300))
        lib.edit_reference(ids[0], {"notes": f"edited {i}"})
        g = lib.create_group(f"G{i}")
        lib.add_to_group(g, ids[:50])
        f = scratch / f"f{i}.pdf"
        f.write_bytes(os.urandom(200_000))
        lib.attach(ids[1], f)
        lib.trash_reference(ids[2])
        lib.empty_trash()
        i += 1
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.parametrize("delay", [0.35, 0.8, 1.3, 2.1])
def test_sigkill_mid_write_leaves_a_consistent_library(tmp_path: Path, delay: float) -> None:
    Library.create(tmp_path / "lib").close()
    (tmp_path / "scratch").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path / "lib"), str(tmp_path / "scratch")],
        stdout=subprocess.PIPE,
        env=_env(),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    library = Library.open(tmp_path / "lib")
    try:
        assert library.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert library.info()["references"] > 0
        # Log and tables agree: replaying the log rebuilds exactly what is there.
        replica = replay(library, tmp_path / "replica")
        assert snapshot(replica) == snapshot(library)
        replica.close()
        # Every recorded, present attachment file is whole (the hash matches).
        library.scan_attachments()
        for ref_id, name in library.db.execute("SELECT ref_id, name FROM attachment_files"):
            item = next(i for i in library.list_attachments(ref_id, scan=False) if i["name"] == name)
            assert item["present"], (ref_id, name)
        # And the library still takes writes.
        library.add_reference({"title": "after the crash"})
    finally:
        library.close()


EDITOR = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from p2psync.store.library import Library
    lib = Library.open(Path(sys.argv[1]))
    for i in range(int(sys.argv[2])):
        ref = lib.add_reference({"title": f"edit {i}"})
        lib.edit_reference(ref, {"notes": f"note {i}"})
    print("done", flush=True)
    """
)


def test_two_writers_at_once_both_succeed(tmp_path: Path) -> None:
    Library.create(tmp_path / "lib").close()
    importer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from p2psync.store.library import Library; "
            "lib = Library.open(Path(sys.argv[1])); "
            "lib.add_references({'title': f'imported {i}', 'abstract': 'y ' * 100} for i in range(20000)); "
            "print('done')",
            str(tmp_path / "lib"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    time.sleep(0.5)  # let the import get going, then edit from "the CLI" meanwhile
    editors = [
        subprocess.run(
            [sys.executable, "-c", EDITOR, str(tmp_path / "lib"), "30"], capture_output=True, env=_env(), timeout=300
        )
        for _ in range(2)
    ]
    _, err = importer.communicate(timeout=300)
    assert importer.returncode == 0, err.decode()
    for editor in editors:
        assert editor.returncode == 0, editor.stderr.decode()
        assert b"locked" not in editor.stderr
    library = Library.open(tmp_path / "lib")
    try:
        assert library.info()["references"] == 20000 + 60
        notes = library.db.execute("SELECT count(*) FROM refs WHERE json_extract(data, '$.notes') LIKE 'note %'")
        assert notes.fetchone()[0] == 60
        assert library.info()["changes"] == 1 + 20000 + 120  # 1: init's device.add
    finally:
        library.close()
