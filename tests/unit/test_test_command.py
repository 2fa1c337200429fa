"""The README's test command names a missing system package instead of failing in the middle."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_browser_is_named_with_its_apt_command(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with the shell's tools but no chromium
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "printf", "docker", "docker-compose", "python3.11"):
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    result = subprocess.run(
        ["bash", str(ROOT / "test.sh"), "--collect-only"],
        env={**os.environ, "PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "error: missing system package: chromium (apt-get install chromium)" in result.stderr
    assert "chromium-driver (apt-get install chromium-driver)" in result.stderr
    assert "Traceback" not in result.stderr and not result.stdout
