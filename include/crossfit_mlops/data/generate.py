"""Realistic raw snapshots of the CrossFit Games athletes file, made on this machine.

The real Kaggle file cannot be downloaded here, so this module writes a file with the same header,
units, null pattern, junk values, multi-select survey strings and distributions (shared/DATA.md).

How it is built, so that the numbers can be trusted and tuned:

* **Who filled in what.** 22% of rows are empty profiles (name, gender, age null together). For the
  others a Gaussian copula decides which fields are present: every field's "answered" score mixes an
  engagement factor shared by all fields, a block factor (survey, lifts, benchmarks) and noise, and a
  field is present when its score clears the quantile that gives its marginal null rate. Presence is
  therefore correlated, which is why about 7% of rows (not 0.01%) are complete enough to clean.
* **What they are.** Height and weight are drawn per gender and correlated. Two latent traits drive
  both the survey answers and strength: dedication ``D`` (training history, workouts a day, diet,
  coaching) and athleticism ``A`` (sports background). Strength also grows with weight and height and
  falls with age past the late twenties. Demographics alone therefore explain part of the total lift,
  the survey answers a further part, and noise the rest (R^2 is never near 1).
* **Quirks.** Junk values (zero and negative lifts, weights of 1-28 lb and 1,500+ lb, age 125,
  heights outside 48-96 in, gender ``--``), ``Decline to answer`` alone and inside multi-answers,
  contradictory combinations, null ids, exact duplicate rows and conflicting duplicate ids.

The population is fixed by the seed; the snapshot date only moves a few percent of profiles (athletes
who updated their weight or lifts), so consecutive snapshots describe the same athletes.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from crossfit_mlops.dag_contract import MAX_GENERATED_ROWS
from crossfit_mlops.data.vocabulary import (
    DECLINE,
    FULL_SIZE,
    LIFT_COLUMNS,
    MAX_ATHLETE_ID,
    RAW_COLUMNS,
    REGIONS,
    SURVEY_COLUMNS,
    SURVEY_OPTIONS,
    join_answer,
)
from crossfit_mlops.storage import check_output_file, publishing

log = logging.getLogger(__name__)

# Ids are unique and drawn without replacement from 1..max_athlete_id. The default is the real
# file's range (MAX_ATHLETE_ID: 423,006 athletes among ids up to about 632,000), so a size up to
# that serves the same ids for a seed as always. Scale runs of more rows pass a larger id space:
# ids beyond the real file's range, which no real athlete has (see :func:`id_space_for`).
# The draw shuffles an index of the whole id space (8 bytes an id): this bounds it to 128 MB.
MAX_ID_SPACE = 16_000_000
EMPTY_PROFILE_SHARE = 0.2175

# Share of non-null values in the whole raw file (1 - DATA.md's null fractions).
_PRESENT_OVERALL = {
    "region": 0.59, "team": 0.37, "affiliate": 0.57, "height": 0.38, "weight": 0.54,
    "fran": 0.13, "helen": 0.07, "grace": 0.10, "filthy50": 0.05, "fgonebad": 0.07,
    "run400": 0.05, "run5k": 0.09, "candj": 0.25, "snatch": 0.23, "deadlift": 0.27,
    "backsq": 0.26, "pullups": 0.12, "eat": 0.22, "train": 0.25, "background": 0.23,
    "experience": 0.25, "schedule": 0.23, "howlong": 0.26,
}  # fmt: skip
# Empty profiles still carry some of the club fields, nothing else.
_PRESENT_IN_EMPTY_PROFILES = {"region": 0.10, "team": 0.15, "affiliate": 0.30}
_BLOCK = {
    **dict.fromkeys(("eat", "train", "background", "experience", "schedule", "howlong"), "survey"),
    **dict.fromkeys(LIFT_COLUMNS, "lifts"),
    **dict.fromkeys(("fran", "helen", "grace", "filthy50", "fgonebad", "run400", "run5k",
                     "pullups"), "benchmarks"),
}  # fmt: skip
# Loadings of the copula (common engagement, block factor); the rest is noise. Tuned so that about
# 7% of rows survive cleaning with the null fractions above.
_COMMON_LOADING = 0.765
_BLOCK_LOADING = {"survey": 0.6, "lifts": 0.6, "benchmarks": 0.5}

_REGION_WEIGHTS = np.array(
    [10, 10, 9, 8, 11, 7, 8, 6, 7, 6, 5, 5, 4, 3, 3, 1, 1], dtype=float
)
# Small regional differences in strength (within-gender z units), e.g. Europe/Canada slightly up.
_REGION_EFFECT = np.array(
    [0.0, 0.02, 0.03, -0.01, 0.08, 0.02, 0.0, -0.02, 0.04, 0.0, 0.03, -0.02, 0.06, -0.08, 0.05,
     -0.10, -0.12]
)  # fmt: skip

# Per-gender calibration (women, men) from DATA.md's cleaned rows.
_HEIGHT = {"Female": (64.8, 2.7), "Male": (70.4, 2.9)}
_WEIGHT = {"Female": (144.0, 22.0), "Male": (190.0, 27.0)}
_TOTAL = {"Female": (693.0, 142.0), "Male": (1140.0, 209.0)}
_LIFT_SHARE = {
    "Female": np.array([140, 104, 249, 200]) / 693.0,
    "Male": np.array([230, 176, 404, 330]) / 1140.0,
}
_HEIGHT_WEIGHT_CORR_WITHIN = 0.52
# Strength model (within-gender z units), tuned so that survivors match DATA.md's correlations and a
# default LightGBM reaches about the R^2 known for the real data (V1 ~0.56, V2 ~0.72 on the test
# sample; real V2 ~0.75). NOISE 0.42 (was 0.50) keeps V2 there now that diet and tenure answers,
# recalibrated to the real survey effects, carry less of the dedication trait.
BODY_EFFECT = (0.36, -0.04)  # weight, height
TRAINING_EFFECT = (0.50, 0.36)  # dedication, athleticism
NOISE = 0.42
# log-scale noise: shared by the olympic lifts, shared by the power lifts, and each lift's own
# (candj, snatch, deadlift, backsq). The snatch, the most technical lift, varies most, and more
# among women (DATA.md: std/mean 0.26 for women, 0.23 for men). The deadlift's own 0.06 keeps the
# men's deadlift spread near DATA.md's 73 lb (78 on the test sample; 0.085 gave 82).
LIFT_NOISE = {"olympic": 0.07, "power": 0.05, "own": (0.08, 0.085, 0.06, 0.085), "snatch_women": 0.15}


@dataclass(frozen=True)
class GenerationResult:
    path: Path
    rows: int
    seed: int
    snapshot_id: str
    season_shift: float = 0.0
    max_athlete_id: int = MAX_ATHLETE_ID


def _rng_for(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *salt]))


def _logit(p: np.ndarray | float) -> np.ndarray | float:
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _calibrated_intercept(target: float, slope_draws: np.ndarray) -> float:
    """Intercept b with mean(sigmoid(b + slope_draws)) == target (bisection, ~30 steps)."""
    lo, hi = -12.0, 12.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if _sigmoid(mid + slope_draws).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class _Survey:
    """Draws multi-select answers from the latent traits, calibrated to DATA.md's shares."""

    def __init__(self, rng: np.random.Generator, dedication: np.ndarray, athleticism: np.ndarray):
        self.rng = rng
        self.d = dedication
        self.a = athleticism
        self.n = len(dedication)
        ref = np.random.default_rng(7)
        self._ref_d = ref.standard_normal(20_000)
        self._ref_a = ref.standard_normal(20_000)

    def tick(self, share: float, k_d: float = 0.0, k_a: float = 0.0) -> np.ndarray:
        """Boolean: does each athlete tick an option that ``share`` of athletes tick?"""
        b = _calibrated_intercept(share, k_d * self._ref_d + k_a * self._ref_a)
        return self.rng.random(self.n) < _sigmoid(b + k_d * self.d + k_a * self.a)

    def choose(self, shares: list[float], score: np.ndarray, noise: float) -> np.ndarray:
        """Ordered single choice: index of the bin of ``score + noise`` with the given shares."""
        latent = score + noise * self.rng.standard_normal(self.n)
        cuts = np.quantile(latent, np.cumsum(shares)[:-1])
        return np.searchsorted(cuts, latent)


