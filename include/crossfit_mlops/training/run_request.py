"""What a training run is asked to do, checked when it starts (``resolve_run``).

Everything a run depends on is refused here, with a message naming the setting, instead of
failing late (a grid Airflow cannot map, a seed the generator refuses, a pandas sampling error)
or, worse, running on something else than asked (a misspelled ``snaphsot`` was ignored and the
run trained on today's snapshot). The DAG's Param schema holds the same bounds for the trigger
form; this is the check of record, also for a conf sent through the REST API.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

from crossfit_mlops.dag_contract import (
    APPROVAL_MODES,
    MAX_GENERATED_ROWS,
    MIN_GENERATED_ROWS,
    rows_schema,
    snapshot_schema,
)
from crossfit_mlops.data.vocabulary import FULL_SIZE
from crossfit_mlops.training.grid import DEFAULT_GRID, MAX_GRID_ENTRIES, parse_grid

MAX_SEED = 2**32 - 1  # numpy's and pandas' random_state bound


class RunRequestError(ValueError):
    """A run's conf or params ask for something the run cannot do; the message names the setting."""


def check_conf_keys(conf: dict[str, Any], known: set[str]) -> None:
    """Refuse conf keys that are not params of the DAG (a typo would otherwise be ignored)."""
    unknown = sorted(set(conf) - known)
    if not unknown:
        return
    hints = [f"{key!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(key, known, 1)) else repr(key)
             for key in unknown]  # fmt: skip
    raise RunRequestError(f"unknown conf keys {', '.join(hints)}; this DAG takes {sorted(known)}")


def _whole(name: str, value: Any, low: int, high: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RunRequestError(f"{name} must be a whole number in [{low}, {high}]{why}, got {value!r}")
    return value


@functools.cache
def codecarbon_countries() -> frozenset[str]:
    """The ISO 3166 alpha-3 codes CodeCarbon has a grid carbon intensity for (its own data file)."""
    import json
    from importlib.resources import files

    mix = files("codecarbon") / "data" / "private_infra" / "global_energy_mix.json"
    return frozenset(json.loads(mix.read_text()))


def check_country(code: Any, setting: str = "codecarbon_country") -> str:
    """``code`` if CodeCarbon knows the country (else its emissions would be recorded under a
    country that does not exist)."""
    if not isinstance(code, str) or code.strip().upper() not in codecarbon_countries():
        raise RunRequestError(
            f"{setting}={code!r} is not an ISO 3166 alpha-3 country code CodeCarbon has data for (e.g. USA, FRA, DEU)"
        )
    return code.strip().upper()


def checked_inputs(conf: dict[str, Any], params: dict[str, Any], declared: set[str], default_country: str) -> dict[str, Any]:
    """The run's checked inputs from the DAG run's ``conf`` and resolved ``params`` (``declared``:
    the DAG's param names): rows, seed, sample size, cross-validation folds, the grid (parsed), how
    many of its candidates must train, and the CodeCarbon country."""
    check_conf_keys(conf or {}, declared)
    if params["cv_folds"] == 1:
        raise RunRequestError("cv_folds must be 0 (no cross-validation) or at least 2")
    country_setting = "codecarbon_country" if params["codecarbon_country"] else "CROSSFIT_CODECARBON_COUNTRY"
    grid = [c.as_dict() for c in parse_grid(params["grid"])]
    return {
        "rows": _whole("rows", params["rows"], MIN_GENERATED_ROWS, MAX_GENERATED_ROWS, " (raw rows to generate)"),
        "seed": _whole("seed", params["seed"], 0, MAX_SEED),
        "sample_size": _whole("sample_size", params["sample_size"], 0, MAX_GENERATED_ROWS),
        "cv_folds": params["cv_folds"],
        "grid": grid,
        "min_successful_candidates": _whole(
            "min_successful_candidates", params["min_successful_candidates"], 1, len(grid),
            f" (candidates that must train for the run to go on; the grid has {len(grid)} entries)",
        ),
        "country": check_country(params["codecarbon_country"] or default_country, country_setting),
    }  # fmt: skip


def training_param_schemas(gate: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The training DAG's Params as ``{name: {"default": ..., <JSON schema>}}`` (the DAG turns each
    into ``Param(**schema)``), with the bounds :func:`checked_inputs` enforces; ``gate``: the gate
    policy's own (``contract.param_schemas(GatePolicy)``), shown after the gate mode."""
    return {
        "snapshot": snapshot_schema("ISO date of the raw snapshot; empty = the DAG run's date (UTC)."),
        "rows": rows_schema(FULL_SIZE, "Used only when the snapshot does not exist yet and no athletes.csv is provided."),
        "seed": {"default": 42, "type": "integer", "minimum": 0, "maximum": MAX_SEED, "title": "Generator and sampling seed"},
        "sample_size": {
            "default": 0, "type": "integer", "minimum": 0, "maximum": MAX_GENERATED_ROWS, "title": "Athletes to train on",
            "description": "0 = every clean athlete; otherwise a deterministic sample of that many.",
        },
        # items of type object: the trigger form shows a JSON editor (a plain array is a one-string-
        # per-line box, which renders these entries as "[object Object]")
        "grid": {
            "default": DEFAULT_GRID, "type": "array", "items": {"type": "object"}, "minItems": 1,
            "maxItems": MAX_GRID_ENTRIES, "title": "Training grid",
            "description": "One task per entry: {model: random_forest|lightgbm, feature_version: v1|v2, params: {...}}.",
        },
        "min_successful_candidates": {
            "default": 1, "type": "integer", "minimum": 1, "maximum": MAX_GRID_ENTRIES,
            "title": "Candidates that must train",
            "description": "A grid entry whose training task fails (after its retries) is on the leaderboard with its "
            "error and the run registers the best of the others; the run fails when fewer than this many trained. "
            "At most the grid's size.",
        },
        "cv_folds": {
            "default": 0, "type": "integer", "minimum": 0, "maximum": 10,
            "title": "Cross-validation folds of the chosen configuration",
            "description": "0 = off; k >= 2: a k-fold report (by athlete, on train + validation) on the parent run.",
        },
        "approval": {
            "default": "automatic", "type": "string", "enum": list(APPROVAL_MODES), "title": "Gate mode",
            "description": "automatic: the gate promotes; human: a challenger the gate passes waits for a person to "
            "Approve or Reject it in the Airflow UI (Required actions), and is rejected when nobody answers in time.",
        },
        **gate,
        "codecarbon_country": {
            "default": None, "type": ["null", "string"], "title": "CodeCarbon country (ISO 3166 alpha-3)",
            "description": "Empty = CROSSFIT_CODECARBON_COUNTRY (default USA).",
        },
    }  # fmt: skip
