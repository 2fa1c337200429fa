"""The API's routes in process, around a holder that has no champion yet (no registry, no Feast).

What the integration tests cannot cheaply reach: the order of the checks (an invalid body is a 422
whatever the registry does), and the OpenAPI document the models make before any champion loads.
"""

from __future__ import annotations

import pytest

from crossfit_mlops.serving.app import create_app
from crossfit_mlops.serving.champion import ChampionHolder


@pytest.fixture
def client():
    from fastapi.testclient import TestClient

    holder = ChampionHolder("http://127.0.0.1:9", "crossfit_total_lift")  # never started: "starting"
    with TestClient(create_app(holder, None, start_refresh=False)) as client:
        yield client


@pytest.mark.parametrize(
    "path, body, loc",
    [
        ("/predict", {"athlete_id": True}, ["body", "athlete_id"]),
        ("/predict", {"athlete_ids": []}, ["body", "athlete_ids"]),
        ("/predict", {"athlete_id": -1}, ["body", "athlete_id"]),
        ("/predict", {"athlete_id": 1, "extra": 2}, ["body", "extra"]),
        ("/predict/features", {"features": 3}, ["body", "features"]),
        ("/predict/features", {"instances": []}, ["body", "instances"]),
    ],
)
def test_an_invalid_body_is_422_before_the_missing_champion_is_503(client, path, body, loc):
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input" and response.json()["detail"][0]["loc"] == loc


def test_a_valid_body_without_a_champion_is_503_with_retry_after(client):
    for path, body in (("/predict", {"athlete_id": 1}), ("/predict/features", {"features": {"age": 30}})):
        response = client.post(path, json=body)
        assert response.status_code == 503 and response.json()["error"] == "starting", response.text
        assert response.headers["retry-after"] == "5"
    assert client.get("/model").status_code == 503


def test_the_models_make_the_openapi_document(client):
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert {"PredictRequest", "FeaturesRequest", "Prediction", "BatchPredictions", "FeaturePredictions",
            "ModelInfo", "Readiness", "NotReady", "ErrorBody"} <= set(schemas)  # fmt: skip
    athlete_id = schemas["PredictRequest"]["properties"]["athlete_id"]["anyOf"][0]
    assert athlete_id["minimum"] == 0 and athlete_id["maximum"] == float(2**63 - 1)  # FastAPI writes a float
    assert schemas["PredictRequest"]["additionalProperties"] is False
    predict = document["paths"]["/predict"]["post"]
    assert predict["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictRequest")
    for status in ("404", "413", "422", "424", "503"):
        examples = predict["responses"][status]["content"]["application/json"]["examples"]
        assert examples and all({"error", "detail"} <= set(e["value"]) for e in examples.values()), status
    assert client.get("/docs").status_code == 200
