"""The raw file's fixed vocabulary: header, column kinds, survey options, regions.

Read off the Kaggle "CrossFit Games" athletes file (see shared/DATA.md). The generator writes it,
the raw contract checks it and the feature specs encode it, so it is defined here once.
"""

from __future__ import annotations

# Rows of the real Kaggle file (DATA.md): the default size of a generated snapshot.
FULL_SIZE = 423_006
# The real file's athlete ids go up to about this (DATA.md): a generated snapshot draws its unique
# ids from 1..MAX_ATHLETE_ID unless a scale run asks for ids beyond the real data.
MAX_ATHLETE_ID = 632_000

RAW_COLUMNS: tuple[str, ...] = (
    "athlete_id", "name", "region", "team", "affiliate", "gender", "age", "height", "weight",
    "fran", "helen", "grace", "filthy50", "fgonebad", "run400", "run5k",
    "candj", "snatch", "deadlift", "backsq", "pullups",
    "eat", "train", "background", "experience", "schedule", "howlong",
)  # fmt: skip

TEXT_COLUMNS: tuple[str, ...] = ("name", "region", "team", "affiliate", "gender")
LIFT_COLUMNS: tuple[str, ...] = ("candj", "snatch", "deadlift", "backsq")
BENCHMARK_COLUMNS: tuple[str, ...] = (
    "fran", "helen", "grace", "filthy50", "fgonebad", "run400", "run5k", "pullups",
)  # fmt: skip
NUMERIC_COLUMNS: tuple[str, ...] = ("athlete_id", "age", "height", "weight", *BENCHMARK_COLUMNS[:7],
                                    *LIFT_COLUMNS, "pullups")  # fmt: skip
SURVEY_COLUMNS: tuple[str, ...] = ("eat", "train", "background", "experience", "schedule", "howlong")

GENDERS: tuple[str, ...] = ("Female", "Male")
DECLINE = "Decline to answer"
SURVEY_SEPARATOR = "|"

REGIONS: tuple[str, ...] = (
    "South East", "North East", "North Central", "Mid Atlantic", "Europe", "South Central",
    "Central East", "South West", "Australia", "Southern California", "North West",
    "Northern California", "Canada East", "Latin America", "Canada West", "Africa", "Asia",
)  # fmt: skip

# Options of each multi-select question, in the order the raw file lists them inside an answer.
SURVEY_OPTIONS: dict[str, tuple[str, ...]] = {
    "eat": (
        "I eat 1-3 full cheat meals per week",
        "I eat quality foods but don't measure the amount",
        "I eat strict Paleo",
        "I eat whatever is convenient",
        "I weigh and measure my food",
    ),
    "train": (
        "I workout mostly at a CrossFit Affiliate",
        "I have a coach who determines my programming",
        "I incorporate CrossFit.com workouts",
        "I write my own programming",
        "I record my workouts",
        "I workout mostly at home, work, or a traditional gym",
    ),
    "background": (
        "I have no athletic background besides CrossFit",
        "I played college sports",
        "I played professional sports",
        "I played youth or high school level sports",
        "I regularly play recreational sports",
    ),
    "experience": (
        "I began CrossFit by trying it alone (without a coach)",
        "I began CrossFit with a coach (e.g. at an affiliate)",
        "I have attended one or more specialty courses",
        "I have had a life changing experience due to CrossFit",
        "I have completed the CrossFit Level 1 certificate course",
        "I train other people",
    ),
    "schedule": (
        "I do multiple workouts in a day 1x a week",
        "I do multiple workouts in a day 2x a week",
        "I do multiple workouts in a day 3+ times a week",
        "I strictly schedule my rest days",
        "I typically rest 4 or more days per month",
        "I typically rest fewer than 4 days per month",
        "I usually only do 1 workout a day",
    ),
    "howlong": (
        "Less than 6 months",
        "6-12 months",
        "1-2 years",
        "2-4 years",
        "4+ years",
    ),
}


def split_answer(answer: str) -> list[str]:
    """``'a|b|'`` -> ``['a', 'b']``: the options ticked in one multi-select answer."""
    return [part for part in answer.split(SURVEY_SEPARATOR) if part]


def join_answer(options: list[str] | tuple[str, ...]) -> str:
    """``['a', 'b']`` -> ``'a|b|'``: the raw file's form, always ending in the separator."""
    return "".join(f"{option}{SURVEY_SEPARATOR}" for option in options)
