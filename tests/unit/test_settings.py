"""One settings object: defaults under the project, env overrides, no machine paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from crossfit_mlops.settings import get_settings
from crossfit_mlops.storage import Catalog, check_snapshot_id

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_relative_to_the_project_root():
    s = get_settings({})
    assert s.project_root == ROOT
    assert s.state_dir == ROOT / ".state"
    assert s.raw_dir == ROOT / ".state" / "data" / "raw"
    assert s.feast_repo_path == ROOT / "include" / "feast" / "repo" / "feature_repo"
    assert s.feast_registry_path == ROOT / ".state" / "feast" / "registry.db"
    assert Catalog(s).raw_file("2026-01-02") == ROOT / ".state/data/raw/snapshot=2026-01-02/athletes.csv"


def test_environment_overrides(tmp_path):
    s = get_settings({"CROSSFIT_STATE_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": "http://mlflow-server:5000",
                      "CROSSFIT_MIN_VALID_SHARE": "0.5"})  # fmt: skip
    assert s.processed_dir == tmp_path / "data" / "processed"
    assert s.feast_online_store_path == tmp_path / "feast" / "online_store.db"
    assert s.mlflow_tracking_uri == "http://mlflow-server:5000"
    assert s.min_valid_share == 0.5
    relative = get_settings({"CROSSFIT_PROJECT_ROOT": str(tmp_path), "CROSSFIT_STATE_DIR": "elsewhere"})
    assert relative.state_dir == tmp_path / "elsewhere"


def test_bad_values_are_explained():
    with pytest.raises(ValueError, match="CROSSFIT_MIN_VALID_SHARE"):
        get_settings({"CROSSFIT_MIN_VALID_SHARE": "lots"})
    with pytest.raises(ValueError, match="ISO date"):
        check_snapshot_id("22/11/2026")


def test_committed_feature_store_yaml_points_at_the_default_state_dir():
    """`feast apply` in the repo folder and the package must use the same registry by default."""
    s = get_settings({})
    config = yaml.safe_load((s.feast_repo_path / "feature_store.yaml").read_text())
    assert (s.feast_repo_path / config["registry"]["path"]).resolve() == s.feast_registry_path
    assert (s.feast_repo_path / config["online_store"]["path"]).resolve() == s.feast_online_store_path


def test_no_machine_paths_in_code_or_config():
    # built from parts so that this file does not itself contain what it forbids
    forbidden = ["/usr/local/" + "airflow", "/work" + "space/", "sys.path." + "insert", "sys.path." + "append"]
    for path in [*ROOT.glob("include/**/*.py"), *ROOT.glob("include/**/*.yaml"), *ROOT.glob("dags/*.py")]:
        text = path.read_text()
        assert not [f for f in forbidden if f in text], path


@pytest.mark.parametrize("value", ["-1", "nan", "NaN", "1.5", "inf", "-0.01"])
def test_a_valid_share_floor_outside_0_1_is_refused(value):
    """-1 and NaN used to be accepted and silently disabled the quality floor."""
    with pytest.raises(ValueError, match=r"CROSSFIT_MIN_VALID_SHARE must be a number between 0 and 1"):
        get_settings({"CROSSFIT_MIN_VALID_SHARE": value})
    assert get_settings({"CROSSFIT_MIN_VALID_SHARE": "0"}).min_valid_share == 0.0
    assert get_settings({"CROSSFIT_MIN_VALID_SHARE": "1"}).min_valid_share == 1.0


@pytest.mark.parametrize("value", ["0", "-5", "2.5", "nan", "many"])
def test_a_minimum_of_clean_rows_below_one_or_fractional_is_refused(value):
    with pytest.raises(ValueError, match="CROSSFIT_MIN_CLEAN_ROWS"):
        get_settings({"CROSSFIT_MIN_CLEAN_ROWS": value})
    assert get_settings({}).min_clean_rows == 200
    assert get_settings({"CROSSFIT_MIN_CLEAN_ROWS": "50"}).min_clean_rows == 50


def test_the_raw_file_setting_says_whether_it_was_set():
    assert not get_settings({}).raw_file_from_env
    explicit = get_settings({"CROSSFIT_RAW_FILE": "/nope.csv"})
    assert explicit.raw_file_from_env and explicit.raw_file_override == Path("/nope.csv")


@pytest.mark.parametrize("snapshot_id", ["2026-13-45", "2026-02-30", "2026-00-10", "0000-01-01"])
def test_snapshot_ids_must_be_real_dates(snapshot_id):
    with pytest.raises(ValueError, match="not a real date"):
        check_snapshot_id(snapshot_id)
    assert check_snapshot_id("2024-02-29") == "2024-02-29"


def test_the_tracking_uri_follows_the_stacks_mlflow_port():
    """``serve`` or ``registry`` started by hand talk to this stack's MLflow, not to port 5000."""
    assert get_settings({"CROSSFIT_MLFLOW_PORT": "5071"}).mlflow_tracking_uri == "http://127.0.0.1:5071"
    assert get_settings({}).mlflow_tracking_uri == "http://127.0.0.1:5000"
    explicit = {"CROSSFIT_MLFLOW_PORT": "5071", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert get_settings(explicit).mlflow_tracking_uri == "http://mlflow:5000"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CROSSFIT_SERVING_REFRESH_S", "-5"),
        ("CROSSFIT_SERVING_REFRESH_S", "0"),
        ("CROSSFIT_SERVING_REFRESH_S", "nan"),
        ("CROSSFIT_SERVING_MAX_BATCH", "0"),
        ("CROSSFIT_SERVING_MAX_BATCH", "2.5"),
        ("CROSSFIT_MLFLOW_PORT", "99999"),
        ("CROSSFIT_MLFLOW_PORT", "0"),
        ("CROSSFIT_MLFLOW_PORT", "http"),
    ],
)
def test_a_serving_or_port_setting_out_of_range_is_refused_naming_it(name, value):
    with pytest.raises(ValueError, match=name):
        get_settings({name: value})


