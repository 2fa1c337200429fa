"""V1 and V2 feature definitions: the single source of truth.

The engineering step, the Feast feature views and services, the model signature and the serving API
all read :data:`FEATURE_SETS`. No feature is derived from the lifts (that would leak the target):
each spec names the clean columns it is computed from, and a test checks that no spec reads a lift.

Encodings use fixed vocabularies from :mod:`crossfit_mlops.data.vocabulary`, never statistics of
the data, so nothing is "fitted" on rows that a model is later tested on.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from datetime import timedelta

from crossfit_mlops.data.vocabulary import REGIONS, SURVEY_OPTIONS

# The survey questions used by V2. 'train' is free text in the real file and is left out, as in
# the usual recipe; 'Decline to answer' is never a feature.
V2_SURVEY_QUESTIONS: tuple[str, ...] = ("eat", "background", "experience", "schedule", "howlong")

# A profile is a snapshot of what the athlete said; after this long without a newer snapshot the
# features are considered stale (online reads older than this are refused by the serving layer,
# historical retrieval ignores them). Generous against a monthly-to-quarterly snapshot cadence.
FEATURE_TTL = timedelta(days=365)


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    dtype: str  # "int64" | "float64": the dtype of the engineered column and of the Feast field
    inputs: tuple[str, ...]  # clean columns it is computed from
    description: str
    survey_option: tuple[str, str] | None = None  # (question, option) for multi-hot features


@dataclass(frozen=True)
class FeatureSet:
    version: str  # "v1" | "v2"
    view_name: str  # Feast feature view
    service_name: str  # Feast feature service
    description: str
    features: tuple[FeatureSpec, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]


def slug(text: str) -> str:
    """``"I eat strict Paleo"`` -> ``"i_eat_strict_paleo"``; ``"4+ years"`` -> ``"4plus_years"``."""
    text = text.lower().replace("+", "plus").replace("-", "_to_" if re.search(r"\d-\d", text) else "_")
    text = re.sub(r"\(.*?\)", "", text)
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


_DEMOGRAPHICS: tuple[FeatureSpec, ...] = (
    FeatureSpec("is_male", "int64", ("gender",), "1 if the athlete registered as male, else 0"),
    FeatureSpec("age", "float64", ("age",), "age in years"),
    FeatureSpec("height_in", "float64", ("height",), "height in inches"),
    FeatureSpec("weight_lb", "float64", ("weight",), "body weight in pounds"),
    FeatureSpec(
        "region_code",
        "int64",
        ("region",),
        "index of the region in the fixed list of the 17 CrossFit regions (-1 if unknown)",
    ),
)

_BMI = FeatureSpec(
    "bmi", "float64", ("weight", "height"), "body-mass index: 703 * weight_lb / height_in^2"
)


def _survey_features() -> tuple[FeatureSpec, ...]:
    specs = []
    for question in V2_SURVEY_QUESTIONS:
        for option in SURVEY_OPTIONS[question]:
            specs.append(
                FeatureSpec(
                    f"{question}__{slug(option)}",
                    "int64",
                    (question,),
                    f"1 if the '{question}' answer ticks: {option}",
                    survey_option=(question, option),
                )
            )
    return tuple(specs)


FEATURE_SETS: dict[str, FeatureSet] = {
    "v1": FeatureSet(
        version="v1",
        view_name="athlete_features_v1",
        service_name="model_v1",
        description="Demographics only: sex, age, height, weight, region.",
        features=_DEMOGRAPHICS,
    ),
    "v2": FeatureSet(
        version="v2",
        view_name="athlete_features_v2",
        service_name="model_v2",
        description="V1 plus BMI and the multi-hot survey answers (diet, background, experience, "
        "schedule, training history).",
        features=(*_DEMOGRAPHICS, _BMI, *_survey_features()),
    ),
}

REGION_CODES: dict[str, int] = {region: i for i, region in enumerate(REGIONS)}


@dataclass(frozen=True)
class Bounds:
    """The plausible values of one feature: ``low <= x <= high`` (``low < x < high`` if exclusive)."""

    low: float
    high: float
    exclusive: bool = False

    def contains(self, value: float) -> bool:
        if self.exclusive:
            return self.low < value < self.high
        return self.low <= value <= self.high

    def describe(self) -> str:
        return f"between {self.low:g} and {self.high:g}" + (" (exclusive)" if self.exclusive else "")


@functools.cache
def _profile_bounds() -> dict[str, Bounds]:
    """Bounds of the profile features, from the raw data contract's plausibility rules: a row
    outside them is quarantined before it becomes features, so no model ever saw such a value."""
    # imported here: the contract pulls in pandas and pandera, and DAG files import this module
    from crossfit_mlops.data.schema import AGE_RANGE, HEIGHT_RANGE_EXCLUSIVE, WEIGHT_RANGE

    (h_low, h_high), (w_low, w_high) = HEIGHT_RANGE_EXCLUSIVE, WEIGHT_RANGE
    # BMI of the extreme heights and weights, widened to the 4 decimals it is rounded to
    bmi = Bounds(math.floor(703.0 * w_low / h_high**2 * 1e4) / 1e4, math.ceil(703.0 * w_high / h_low**2 * 1e4) / 1e4)
    return {
        "age": Bounds(*AGE_RANGE),
        "height_in": Bounds(h_low, h_high, exclusive=True),
        "weight_lb": Bounds(w_low, w_high),
        "bmi": bmi,
        "is_male": Bounds(0, 1),
        "region_code": Bounds(-1, len(REGIONS) - 1),
    }


def feature_bounds(version: str) -> dict[str, Bounds]:
    """The plausible range of every feature of ``version`` (serving refuses values outside it).

    Multi-hot survey features are 0 or 1; profile features follow the raw contract."""
    bounds = {}
    for spec in feature_set(version).features:
        if spec.survey_option is not None:
            bounds[spec.name] = Bounds(0, 1)
        elif spec.name in _profile_bounds():
            bounds[spec.name] = _profile_bounds()[spec.name]
        else:
            raise ValueError(f"no plausible bounds defined for feature {spec.name!r}")
    return bounds


def feature_set(version: str) -> FeatureSet:
    try:
        return FEATURE_SETS[version]
    except KeyError:
        raise ValueError(f"unknown feature version {version!r}; known: {sorted(FEATURE_SETS)}") from None


def check_model_inputs(model: str, feature_version: str | None, columns: tuple[str, ...]) -> FeatureSet:
    """The feature set a model was trained on, checked against the model's input columns.

    ``model`` names the model in the error (e.g. ``models:/crossfit_total_lift/3``). Raises
    ValueError when the version tag is unknown or the signature's columns differ from the spec's.
    """
    if feature_version not in FEATURE_SETS:
        raise ValueError(f"{model} has feature_version tag {feature_version!r}; expected one of {sorted(FEATURE_SETS)}")
    spec = FEATURE_SETS[feature_version]
    if sorted(columns) != sorted(spec.names):
        raise ValueError(
            f"{model} expects columns {sorted(set(columns) ^ set(spec.names))} that differ from FeatureService "
            f"{spec.service_name}"
        )
    return spec
