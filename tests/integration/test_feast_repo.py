"""A real Feast repo in a temp dir: apply, materialize, point-in-time and online retrieval."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from crossfit_mlops.data.ingest import ingest_snapshot
from crossfit_mlops.data.validate import validate_and_clean
from crossfit_mlops.features import feast_repo as feast_glue
from crossfit_mlops.features.build import build_feature_table
from crossfit_mlops.features.specs import FEATURE_SETS, FEATURE_TTL
from crossfit_mlops.settings import get_settings
from crossfit_mlops.storage import snapshot_time

pytestmark = pytest.mark.integration
SNAPSHOT = "2026-10-01"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prepared(settings):
    ingest_snapshot(SNAPSHOT, rows=20_000, seed=3, settings=settings)
    cleaned = validate_and_clean(SNAPSHOT, settings=settings)
    tables = {v: pd.read_parquet(build_feature_table(SNAPSHOT, v, settings)) for v in FEATURE_SETS}
    store = feast_glue.get_store(settings)
    feast_glue.apply_definitions(settings, store)
    feast_glue.materialize_snapshot(snapshot_time(SNAPSHOT), settings=settings, store=store)
    labels = pd.read_parquet(cleaned.labels_path)
    return settings, store, labels, tables


def test_store_lives_in_the_state_dir_and_apply_is_idempotent(prepared):
    settings, store, _, _ = prepared
    assert settings.feast_registry_path.is_file()
    assert settings.feast_online_store_path.is_file()
    feast_glue.apply_definitions(settings, store)  # second apply changes nothing and does not fail
    assert sorted(v.name for v in store.list_feature_views()) == ["athlete_features_v1", "athlete_features_v2"]
    assert sorted(s.name for s in store.list_feature_services()) == ["model_v1", "model_v2"]


@pytest.mark.parametrize("version", list(FEATURE_SETS))
def test_point_in_time_training_set_has_one_row_per_entity_row(prepared, version):
    _, store, labels, tables = prepared
    shuffled = labels.sample(frac=1.0, random_state=1).reset_index(drop=True)
    training = feast_glue.historical_features(shuffled, version, store=store)
    assert len(training) == len(labels) > 1000
    assert training["athlete_id"].tolist() == shuffled["athlete_id"].tolist()  # entity order kept
    assert training["total_lift"].tolist() == shuffled["total_lift"].tolist()  # labels untouched
    expected = tables[version].set_index("athlete_id").loc[shuffled["athlete_id"], FEATURE_SETS[version].names]
    pd.testing.assert_frame_equal(
        training[FEATURE_SETS[version].names].reset_index(drop=True),
        expected.reset_index(drop=True),
        check_dtype=False,
    )


def test_entity_rows_outside_the_ttl_are_an_error_not_a_silent_drop(prepared):
    _, store, labels, _ = prepared
    late = labels.head(5).assign(event_timestamp=snapshot_time(SNAPSHOT) + FEATURE_TTL + timedelta(days=2))
    with pytest.raises(LookupError, match="5 of 10 entity rows"):
        feast_glue.historical_features(pd.concat([labels.head(5), late]), "v1", store=store)
    early = labels.head(3).assign(event_timestamp=snapshot_time(SNAPSHOT) - timedelta(days=1))
    with pytest.raises(LookupError, match="3 of 3"):
        feast_glue.historical_features(early, "v1", store=store)


def test_online_store_serves_the_materialized_features(prepared):
    _, store, labels, tables = prepared
    ids = labels["athlete_id"].head(20).tolist()
    online = feast_glue.online_features([*ids, 999_999_999], "v2", store=store)
    names = FEATURE_SETS["v2"].names
    expected = tables["v2"].set_index("athlete_id").loc[ids, names].reset_index(drop=True)
    got = online.iloc[:20][names].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert online.iloc[20][names].isna().all()  # an unknown athlete has no features


def test_feast_apply_cli_in_the_committed_repo_folder(tmp_path):
    """`feast apply` run from (a copy of) include/feast/repo/feature_repo, no extra config."""
    project = tmp_path / "project"
    repo = project / "include" / "feast" / "repo" / "feature_repo"
    shutil.copytree(ROOT / "include" / "feast" / "repo" / "feature_repo", repo,
                    ignore=shutil.ignore_patterns("__pycache__", "data"))  # fmt: skip
    (project / ".state").mkdir()
    shutil.copy(ROOT / ".state" / ".gitkeep", project / ".state" / ".gitkeep")  # as a clone has it
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSFIT_")}
    env.update(CROSSFIT_PROJECT_ROOT=str(project), FEAST_USAGE="False")
    feast_cli = Path(sys.executable).with_name("feast")
    done = subprocess.run([str(feast_cli), "apply"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    settings = get_settings(env)
    assert settings.feast_registry_path == project / ".state" / "feast" / "registry.db"
    assert settings.feast_registry_path.is_file(), "the CLI wrote the registry the package reads"
    store = feast_glue.get_store(settings)
    assert sorted(s.name for s in store.list_feature_services()) == ["model_v1", "model_v2"]
    view = store.get_feature_view("athlete_features_v1")
    assert view.batch_source.path == str(project / ".state" / "data" / "features" / "athlete_features_v1")
