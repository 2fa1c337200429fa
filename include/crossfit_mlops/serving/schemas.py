"""The API's request and response bodies: what FastAPI validates and what the OpenAPI document shows.

Request models are strict where a lax parse would change a meaning: an athlete id is a whole
number in Feast's INT64 range and never a JSON boolean (pydantic's lax int takes ``true`` as 1),
NaN and Infinity are refused, unknown fields are refused, and a batch is never empty. The size of a
batch is not a schema bound: above ``CROSSFIT_SERVING_MAX_BATCH`` it is a 413 ``batch_too_large``
(:mod:`crossfit_mlops.serving.routes.predict`), not a 422. The values of ``/predict/features`` are
checked against the champion's signature, which is known only at run time
(:mod:`crossfit_mlops.serving.inputs`).

Error bodies have one shape (:class:`ErrorBody`); :func:`error_responses` gives a route's
``responses=`` with an example of every error it can answer, in the bodies the API sends with its
default limits.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from crossfit_mlops.serving.edge import MAX_ERRORS

INT64_MAX = 2**63 - 1  # Feast's entity key is an INT64
_MODEL = "crossfit_total_lift"  # the registered model name of the examples (the settings' default)


def _not_a_boolean(value: object) -> object:
    """JSON ``true`` is not athlete 1 (pydantic's lax int would take it as 1)."""
    if isinstance(value, bool):
        raise ValueError("an athlete id is a whole number, not a boolean")
    return value


AthleteId = Annotated[int, Field(ge=0, le=INT64_MAX), BeforeValidator(_not_a_boolean)]  # bounds first: in the schema
# the champion decides which names and ranges are valid: the schema says "numbers by name"
FeatureRow = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "additionalProperties": {"type": "number"},
                    "description": "every input of the champion's signature, by name (GET /model lists them)"}),
]  # fmt: skip


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PredictRequest(_Request):
    """Exactly one of ``athlete_id`` and ``athlete_ids``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"athlete_id": 408}, {"athlete_ids": [408, 1021]}]})
    athlete_id: AthleteId | None = Field(default=None, description="one athlete")
    athlete_ids: list[AthleteId] | None = Field(default=None, min_length=1, description="several athletes")

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.athlete_id is None) == (self.athlete_ids is None):
            raise ValueError("give exactly one of athlete_id and athlete_ids")
        return self


class FeaturesRequest(_Request):
    """Exactly one of ``features`` (one row) and ``instances`` (several rows)."""

    features: FeatureRow | None = Field(default=None, description="one row")
    instances: list[FeatureRow] | None = Field(default=None, min_length=1, description="several rows")

    @model_validator(mode="after")
    def _one_of(self) -> FeaturesRequest:
        if (self.features is None) == (self.instances is None):
            raise ValueError("give exactly one of features and instances")
        return self


# --- answers ---------------------------------------------------------------------------------------
class _Served(BaseModel):
    model_name: str = Field(examples=[_MODEL])
    model_version: str = Field(examples=["3"])
    feature_version: str = Field(description="the feature set the champion was trained on", examples=["v2"])


class AthletePrediction(BaseModel):
    athlete_id: int
    prediction: float = Field(description="total lift, lb")
    features_at: str = Field(description="event time of the online features the prediction used")


class Prediction(_Served, AthletePrediction):
    """One athlete's prediction."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "athlete_id": 408, "prediction": 1012.4, "features_at": "2026-11-22T00:00:00+00:00",
        "model_name": _MODEL, "model_version": "3", "feature_version": "v2"}]})  # fmt: skip


class BatchPredictions(_Served):
    """One prediction per athlete, in request order."""

    predictions: list[AthletePrediction]


