"""The package builds cleanly: setuptools has nothing to warn about (issue 18, item 8: it warned
that `license = { text = ... }` is deprecated)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_builds_without_a_deprecation_warning(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-w", str(tmp_path), "-v"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    output = built.stdout + built.stderr
    assert "project.license` as a TOML table is deprecated" not in output
    assert "BuildBackendWarning" not in output and "SetuptoolsDeprecationWarning" not in output
    assert list(tmp_path.glob("p2psync-*.whl"))