def _encode(
    masks: dict[str, np.ndarray], options: tuple[str, ...], rng: np.random.Generator
) -> np.ndarray:
    """Bit masks of ticked options -> raw answer strings (one lookup per distinct combination).

    Whoever answers a question ticks at least one option: an athlete with none ticked gets one,
    drawn in proportion to how often each option is ticked.
    """
    code = np.zeros(len(next(iter(masks.values()))), dtype=np.int64)
    for bit, option in enumerate(options):
        code |= masks[option].astype(np.int64) << bit
    none = code == 0
    weights = np.array([masks[o].mean() for o in options]) + 1e-9
    # one draw per athlete, used where none is ticked: the random stream does not depend on how
    # many that is, so recalibrating one option's loadings moves nothing else in the snapshot
    picked = rng.choice(len(options), size=len(code), p=weights / weights.sum())
    code[none] = np.left_shift(1, picked[none])
    uniques, inverse = np.unique(code, return_inverse=True)
    table = np.array(
        [join_answer([o for bit, o in enumerate(options) if u >> bit & 1]) for u in uniques],
        dtype=object,
    )
    return table[inverse]


# The loadings k_d / k_a of each option below set its effect on total lift (the latent traits also
# drive strength). They are calibrated to the effects measured on real athletes (DATA.md's survey
# effect table, checked by tests/unit/test_generator.py): diet barely matters (weigh and measure
# +27 lb, convenient +2, strict Paleo -12), teaching and the Level 1 course matter most (+125-130),
# beginning alone goes with strength (+86) and beginning with a coach against it (-79), and tenure
# is strong but less than dedication itself (< 6 months -125, 4+ years +94).
def _eat(s: _Survey) -> dict[str, np.ndarray]:
    eat = SURVEY_OPTIONS["eat"]
    return {
        eat[0]: s.tick(0.25, k_d=-0.2),
        eat[1]: s.tick(0.67, k_d=0.1),
        eat[2]: s.tick(0.08, k_d=-0.15),
        eat[3]: s.tick(0.17, k_d=0.0),
        eat[4]: s.tick(0.09, k_d=0.35),
    }


