"""Shared fixtures. Every test that writes gets its own state directory under pytest's tmp_path."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from crossfit_mlops.settings import Settings, get_settings

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("FEAST_USAGE", "False")


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    """Settings whose state directory (data, Feast registry and online store) is a temp dir."""
    state = tmp_path / "state"
    monkeypatch.setenv("CROSSFIT_STATE_DIR", str(state))
    for name in ("CROSSFIT_FEAST_DIR", "CROSSFIT_FEAST_REGISTRY", "CROSSFIT_FEAST_ONLINE_STORE", "CROSSFIT_RAW_FILE"):
        monkeypatch.delenv(name, raising=False)
    return get_settings()


SAMPLE_ROWS = 120_000


@pytest.fixture(scope="session")
def generated_sample() -> pd.DataFrame:
    """A 120,000-row generated snapshot (in memory), shared by the statistics tests."""
    from crossfit_mlops.data.generate import generate_frame

    return generate_frame(rows=SAMPLE_ROWS, seed=7, snapshot_id="2026-11-01")


@pytest.fixture(scope="session")
def cleaned_sample(generated_sample) -> pd.DataFrame:
    """The sample through the raw contract and the cleaning, as the pipeline does it."""
    from crossfit_mlops.data.clean import clean_rows
    from crossfit_mlops.data.contract import check_rows

    frame = generated_sample.copy()
    frame.insert(0, "row_number", range(1, len(frame) + 1))
    failures = check_rows(frame)
    valid = frame[~frame["row_number"].isin(failures["row_number"])].reset_index(drop=True)
    return clean_rows(valid, pd.Timestamp("2026-11-01", tz="UTC")).clean
