"""Lineage both ways: from a model version to what it needs, from a feature view to who uses it.

Each registered version is tagged with Feast's own MLflow conventions (``feast.feature_service``,
``feast.project``) plus the feature views and their Feast version numbers at registration
(``feast.feature_views``), and its run carries ``feast_features.json`` (the feature references).
So Feast's MLflow integration (``feast.mlflow_integration``, in the pinned 0.67) resolves a model
URI to its FeatureService and checks it against the registry; this module adds the snapshot and
training-set side, and the reverse lookup Feast does not have: which versions use a feature view.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from crossfit_mlops.features.specs import FEATURE_SETS, feature_set
from crossfit_mlops.tracking import client
from crossfit_mlops.tracking.aliases import CHALLENGER, CHAMPION, GATE_TAGS, model_uri

log = logging.getLogger(__name__)

FEAST_SERVICE_TAG = "feast.feature_service"  # Feast's own tag (feast.mlflow_integration)
FEAST_PROJECT_TAG = "feast.project"
FEAST_VIEWS_TAG = "feast.feature_views"  # "view@version[,view@version]"
FEATURES_FILE = "feast_features.json"  # Feast's file of the run's feature references


def feature_view_versions(store, version: str) -> dict[str, int | None]:
    """The Feast version number of every view behind a feature version's FeatureService now."""
    service = store.get_feature_service(feature_set(version).service_name)
    views = {}
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        views[projection.name] = getattr(view, "current_version_number", None)
    return views


def tag_lineage(tracking_uri: str, model_name: str, version: str, feature_version: str, store) -> dict[str, str]:
    """Tag a registered version with its FeatureService, project and feature-view versions, and
    log the feature references on its run, the way Feast's MLflow integration reads them."""
    c = client(tracking_uri)
    mv = c.get_model_version(model_name, version)
    views = feature_view_versions(store, feature_version)
    tags = {
        FEAST_SERVICE_TAG: feature_set(feature_version).service_name,
        FEAST_PROJECT_TAG: store.project,
        FEAST_VIEWS_TAG: ",".join(f"{name}@{number if number is not None else 0}" for name, number in sorted(views.items())),
    }
    for key, value in tags.items():
        c.set_model_version_tag(model_name, version, key, value)
    refs = [f"{feature_set(feature_version).view_name}:{name}" for name in feature_set(feature_version).names]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / FEATURES_FILE
        path.write_text(json.dumps(refs))
        c.log_artifact(mv.run_id, str(path))
    return tags


def lineage(tracking_uri: str, model_name: str, version: str, store=None) -> dict[str, Any]:
    """One call from a model version to everything it came from: the FeatureService (resolved by
    Feast's integration when a store is given), the feature views and their versions, the
    snapshot and its digest, the training sets, the run."""
    c = client(tracking_uri)
    mv = c.get_model_version(model_name, version)
    run = c.get_run(mv.run_id)
    tags = mv.tags
    service = tags.get(FEAST_SERVICE_TAG) or tags.get("feature_service")
    if store is not None:
        import mlflow
        from feast.mlflow_integration.model_resolver import FeastMlflowModelResolver

        service = FeastMlflowModelResolver(store, mlflow, c).resolve(model_uri(model_name, version))
    views = [v.split("@") for v in tags.get(FEAST_VIEWS_TAG, "").split(",") if v]
    return {
        "model": model_name,
        "version": str(version),
        "model_uri": model_uri(model_name, version),
        "run_id": mv.run_id,
        "feature_service": service,
        "feature_version": tags.get("feature_version"),
        "feature_views": [{"name": name, "version": int(number)} for name, number in views],
        "features": feature_set(tags["feature_version"]).names if tags.get("feature_version") in FEATURE_SETS else [],
        "snapshot_id": tags.get("snapshot_id"),
        "snapshot_sha256": tags.get("snapshot_sha256"),
        "training_sets": {k.removeprefix("dataset."): v for k, v in run.data.tags.items() if k.startswith("dataset.")},
        "git_commit": run.data.tags.get("git_commit"),
    }


def versions_using(tracking_uri: str, model_name: str, view_name: str) -> list[dict[str, Any]]:
    """Every version of ``model_name`` that was trained on ``view_name`` (any of its versions),
    with its aliases and gate decision: who is affected before anyone changes a feature."""
    c = client(tracking_uri)
    aliases = c.get_registered_model(model_name).aliases
    found = []
    for mv in c.search_model_versions(f"name='{model_name}'"):
        views = dict(v.split("@") for v in mv.tags.get(FEAST_VIEWS_TAG, "").split(",") if v)
        legacy = mv.tags.get("feature_version") in FEATURE_SETS and feature_set(mv.tags["feature_version"]).view_name == view_name
        if view_name in views or (not views and legacy):
            found.append({
                "version": str(mv.version),
                "view_version": int(views[view_name]) if view_name in views else None,
                "aliases": [a for a, v in aliases.items() if str(v) == str(mv.version) and a in (CHAMPION, CHALLENGER)],
                GATE_TAGS: mv.tags.get(f"{GATE_TAGS}.decision"),
                "snapshot_id": mv.tags.get("snapshot_id"),
            })  # fmt: skip
    return sorted(found, key=lambda v: int(v["version"]))