def _train(s: _Survey) -> dict[str, np.ndarray]:
    tr = SURVEY_OPTIONS["train"]
    at_affiliate = s.tick(0.70, k_d=0.3)
    return {
        tr[0]: at_affiliate,
        tr[1]: s.tick(0.30, k_d=0.6),
        tr[2]: s.tick(0.35, k_d=-0.2),
        tr[3]: s.tick(0.22, k_d=0.5),
        tr[4]: s.tick(0.55, k_d=0.6),
        tr[5]: ~at_affiliate & (s.rng.random(s.n) < 0.8),
    }


def _background(s: _Survey) -> dict[str, np.ndarray]:
    bg = SURVEY_OPTIONS["background"]
    none_besides = s.tick(0.14, k_a=-2.5)
    sporty = ~none_besides
    return {
        bg[0]: none_besides,
        bg[1]: sporty & s.tick(0.275, k_a=1.6),
        bg[2]: sporty & s.tick(0.045, k_a=1.8),
        bg[3]: sporty & s.tick(0.75, k_a=1.2),
        bg[4]: sporty & s.tick(0.34, k_a=0.4, k_d=0.2),
    }


def _experience(s: _Survey) -> dict[str, np.ndarray]:
    ex = SURVEY_OPTIONS["experience"]
    # the ones who began alone (often early, self-coached adopters) are the stronger group
    with_coach = s.tick(0.76, k_d=-0.7, k_a=-0.35)
    alone = ~with_coach | (s.rng.random(s.n) < 0.02)
    return {
        ex[0]: alone,
        ex[1]: with_coach,
        ex[2]: s.tick(0.17, k_d=1.0),
        ex[3]: s.tick(0.36, k_d=0.5),
        ex[4]: s.tick(0.31, k_d=1.85, k_a=0.2),
        ex[5]: s.tick(0.27, k_d=2.05, k_a=0.2),
    }


def _schedule(s: _Survey) -> dict[str, np.ndarray]:
    sc = SURVEY_OPTIONS["schedule"]
    # Workouts a day: none said / 1 a day / multiple 1x / 2x / 3+ a week (mutually exclusive); the
    # clearest trace of dedication in the answers (it carries what diet and tenure no longer do).
    per_day = s.choose([0.0, 0.56, 0.09, 0.13, 0.22], 1.8 * s.d, noise=0.8)
    per_day[s.rng.random(s.n) < 0.06] = 0
    rest = s.choose([0.43, 0.47, 0.10], 0.0 * s.d, noise=1.0)  # 0 none, 1 four or more, 2 fewer
    rest_code = np.where(rest == 0, 0, np.where(s.tick(0.10 / 0.57, k_d=1.0), 2, 1))
    return {
        sc[0]: per_day == 2,
        sc[1]: per_day == 3,
        sc[2]: per_day == 4,
        sc[3]: s.tick(0.19, k_d=0.6),
        sc[4]: rest_code == 1,
        sc[5]: rest_code == 2,
        sc[6]: per_day == 1,
    }


