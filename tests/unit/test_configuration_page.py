"""The configuration page's table is generated from the typed settings and never stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_configuration_page_is_generated_from_the_settings():
    result = subprocess.run([sys.executable, "scripts/config_reference.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_typed_variable_is_on_the_page_with_its_type_and_default():
    from crossfit_mlops.settings import SECTIONS

    page = (ROOT / "docs" / "configuration.md").read_text()
    for section in SECTIONS:
        for name in section.model_fields:
            assert f"| `{section.variable(name)}` |" in page, section.variable(name)