# --- the S3-backed profile's settings ------------------------------------------------------------
S3_PROFILE = {
    "CROSSFIT_DATA_URL": "s3://crossfit-data/team/",
    "CROSSFIT_S3_ENDPOINT": "http://127.0.0.1:8333",
    "CROSSFIT_LOCK_URI": "postgresql+psycopg2://postgres@127.0.0.1:5432/locks",
    "CROSSFIT_FEAST_REGISTRY_URI": "postgresql+psycopg2://postgres@127.0.0.1:5432/feast",
    "CROSSFIT_FEAST_REDIS": "127.0.0.1:6379,db=3",
}


def test_a_data_url_puts_every_data_root_in_the_bucket_and_nothing_under_the_state_dir(tmp_path):
    s = get_settings({"CROSSFIT_STATE_DIR": str(tmp_path), **S3_PROFILE})
    assert s.on_object_storage and s.data_url == "s3://crossfit-data/team"
    roots = {name: str(getattr(s, name)) for name in ("raw_dir", "processed_dir", "features_dir", "training_dir",
                                                      "predictions_dir", "emissions_dir", "monitoring_dir")}  # fmt: skip
    assert all(root.startswith("s3://crossfit-data/team/") for root in roots.values()), roots
    assert s.raw_dir.storage_options["endpoint_url"] == "http://127.0.0.1:8333"
    again = get_settings(s.as_env())
    assert again.data_url == s.data_url and again.lock_uri == s.lock_uri and again.s3_endpoint == s.s3_endpoint


@pytest.mark.parametrize("missing", ["CROSSFIT_LOCK_URI", "CROSSFIT_FEAST_REGISTRY_URI", "CROSSFIT_FEAST_REDIS"])
def test_a_data_url_without_what_every_host_must_share_is_refused_naming_it(missing, tmp_path):
    env = {"CROSSFIT_STATE_DIR": str(tmp_path), **S3_PROFILE, missing: ""}
    with pytest.raises(ValueError, match=missing) as info:
        get_settings(env)
    assert "CROSSFIT_DATA_URL=s3://crossfit-data/team" in str(info.value)


@pytest.mark.parametrize("url", ["/data/crossfit", "gs://bucket/x", "s3://", "s3:///prefix"])
def test_a_data_url_that_is_not_an_s3_bucket_is_refused(url, tmp_path):
    with pytest.raises(ValueError, match="CROSSFIT_DATA_URL must be an s3://bucket"):
        get_settings({"CROSSFIT_STATE_DIR": str(tmp_path), **S3_PROFILE, "CROSSFIT_DATA_URL": url})


def test_the_lock_must_be_postgresql(tmp_path):
    with pytest.raises(ValueError, match="CROSSFIT_LOCK_URI must be a postgresql:// URI"):
        get_settings({"CROSSFIT_STATE_DIR": str(tmp_path), **S3_PROFILE, "CROSSFIT_LOCK_URI": "redis://127.0.0.1:6379/0"})