class FeaturePredictions(_Served):
    """One prediction per row, in request order."""

    predictions: list[float] = Field(description="total lift, lb, in request order")
    scored_at: str = Field(examples=["2026-12-01T12:00:00.000+00:00"])


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    """``/predict`` can answer."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"ready": True, "model_version": "3", "feature_version": "v2"}]})
    ready: Literal[True]
    model_version: str
    feature_version: str
    refresh_error: str | None = Field(default=None, description="present when the last registry check failed")
    warnings: list[str] | None = Field(default=None, description="present when a feature table could not be indexed")


class NotReady(BaseModel):
    """``/predict`` cannot answer; ``reason`` says why (the same text as ``detail``)."""

    ready: Literal[False]
    error: str
    detail: str
    reason: str


class ModelInfo(BaseModel):
    """What serves: the champion, where its features come from, how it was trained and promoted."""

    model_name: str
    version: str
    alias: str
    model_uri: str
    feature_version: str
    feature_service: str | None
    features: list[str] = Field(description="model inputs, signature order")
    run_id: str | None
    snapshot_id: str | None
    training_metrics: dict[str, Any]
    model_family: str | None
    gate: dict[str, Any] = Field(description="the promotion gate's tags")
    champion_since: dict[str, Any] | None = Field(description="the alias-history event that made it champion")
    loaded_at: str
    refresh_seconds: float
    refresh_error: str | None
    shadow: dict[str, Any] | None = Field(
        None, description="the shadow challenger: `share` of requests it scores off the response path, the "
        "`challenger` loaded (null: none, or it is the champion; `reason` says which) and its `outcomes`; "
        "null when the shadow is off",
    )


# --- errors ----------------------------------------------------------------------------------------
class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    input: Any = Field(default=None, description="echoed only when a short, finite scalar")
    ctx: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """Every error: a stable code, what is wrong, and fields that depend on the code."""

    model_config = ConfigDict(extra="allow")
    error: str = Field(description="stable machine-readable code")
    detail: str | list[ValidationIssue] = Field(
        description=f"what is wrong; for a 422 one {{loc, msg, type}} per field (at most {MAX_ERRORS})"
    )


def _invalid(loc: list, msg: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"error": "invalid_input", "detail": [{"loc": loc, "msg": msg, "type": kind, **extra}]}


_DOWN = "registry at http://127.0.0.1:5000 unreachable: API request to endpoint /api/2.0/mlflow/registered-models/alias failed"
_NO_STORE = "the feature store cannot serve v2 features: FileNotFoundError: Registry not found at path \".state/feast/registry.db\""
_BATCH, _BODY, _ITEMS = 100, 2**20, 10_000  # the default limits (edge.request_limits)
UNAVAILABLE = {
    "no_champion": {"error": "no_champion",
                    "detail": f"no version of {_MODEL} has alias @champion yet: run the training pipeline first"},
    "registry_unavailable": {"error": "registry_unavailable", "detail": _DOWN},
    "starting": {"error": "starting", "detail": f"the first look for {_MODEL}@champion in the registry has not finished yet"},
    "feature_store_unavailable": {"error": "feature_store_unavailable", "detail": _NO_STORE},
}  # fmt: skip
ERRORS: dict[int, tuple[str, dict[str, dict[str, Any]]]] = {
    404: ("no feature snapshot has ever had the athlete", {"unknown": {
        "error": "unknown_athlete", "athlete_ids": [987654321],
        "detail": "unknown athlete_id 987654321: not in any v2 feature snapshot"}}),
    413: ("the request is larger than the limits", {
        "batch_too_large": {"error": "batch_too_large", "limit": _BATCH,
                            "detail": f"{_BATCH + 1} rows in one request; the limit is {_BATCH}"},
        "body_too_large": {"error": "body_too_large", "limit": _BODY,
                           "detail": f"the body has {_BODY * 4} bytes; the limit is {_BODY}"},
        "too_many_items": {"error": "too_many_items", "limit": _ITEMS,
                           "detail": f"the body has {_ITEMS * 4} ':' or ',' separators (object keys, array items); "
                                     f"the limit is {_ITEMS}"}}),
    422: ("a field is missing, unknown, of the wrong type, not finite, or out of its plausible range", {
        "not_finite": _invalid(["body", "athlete_id"], "Input should be a finite number", "finite_number"),
        "out_of_range": _invalid(["body", "features", "age"], "must be between 18 and 90", "out_of_range",
                                 input=-5, ctx={"ge": 18, "le": 90}),
        "unknown_field": _invalid(["body", "features", "bench_press"], "not an input of the champion's signature",
                                  "extra_forbidden")}),
    424: ("the athlete is known, but the online store has no fresh row: materialize a snapshot", {"missing": {
        "error": "features_unavailable", "athlete_ids": [408], "reasons": {"408": "no row in the online store"},
        "detail": "online v2 features unavailable (athlete_id 408: no row in the online store): "
                  "materialize a current snapshot"}}),
    503: ("nothing to answer with yet, or a dependency is down (see Retry-After)", UNAVAILABLE),
}  # fmt: skip


def documented(model: type[BaseModel] | None, description: str, examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One entry of a route's ``responses=``: the body's model and named examples."""
    content = {"application/json": {"examples": {name: {"value": value} for name, value in examples.items()}}}
    return {"model": model, "description": description, "content": content}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for these error statuses, each with an example of every error it stands for."""
    return {status: documented(ErrorBody, *ERRORS[status]) for status in statuses}