def _howlong(s: _Survey) -> dict[str, np.ndarray]:
    hl = SURVEY_OPTIONS["howlong"]
    years = s.choose([0.06, 0.14, 0.35, 0.33, 0.12], 0.5 * s.d, noise=0.8)
    second = s.rng.random(s.n) < 0.015  # contradictory answers such as '1-2 years|2-4 years|'
    neighbour = np.clip(years + 1, 0, 4)
    return {opt: (years == i) | (second & (neighbour == i)) for i, opt in enumerate(hl)}


_QUESTIONS = {"eat": _eat, "train": _train, "background": _background, "experience": _experience,
              "schedule": _schedule, "howlong": _howlong}  # fmt: skip


def _survey_answers(rng: np.random.Generator, d: np.ndarray, a: np.ndarray) -> dict[str, np.ndarray]:
    """Every survey question's raw answers (one question after the other: the draw order is fixed)."""
    s = _Survey(rng, d, a)
    return {question: _encode(ticks(s), SURVEY_OPTIONS[question], rng) for question, ticks in _QUESTIONS.items()}


def _add_declines(rng: np.random.Generator, answers: dict[str, np.ndarray]) -> None:
    """``Decline to answer|`` alone (about 2% per question) and inside multi-answers (0.5%)."""
    n = len(answers["eat"])
    decliner = rng.random(n) < 0.06
    for values in answers.values():
        alone = decliner & (rng.random(n) < 0.35)
        inside = ~alone & (rng.random(n) < 0.005)
        values[alone] = f"{DECLINE}|"
        values[inside] = values[inside] + f"{DECLINE}|"


def _present_masks(rng: np.random.Generator, empty: np.ndarray) -> dict[str, np.ndarray]:
    from scipy.stats import norm  # scipy ships with scikit-learn

    n = len(empty)
    has_profile = ~empty
    share_profile = has_profile.mean()
    common = rng.standard_normal(n)
    blocks = {name: rng.standard_normal(n) for name in _BLOCK_LOADING}
    masks: dict[str, np.ndarray] = {}
    for field, overall in _PRESENT_OVERALL.items():
        in_empty = _PRESENT_IN_EMPTY_PROFILES.get(field, 0.0)
        target = (overall - (1 - share_profile) * in_empty) / share_profile
        target = float(np.clip(target, 0.001, 0.999))
        block = _BLOCK.get(field)
        a_c = _COMMON_LOADING
        a_b = _BLOCK_LOADING[block] if block else 0.0
        a_e = np.sqrt(max(1e-6, 1.0 - a_c**2 - a_b**2))
        score = a_c * common + a_e * rng.standard_normal(n)
        if block:
            score = score + a_b * blocks[block]
        # scores are standard normal by construction: the quantile gives the marginal share
        present = score > norm.ppf(1.0 - target)
        present = np.where(has_profile, present, rng.random(n) < in_empty)
        masks[field] = present
    return masks


def _strength(
    rng: np.random.Generator,
    male: np.ndarray,
    age: np.ndarray,
    z_height: np.ndarray,
    z_weight: np.ndarray,
    region_idx: np.ndarray,
    d: np.ndarray,
    a: np.ndarray,
) -> np.ndarray:
    """Within-gender strength score (mean 0, sd 1)."""
    age_effect = -0.038 * np.clip(age - 29.0, 0, None) - 0.06 * np.clip(24.0 - age, 0, None)
    body = BODY_EFFECT[0] * z_weight + BODY_EFFECT[1] * z_height - 0.10 * np.maximum(z_weight - 1.5, 0) ** 2
    training = TRAINING_EFFECT[0] * d + TRAINING_EFFECT[1] * a
    score = body + age_effect + training + 1.6 * _REGION_EFFECT[region_idx] + NOISE * rng.standard_normal(
        len(male)
    )
    return (score - score.mean()) / score.std()


@dataclass(frozen=True)
class _Profiles:
    """Who the athletes are: sex, age, body, region, and the latent traits (within-gender z units)."""

    gender: np.ndarray
    male: np.ndarray
    age: np.ndarray
    z_height: np.ndarray
    z_weight: np.ndarray
    height: np.ndarray
    weight: np.ndarray
    region_idx: np.ndarray
    dedication: np.ndarray
    athleticism: np.ndarray


def _per_gender(male: np.ndarray, table: dict[str, tuple[float, float]], index: int) -> np.ndarray:
    return np.where(male, table["Male"][index], table["Female"][index])


