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


@pytest.fixture(scope="session")
def s3_services(tmp_path_factory):
    """One real SeaweedFS (with a bucket), a PostgreSQL database (locks, Feast's SQL registry) and a
    Redis database for the session's S3-profile tests; each test takes its own prefix."""
    from tests.support.services import s3_profile

    with s3_profile(tmp_path_factory.mktemp("s3-services")) as (env, store):
        yield env, store


@pytest.fixture(params=["local", "s3"])
def profile_settings(request, settings, monkeypatch) -> Settings:
    """:func:`settings` on each storage profile: the local state directory, or the S3-backed
    profile (``CROSSFIT_DATA_URL`` under a prefix of its own in the session's bucket)."""
    if request.param == "local":
        return settings
    return request.getfixturevalue("s3_settings")


@pytest.fixture
def s3_settings(settings, s3_services, monkeypatch) -> Settings:
    """:func:`settings` on the S3-backed profile, under a prefix of its own in the session's bucket."""
    import uuid

    env, store = s3_services
    for name, value in {**env, **store.env(f"test-{uuid.uuid4().hex[:12]}")}.items():
        monkeypatch.setenv(name, value)
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
    from crossfit_mlops.data.schema import check_rows

    frame = generated_sample.copy()
    frame.insert(0, "row_number", range(1, len(frame) + 1))
    failures = check_rows(frame)
    valid = frame[~frame["row_number"].isin(failures["row_number"])].reset_index(drop=True)
    return clean_rows(valid, pd.Timestamp("2026-11-01", tz="UTC")).clean


# --- three test processes (pytest-xdist, ``-n 3 --dist loadgroup`` in pyproject.toml) -------------
# Each module runs whole on one worker (its module-scoped stack is started once); modules that
# share a package-scoped stack form one group. The slow groups are handed out first, longest
# first, so the workers finish at about the same time. Keep LONGEST_FIRST in the order of their
# measured durations (docs/benchmarks.md, "The test suite"); re-measure when a slow module changes.
SHARED_STACK = "tests/reliability/pipeline_stack"
GROUPS = {
    "tests/reliability/test_pipeline_faults.py": SHARED_STACK,
    "tests/reliability/test_human_approval.py": SHARED_STACK,
}
LONGEST_FIRST = (
    "tests/compose/test_compose_live.py",
    SHARED_STACK,
    "tests/integration/test_cluster_profile.py",
    # after the first compose module rather than beside it: two compose stacks at once on 2 cores
    "tests/compose/test_compose_workers.py",
    "tests/integration/test_s3_profile.py",
    "tests/integration/test_monitoring.py",
    "tests/e2e/test_uis.py",
    "tests/integration/test_start_stop.py",
    "tests/integration/test_training_pipeline.py",
    "tests/integration/test_serving.py",
    "tests/reliability/test_api_faults.py",
    "tests/reliability/test_api_load.py",
    "tests/reliability/test_object_storage.py",
)


def _group(item: pytest.Item) -> str:
    module = item.nodeid.split("::", 1)[0]
    return GROUPS.get(module, module)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    items.sort(key=lambda item: rank.get(_group(item), len(rank)))  # stable: each module keeps its order
