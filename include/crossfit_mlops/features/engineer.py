"""Feature engineering: clean rows -> the V1 or V2 feature table. Pure, no I/O.

Every column is computed from the spec in :mod:`crossfit_mlops.features.specs`; the output has the
entity key, the event timestamp and exactly the spec's features, in the spec's order and dtypes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crossfit_mlops.data.vocabulary import split_answer
from crossfit_mlops.features.specs import REGION_CODES, FeatureSet, FeatureSpec, feature_set
from crossfit_mlops.storage import ENTITY_KEY, EVENT_TIMESTAMP


def _ticked(answers: pd.Series, option: str) -> np.ndarray:
    """1 where ``option`` is one of the ticked options of the answer (exact option match)."""
    uniques = answers.dropna().unique()
    verdict = {u: int(option in split_answer(u)) for u in uniques}
    return answers.map(verdict).fillna(0).to_numpy(dtype="int64")


def _compute(spec: FeatureSpec, clean: pd.DataFrame) -> np.ndarray:
    if spec.survey_option is not None:
        question, option = spec.survey_option
        return _ticked(clean[question], option)
    match spec.name:
        case "is_male":
            return (clean["gender"] == "Male").to_numpy(dtype="int64")
        case "age":
            return clean["age"].to_numpy(dtype="float64")
        case "height_in":
            return clean["height"].to_numpy(dtype="float64")
        case "weight_lb":
            return clean["weight"].to_numpy(dtype="float64")
        case "region_code":
            return clean["region"].map(REGION_CODES).fillna(-1).to_numpy(dtype="int64")
        case "bmi":
            height = clean["height"].to_numpy(dtype="float64")
            return np.round(703.0 * clean["weight"].to_numpy(dtype="float64") / height**2, 4)
    raise ValueError(f"no computation defined for feature {spec.name!r}")


def engineer_features(clean: pd.DataFrame, version: str | FeatureSet) -> pd.DataFrame:
    """The feature table of ``version`` for clean rows: entity key, event timestamp, features."""
    spec_set = feature_set(version) if isinstance(version, str) else version
    needed = {column for spec in spec_set.features for column in spec.inputs}
    missing = sorted(needed - set(clean.columns))
    if missing:
        raise ValueError(f"clean data lacks columns {missing} needed by features {spec_set.version}")
    columns = {ENTITY_KEY: clean[ENTITY_KEY].to_numpy(dtype="int64"),
               EVENT_TIMESTAMP: clean[EVENT_TIMESTAMP].to_numpy()}  # fmt: skip
    for spec in spec_set.features:
        columns[spec.name] = _compute(spec, clean).astype(spec.dtype)
    out = pd.DataFrame(columns)
    out[EVENT_TIMESTAMP] = pd.to_datetime(out[EVENT_TIMESTAMP], utc=True)
    return out
