"""Feature rows from a ``/predict/features`` body, checked against the champion's signature.

Which names a row needs, and which values are plausible, depends on the champion that serves
(its signature and :func:`crossfit_mlops.features.specs.feature_bounds`), so this check runs per
request, after the body's shape was validated by :class:`crossfit_mlops.serving.schemas.FeaturesRequest`.
Every wrong field is named in one 422, FastAPI style (``loc``, ``msg``, ``type``).
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.exceptions import RequestValidationError

from crossfit_mlops.features.specs import Bounds
from crossfit_mlops.serving.champion import Champion
from crossfit_mlops.serving.schemas import FeaturesRequest


def _value_problem(value: Any, integral: bool, bounds: Bounds | None) -> tuple[str, str] | None:
    """(message, type) of what is wrong with one feature value, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be {'an integer' if integral else 'a finite number'}", "type_error"
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        number = math.inf
    if not math.isfinite(number):
        return "must be a finite number", "finite_number"
    if integral and not number.is_integer():
        return "must be an integer", "type_error"
    if bounds is not None and not bounds.contains(number):
        return f"must be {bounds.describe()}", "out_of_range"
    return None


def _instance_errors(instance: dict[str, Any], loc: list, champion: Champion) -> tuple[list[dict], list[float]]:
    errors = [{"loc": [*loc, n], "msg": "Field required", "type": "missing"} for n in champion.columns if n not in instance]
    errors += [
        {"loc": [*loc, n], "msg": "not an input of the champion's signature", "type": "extra_forbidden"}
        for n in instance if n not in champion.column_types
    ]  # fmt: skip
    row = []
    for name in champion.columns:
        if name not in instance:
            continue
        value = instance[name]
        problem = _value_problem(value, champion.column_types[name] in {"long", "integer"}, champion.bounds.get(name))
        if problem is None:
            row.append(float(value))
        else:
            error = {"loc": [*loc, name], "msg": problem[0], "type": problem[1], "input": value}
            bounds = champion.bounds.get(name)
            if problem[1] == "out_of_range" and bounds is not None:
                error["ctx"] = {"gt" if bounds.exclusive else "ge": bounds.low, "lt" if bounds.exclusive else "le": bounds.high}
            errors.append(error)
    return errors, row


def rows_from_body(body: FeaturesRequest, champion: Champion) -> list[list[float]]:
    """Rows in the champion's column order; a 422 naming every wrong field, FastAPI style."""
    single = body.features is not None
    instances = [body.features] if single else body.instances
    errors, rows = [], []
    for index, instance in enumerate(instances):
        found, row = _instance_errors(instance, ["body", "features"] if single else ["body", "instances", index], champion)
        errors += found
        rows.append(row)
    if errors:
        raise RequestValidationError(errors)
    return rows