def _draw_profiles(rng: np.random.Generator, n: int) -> _Profiles:
    u = rng.random(n)
    gender = np.where(u < 0.715, "Male", np.where(u < 0.994, "Female", "--")).astype(object)
    male = gender == "Male"
    minors = rng.random(n) < 0.035
    age = np.where(minors, rng.integers(13, 18, n), 18 + np.round(rng.gamma(3.5, 4.0, n)))
    age = np.where(rng.random(n) < 0.0002, 125, age).astype("float64")
    z_h = rng.standard_normal(n)
    r = _HEIGHT_WEIGHT_CORR_WITHIN
    # weight skews right: a lognormal-ish tail on top of the correlated normal part
    z_w = r * z_h + np.sqrt(1 - r**2) * rng.standard_normal(n)
    z_w = z_w + 0.15 * (z_w**2 - 1)
    z_w = z_w / np.sqrt(1 + 2 * 0.15**2)
    height = np.round(_per_gender(male, _HEIGHT, 0) + _per_gender(male, _HEIGHT, 1) * z_h)
    weight = np.round(_per_gender(male, _WEIGHT, 0) + _per_gender(male, _WEIGHT, 1) * z_w)
    region_idx = rng.choice(len(REGIONS), size=n, p=_REGION_WEIGHTS / _REGION_WEIGHTS.sum())
    d = rng.standard_normal(n)
    a = rng.standard_normal(n)
    return _Profiles(gender, male, age, z_h, z_w, height, weight, region_idx, d, a)


def _draw_lifts(rng: np.random.Generator, p: _Profiles) -> np.ndarray:
    """The four lifts (n x 4, LIFT_COLUMNS order): a total from the strength score, split by the
    lifts' usual shares, with shared olympic / power noise and each lift's own."""
    n = len(p.male)
    strength = _strength(rng, p.male, p.age, p.z_height, p.z_weight, p.region_idx, p.dedication, p.athleticism)
    # 0.95: the per-lift noise below adds back the spread this takes away
    total = np.clip(_per_gender(p.male, _TOTAL, 0) + 0.95 * _per_gender(p.male, _TOTAL, 1) * strength, 150, None)
    share = np.where(p.male[:, None], _LIFT_SHARE["Male"], _LIFT_SHARE["Female"])
    olympic = LIFT_NOISE["olympic"] * rng.standard_normal(n)
    power = LIFT_NOISE["power"] * rng.standard_normal(n)
    own = np.asarray(LIFT_NOISE["own"]) * rng.standard_normal((n, 4))
    own[~p.male, 1] *= LIFT_NOISE["snatch_women"] / LIFT_NOISE["own"][1]
    dev = np.column_stack([olympic, olympic, power, power]) + own
    return np.round(total[:, None] * share * np.exp(dev))


def _draw_benchmarks(rng: np.random.Generator, dedication: np.ndarray) -> dict[str, np.ndarray]:
    """Benchmark workouts (seconds; fgonebad and pullups in reps), driven by a fitness score."""
    n = len(dedication)
    fitness = 0.6 * dedication + 0.4 * rng.standard_normal(n)
    bench = {
        "fran": 300 - 70 * fitness + 40 * rng.standard_normal(n),
        "helen": 620 - 80 * fitness + 60 * rng.standard_normal(n),
        "grace": 230 - 60 * fitness + 50 * rng.standard_normal(n),
        "filthy50": 1500 - 200 * fitness + 200 * rng.standard_normal(n),
        "fgonebad": 290 + 50 * fitness + 30 * rng.standard_normal(n),
        "run400": 78 - 8 * fitness + 8 * rng.standard_normal(n),
        "run5k": 1500 - 150 * fitness + 150 * rng.standard_normal(n),
        "pullups": 28 + 10 * fitness + 6 * rng.standard_normal(n),
    }
    return {k: np.round(np.clip(v, 1 if k == "pullups" else 20, None)) for k, v in bench.items()}


def id_space_for(rows: int) -> int:
    """The id space a snapshot of ``rows`` needs at the real file's density of ids (423,006 athletes
    among 632,000 ids), never below the real range: :data:`MAX_ATHLETE_ID` up to the full size,
    beyond the real data above it (4x the full size: 2,528,000)."""
    return max(MAX_ATHLETE_ID, math.ceil(rows * MAX_ATHLETE_ID / FULL_SIZE))


def _draw_ids(rng: np.random.Generator, n: int, max_athlete_id: int) -> np.ndarray:
    """``n`` unique ids from 1..max_athlete_id, unsorted, as floats (the raw file has null ids).

    numpy shuffles the tail of an index of the whole space (8 bytes an id, then freed): 4x the full
    size, 1.7 M ids from 2.5 M, takes about 0.2 s and 33 MB here.
    """
    return (rng.choice(max_athlete_id, size=n, replace=False) + 1).astype("float64")


