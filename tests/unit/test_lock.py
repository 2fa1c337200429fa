"""The full lock matches the requirements files (offline; CI also re-resolves it: scripts/lock.sh --check)."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{path.name}: {line} is not an exact pin"
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def _locked() -> dict[str, tuple[str, int]]:
    text = (ROOT / "requirements.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9_.\[\],-]+)==([^\s;\\]+)(?:\s*;[^\\\n]*)?((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", text, re.M)
    return {canonicalize_name(re.sub(r"\[.*\]", "", n)): (v, h.count("--hash")) for n, v, h in entries}


def test_every_direct_pin_is_locked_at_its_version_with_hashes():
    locked = _locked()
    for name in ("requirements.txt", "requirements-dev.txt"):
        for package, version in _pins(ROOT / name).items():
            assert package in locked, f"{package} ({name}) is not in requirements.lock: run scripts/lock.sh"
            assert locked[package][0] == version, f"{package}: {name} pins {version}, the lock has {locked[package][0]}"
    assert all(hashes > 0 for _, hashes in locked.values()), "every locked package carries its hashes"


def test_the_image_requirements_leave_airflow_to_the_runtime_and_the_dev_file_adds_it():
    image, dev = _pins(ROOT / "requirements.txt"), _pins(ROOT / "requirements-dev.txt")
    assert "apache-airflow" not in image and dev["apache-airflow"] == "3.3.2"
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()
