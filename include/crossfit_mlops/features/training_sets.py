"""Training sets: labels + point-in-time features from Feast, split deterministically by athlete.

The entity frame is the cleaned snapshot's labels (``athlete_id``, ``event_timestamp``,
``total_lift``); features come from the version's FeatureService through
``get_historical_features``, so training reads exactly what Feast serves.

The split is a hash of the athlete id, not a random shuffle: an athlete is in the same partition in
every run, for both feature versions and for every later snapshot. So the test set a champion
trained on an older snapshot is judged on holds no athlete it was trained on, and V1 and V2 models
are compared on the same athletes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crossfit_mlops.features.specs import feature_set
from crossfit_mlops.settings import Settings, get_settings
from crossfit_mlops.storage import (
    ENTITY_KEY,
    EVENT_TIMESTAMP,
    TARGET,
    Catalog,
    current,
    location,
    publishing,
    read_parquet,
    snapshot_lock,
)

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "validation", "test")
# Share of athletes per split, in percent of the hash space.
SPLIT_PERCENT: dict[str, int] = {"train": 70, "validation": 15, "test": 15}
SPLIT_SALT = "crossfit-split-v1"


def split_of(athlete_ids: pd.Series | np.ndarray, salt: str = SPLIT_SALT) -> np.ndarray:
    """``"train" | "validation" | "test"`` per athlete, from a salted hash of the id (stable)."""
    buckets = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(f"{salt}:{int(i)}".encode(), digest_size=8).digest(), "big") % 100
            for i in athlete_ids
        ),
        dtype=np.int64,
        count=len(athlete_ids),
    )
    train_end = SPLIT_PERCENT["train"]
    validation_end = train_end + SPLIT_PERCENT["validation"]
    return np.where(buckets < train_end, "train", np.where(buckets < validation_end, "validation", "test"))


@dataclass(frozen=True)
class TrainingSet:
    """Where one feature version's split training data is, and its lineage."""

    snapshot_id: str
    snapshot_sha256: str
    feature_version: str
    feature_service: str
    sample_size: int  # 0 = every clean athlete
    directory: str
    rows: dict[str, int]

    def folder(self) -> Path:
        """Where the set's files are (in a bucket: the version ``directory``'s marker names)."""
        return current(location(self.directory))

    def path(self, split: str) -> Path:
        return self.folder() / f"{split}.parquet"

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def dataset_name(self) -> str:
        return f"{self.feature_service}-{self.snapshot_id}-train"

    def mlflow_dataset(self) -> dict[str, str] | None:
        """The train split described as an MLflow dataset (digest, schema, profile), computed once
        when the set was built; None for sets built before this file existed."""
        path = self.folder() / MLFLOW_DATASET_FILE
        return json.loads(path.read_text()) if path.is_file() else None


MLFLOW_DATASET_FILE = "mlflow_dataset_train.json"


def describe_for_mlflow(frame: pd.DataFrame, source: Path, name: str) -> dict[str, str]:
    """``mlflow.data.from_pandas(...).to_dict()``: name, digest, source, schema and profile.

    Computing the digest and schema of a 20,000-row split costs about 0.5 s; every training task
    of the fan-out logs the same split, so it is done once here and each task logs the result.
    """
    import mlflow.data

    return mlflow.data.from_pandas(frame, source=str(source), name=name, targets=TARGET).to_dict()


def build_training_set(
    snapshot_id: str,
    version: str,
    sample_size: int = 0,
    seed: int = 42,
    settings: Settings | None = None,
    store=None,
) -> TrainingSet:
    """Retrieve ``version`` features for the snapshot's labels and write train/validation/test.

    ``sample_size`` > 0 takes that many athletes (deterministic for a seed), else all of them. The
    three files are written to a temporary folder and published together. A snapshot whose
    validation report is not "ok" is refused (the snapshot's lock is held shared meanwhile).
    """
    settings = settings or get_settings()
    with snapshot_lock(settings, snapshot_id, shared=True):
        Catalog(settings).require_validated(snapshot_id, f"the {version} training set")
        return _build_training_set(snapshot_id, version, sample_size, seed, settings, store)


def _build_training_set(
    snapshot_id: str, version: str, sample_size: int, seed: int, settings: Settings, store
) -> TrainingSet:
    from crossfit_mlops.features.feast_repo import historical_features

    catalog = Catalog(settings)
    spec = feature_set(version)
    labels = catalog.load_labels(snapshot_id)
    if sample_size and sample_size < len(labels):
        labels = labels.sample(n=int(sample_size), random_state=seed).sort_values(ENTITY_KEY)
    entity_df = labels[[ENTITY_KEY, EVENT_TIMESTAMP, TARGET]].reset_index(drop=True)
    frame = historical_features(entity_df, version, settings=settings, store=store)
    frame["split"] = split_of(frame[ENTITY_KEY])
    final = catalog.training_set_dir(snapshot_id, sample_size, version)
    with publishing(final) as tmp:
        rows = _write_splits(tmp, final, frame, snapshot_id, spec)
        result = TrainingSet(
            snapshot_id=snapshot_id,
            snapshot_sha256=catalog.raw_manifest(snapshot_id).sha256,
            feature_version=version,
            feature_service=spec.service_name,
            sample_size=int(sample_size or 0),
            directory=str(final),
            rows=rows,
        )
        (tmp / "manifest.json").write_text(json.dumps(result.as_dict(), indent=2))
    log.info("training set %s of snapshot %s: %s -> %s", version, snapshot_id, rows, final)
    return result


def _write_splits(folder: Path, final: Path, frame: pd.DataFrame, snapshot_id: str, spec) -> dict[str, int]:
    """One parquet file per split (and the train split's MLflow description); rows per split."""
    rows = {}
    for split in SPLITS:
        part = frame.loc[frame["split"] == split, [ENTITY_KEY, EVENT_TIMESTAMP, *spec.names, TARGET]]
        if part.empty:
            raise ValueError(f"split {split!r} of snapshot {snapshot_id} is empty: the sample is too small")
        part = part.reset_index(drop=True)
        part.to_parquet(folder / f"{split}.parquet", index=False)
        rows[split] = len(part)
        if split == "train":
            name = f"{spec.service_name}-{snapshot_id}-train"
            description = describe_for_mlflow(part, final / "train.parquet", name)
            (folder / MLFLOW_DATASET_FILE).write_text(json.dumps(description))
    return rows


def load_split(training_set: TrainingSet | dict, split: str) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """``(X, y, frame)`` of one split, with X's columns in the spec's order."""
    if isinstance(training_set, dict):
        training_set = TrainingSet(**training_set)
    frame = read_parquet(training_set.path(split))
    names = feature_set(training_set.feature_version).names
    return frame[names], frame[TARGET], frame