def _check_generation_inputs(rows: int, season_shift: float, seed: int, max_athlete_id: int = MAX_ATHLETE_ID) -> None:
    if rows < 10 or rows > MAX_GENERATED_ROWS:
        raise ValueError(f"rows must be between 10 and {MAX_GENERATED_ROWS}, got {rows}")
    if isinstance(max_athlete_id, bool) or not isinstance(max_athlete_id, numbers.Integral) or not 1 <= max_athlete_id <= MAX_ID_SPACE:
        raise ValueError(f"max_athlete_id must be a whole number in [1, {MAX_ID_SPACE}], got {max_athlete_id!r}")
    if rows > max_athlete_id:
        space = "the real file's range" if max_athlete_id == MAX_ATHLETE_ID else "the id space asked for"
        raise ValueError(
            f"rows={rows} is more than the {max_athlete_id} unique athlete ids of {space} (1..{max_athlete_id}); "
            f"a scale run beyond the real data needs max_athlete_id (--max-athlete-id) of at least {rows}, "
            f"e.g. {id_space_for(rows)} at the real file's density"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= 2**32 - 1:
        raise ValueError(f"seed must be a whole number in [0, 2^32-1], got {seed!r}")
    if not 0.0 <= season_shift <= MAX_SEASON_SHIFT:
        raise ValueError(f"season_shift must be within [0, {MAX_SEASON_SHIFT}], got {season_shift}")


def generate_frame(
    rows: int = FULL_SIZE,
    seed: int = 42,
    snapshot_id: str | None = None,
    season_shift: float = 0.0,
    max_athlete_id: int = MAX_ATHLETE_ID,
) -> pd.DataFrame:
    """Generate a raw snapshot as a DataFrame with the raw file's columns (as strings/floats).

    ``season_shift`` > 0 simulates a later season in which the same athletes came back stronger and
    heavier (see :func:`_apply_season_shift`): the drift that monitoring should catch. 0 = none.
    ``max_athlete_id``: ids are unique, drawn from 1..max_athlete_id; the default is the real file's
    range, so ``rows`` above it is a ``ValueError``. A larger value (:func:`id_space_for`) serves
    scale runs with ids beyond the real data.
    """
    _check_generation_inputs(rows, season_shift, seed, max_athlete_id)
    rng, n = _rng_for(seed), rows
    ids = _draw_ids(rng, n, max_athlete_id)
    empty = rng.random(n) < EMPTY_PROFILE_SHARE
    present = _present_masks(rng, empty)
    p = _draw_profiles(rng, n)
    lifts = _draw_lifts(rng, p)
    answers = _survey_answers(rng, p.dedication, p.athleticism)
    _add_declines(rng, answers)
    bench = _draw_benchmarks(rng, p.dedication)
    name_vocab, team_vocab, affiliate_vocab = _vocabularies()
    frame = pd.DataFrame(
        {
            "athlete_id": ids,
            "name": name_vocab.pick(rng, n),
            "region": np.array(REGIONS, dtype=object)[p.region_idx],
            "team": team_vocab.pick(rng, n),
            "affiliate": affiliate_vocab.pick(rng, n),
            "gender": p.gender,
            "age": p.age,
            "height": p.height,
            "weight": p.weight,
            **bench,
            **{col: lifts[:, i] for i, col in enumerate(LIFT_COLUMNS)},
            **answers,
        },
        columns=list(RAW_COLUMNS),
    )
    _inject_junk(rng, frame)
    if snapshot_id is not None:
        _apply_snapshot_updates(frame, seed, snapshot_id)
    if season_shift:
        _apply_season_shift(frame, season_shift)
    # nulls: empty profiles, then the copula's presence masks
    frame.loc[empty, ["name", "gender", "age"]] = None
    for field_name, mask in present.items():
        frame.loc[~mask, field_name] = None
    _inject_recipe_traps(rng, frame)
    frame.loc[rng.choice(n, size=3, replace=False), "athlete_id"] = np.nan
    return frame


def _inject_junk(rng: np.random.Generator, frame: pd.DataFrame) -> None:
    n = len(frame)

    def some(share: float) -> np.ndarray:
        return np.flatnonzero(rng.random(n) < share)

    idx = some(0.0015)
    frame.loc[idx, "weight"] = rng.choice([1, 5, 12, 28, 40], size=len(idx))
    idx = some(0.0012)
    frame.loc[idx, "weight"] = rng.choice([1500, 1550, 1800, 2000, 9999], size=len(idx))
    idx = some(0.004)
    frame.loc[idx, "height"] = rng.choice([0, 1, 5, 12, 30, 44, 100, 120, 170, 183, 1800], size=len(idx))
    idx = some(0.0002)
    frame.loc[idx, "age"] = 125
    for col in LIFT_COLUMNS:
        idx = some(0.004)
        frame.loc[idx, col] = 0
        idx = some(0.0008)
        frame.loc[idx, col] = -rng.choice([45, 135, 225, 500], size=len(idx))
        idx = some(0.0015)
        limit = {"candj": 395, "snatch": 496, "deadlift": 1105, "backsq": 1069}[col]
        frame.loc[idx, col] = limit + rng.integers(5, 4000, size=len(idx))
    # a placeholder gender on otherwise normal rows
    idx = some(0.002)
    frame.loc[idx, "gender"] = "--"


def _apply_snapshot_updates(frame: pd.DataFrame, seed: int, snapshot_id: str) -> None:
    """Deterministic per-date profile updates: ~3% of athletes changed weight or lifts."""
    day = date.fromisoformat(snapshot_id).toordinal()
    rng = _rng_for(seed, day)
    n = len(frame)
    idx = np.flatnonzero(rng.random(n) < 0.03)
    frame.loc[idx, "weight"] = np.round(
        frame.loc[idx, "weight"].to_numpy() * np.exp(0.03 * rng.standard_normal(len(idx)))
    )
    gain = np.exp(0.02 + 0.03 * rng.standard_normal(len(idx)))
    for col in LIFT_COLUMNS:
        values = frame.loc[idx, col].to_numpy()
        frame.loc[idx, col] = np.where(values > 0, np.round(values * gain), values)


# Beyond this the shifted lifts run into the cleaning caps for most men: the data stops looking real.
MAX_SEASON_SHIFT = 0.5


def _apply_season_shift(frame: pd.DataFrame, shift: float) -> None:
    """A later season: every lift is ``shift`` heavier, body weight ``shift / 2`` heavier.

    The lifts are the target, so a model trained before under-predicts (its error grows); body
    weight is a feature of both versions, so the shift also shows as data drift. Junk values
    (zero or negative lifts, absurd weights) stay junk: only positive values are scaled.
    """
    weight = frame["weight"].to_numpy(dtype="float64")
    frame["weight"] = np.where(weight > 0, np.round(weight * (1 + shift / 2)), weight)
    for col in LIFT_COLUMNS:
        values = frame[col].to_numpy(dtype="float64")
        frame[col] = np.where(values > 0, np.round(values * (1 + shift)), values)


def _inject_recipe_traps(rng: np.random.Generator, frame: pd.DataFrame) -> None:
    """The rows that slip through the usual recipe (DATA.md), placed on otherwise complete rows.

    Exact duplicate rows, ids reused by a row with other content, total_lift of 4 (1 lb lifts),
    weights of 5 and 28 lb, and women with a deadlift <= 0.
    """
    n = len(frame)
    k = max(1, n // 100_000)
    profile = ["gender", "age", "region", "height", "weight", *LIFT_COLUMNS, *SURVEY_COLUMNS]
    complete = np.flatnonzero(frame[profile].notna().all(axis=1).to_numpy())
    pool = complete if len(complete) >= 20 * k else np.arange(n)
    traps = rng.choice(pool, size=min(len(pool), 9 * k), replace=False)
    lifts = [frame.columns.get_loc(c) for c in LIFT_COLUMNS]
    frame.iloc[traps[:3 * k], lifts] = 1
    frame.iloc[traps[3 * k : 5 * k], frame.columns.get_loc("weight")] = np.resize([5, 28], 2 * k)
    women = traps[5 * k :][frame["gender"].to_numpy()[traps[5 * k :]] == "Female"]
    frame.iloc[women, frame.columns.get_loc("deadlift")] = rng.choice([0, -225, -500], size=len(women))

    src = rng.choice(np.setdiff1d(pool, traps), size=2 * k, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), size=2 * k, replace=False)
    # exact copies: the whole row
    frame.iloc[dst[:k]] = frame.iloc[src[:k]].to_numpy()
    # conflicting: same id, other content (the athlete's weight differs)
    frame.iloc[dst[k:]] = frame.iloc[src[k:]].to_numpy()
    column = frame.columns.get_loc("weight")
    frame.iloc[dst[k:], column] = frame.iloc[dst[k:], column].to_numpy() + rng.integers(5, 30, size=k)


class _Vocabulary:
    """A fixed list of strings drawn by index (fast for hundreds of thousands of rows)."""

    def __init__(self, values: list[str], zipf: float = 1.1):
        self.values = np.array(values, dtype=object)
        ranks = np.arange(1, len(values) + 1, dtype=float)
        weights = ranks**-zipf
        self.p = weights / weights.sum()

    def pick(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.values[rng.choice(len(self.values), size=n, p=self.p)]


_FIRST = ["James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas", "Chris", "Daniel", "Matthew", "Anthony", "Mark", "Steven", "Andrew", "Josh", "Kevin", "Brian", "Ryan", "Jason", "Justin", "Brandon", "Ben", "Sam", "Alex", "Nick", "Tyler", "Jake", "Luke", "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Sarah", "Jessica", "Karen", "Lisa", "Nancy", "Ashley", "Emily", "Amanda", "Megan", "Rachel", "Lauren", "Katie", "Anna", "Julia", "Hannah", "Sophie", "Chloe", "José", "Zoë", "Łukasz", "Søren", "Björn", "Renée", "Chloé", "André", "Jürgen", "Małgorzata", "Inês", "Joaquín", "Anaïs", "Noémie", "João", "Kübra", "Théo", "Ægir", "Žofia"]
_LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Garcia", "Rodriguez", "Wilson", "Martinez", "Anderson", "Taylor", "Thomas", "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill", "Campbell", "Mitchell", "Roberts", "Carter", "Phillips", "Evans", "Turner", "Müller", "Guðmundsdóttir", "Søndergaard", "Nöel", "Peña", "Fernández", "Gonçalves", "Dvořák", "Kowalczyk", "Ødegård", "Ñúñez", "Björnsson", "Łęcki", "O'Brien", "McDonald", "Fraser", "Davidsdóttir", "Leblanc-Bazinet", "Sigmundsdóttir"]
_TOWNS = ["Asheville", "Boston", "Denver", "Austin", "Oakland", "Madison", "Raleigh", "Tampa", "Phoenix", "Tucson", "Portland", "Seattle", "Boise", "Omaha", "Dayton", "Akron", "Reno", "Miami", "Orlando", "Atlanta", "Nashville", "Memphis", "Dallas", "Houston", "Sydney", "Brisbane", "Perth", "Toronto", "Ottawa", "Calgary", "Vancouver", "London", "Madrid", "Paris", "Berlin", "Oslo", "Reykjavík", "Guarujá", "São", "Paulo", "Zürich", "Malmö", "Kraków", "Bogotá", "Querétaro", "Durban", "Cape", "Town", "Dubai", "Seoul", "Tokyo"]


@functools.cache
def _vocabularies() -> tuple[_Vocabulary, _Vocabulary, _Vocabulary]:
    rng = np.random.default_rng(20160101)
    names = sorted({f"{f} {la}" for f in _FIRST for la in _LAST})
    rng.shuffle(names)
    affiliates = sorted(
        {f"CrossFit {t}" for t in _TOWNS}
        | {f"{t} CrossFit" for t in _TOWNS}
        | {f"CrossFit {w} {t}" for t in _TOWNS for w in ("Iron", "North", "Forge", "Rise", "Urban")}
    )
    rng.shuffle(affiliates)
    teams = sorted(
        {f"Team {t} {w}" for t in _TOWNS for w in ("Inox", "Black", "Red", "Elite", "Barbell")}
        | {"Team Guarujá Inox"}
    )
    rng.shuffle(teams)
    return _Vocabulary(names, 0.3), _Vocabulary(teams, 1.0), _Vocabulary(affiliates, 0.8)


def write_snapshot(
    path: Path,
    rows: int = FULL_SIZE,
    seed: int = 42,
    snapshot_id: str | None = None,
    season_shift: float = 0.0,
    max_athlete_id: int = MAX_ATHLETE_ID,
) -> GenerationResult:
    """Generate and write ``athletes.csv`` (published in one step: never half-written). ``path``
    must be new or a regular file: anything else is refused before generating."""
    check_output_file(Path(path), "--out")
    frame = generate_frame(
        rows=rows, seed=seed, snapshot_id=snapshot_id, season_shift=season_shift, max_athlete_id=max_athlete_id
    )
    with publishing(Path(path), directory=False) as tmp:
        frame.astype({"athlete_id": "Int64"}).to_csv(tmp, index=False, encoding="utf-8")
    log.info(
        "wrote %s rows to %s (seed=%s, snapshot=%s, season shift=%s, ids 1..%s)",
        rows, path, seed, snapshot_id, season_shift, max_athlete_id,
    )  # fmt: skip
    return GenerationResult(
        path=path, rows=rows, seed=seed, snapshot_id=snapshot_id or "", season_shift=season_shift,
        max_athlete_id=max_athlete_id,
    )  # fmt: skip
