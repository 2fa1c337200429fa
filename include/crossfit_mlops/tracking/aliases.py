"""The registry's vocabulary: the aliases, the champion lookup, and loading a registered version.

``@champion`` is the version that serves; ``@challenger`` the newest candidate. Deprecated registry
stages are never set. Everything that asks "which version is the champion?" asks
:func:`champion_version` (or :func:`require_champion`), and "there is none" is :class:`NoChampion`
with one message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crossfit_mlops.tracking import client, fluent

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
# The gate's decision is recorded as version tags in this namespace (gate.decision, gate.reason ...).
GATE_TAGS = "gate"


class NoChampion(RuntimeError):
    """No model version can serve: no ``@champion`` yet, or the version it names cannot be used."""

    @classmethod
    def missing(cls, model_name: str) -> NoChampion:
        return cls(f"no version of {model_name} has alias @{CHAMPION} yet: run the training pipeline first")


class RegistryUnavailable(RuntimeError):
    """The registry could not be asked (the server is down or refused): not the same as no alias."""


# Error codes the registry answers when the model or the alias does not exist (MLflow 3.17).
_MISSING_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


def current_version(tracking_uri: str, model_name: str, alias: str) -> ModelVersion | None:
    """The version behind ``alias``; None when the alias or the model does not exist.

    Raises :class:`RegistryUnavailable` when the registry cannot answer, so that a server outage
    is never mistaken for "no champion".
    """
    from mlflow.exceptions import MlflowException

    try:
        return client(tracking_uri).get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code in _MISSING_CODES:
            return None
        raise RegistryUnavailable(f"registry at {tracking_uri} could not be asked for @{alias}: {exc}") from exc


def champion_version(tracking_uri: str, model_name: str) -> str | None:
    """The version number behind ``@champion`` (None: no such alias or model)."""
    mv = current_version(tracking_uri, model_name, CHAMPION)
    return None if mv is None else str(mv.version)


def require_champion(tracking_uri: str, model_name: str) -> ModelVersion:
    """The ``@champion`` version, or :class:`NoChampion`."""
    mv = current_version(tracking_uri, model_name, CHAMPION)
    if mv is None:
        raise NoChampion.missing(model_name)
    return mv


def model_uri(model_name: str, version: str) -> str:
    return f"models:/{model_name}/{version}"


def input_schema(tracking_uri: str, uri: str) -> list[dict[str, Any]]:
    """The input columns of a logged model's signature, in order (``[{"name", "type", ...}]``),
    read from its metadata without loading the model."""
    from mlflow.models import get_model_info

    with fluent(tracking_uri):
        signature = get_model_info(uri).signature
    if signature is None or signature.inputs is None:
        raise NoChampion(f"{uri} was logged without a signature: its input columns are unknown")
    return signature.inputs.to_dict()


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered version, loaded: the native estimator and what is recorded about it."""

    model_name: str
    version: str
    model: Any  # the native scikit-learn / LightGBM estimator
    feature_version: str | None  # the version's ``feature_version`` tag
    columns: tuple[str, ...]  # model input columns, signature order
    column_types: dict[str, str]  # MLflow schema types: "double", "long", ...
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the run's val_* / test_* metrics

    @property
    def uri(self) -> str:
        return model_uri(self.model_name, self.version)

    @property
    def snapshot_id(self) -> str:
        return self.tags.get("snapshot_id", "")


def load_version(tracking_uri: str, model_name: str, version: str) -> RegisteredVersion:
    """Load one registered version (native flavour) with its signature, tags and run metrics."""
    import mlflow.sklearn

    c = client(tracking_uri)
    mv = c.get_model_version(model_name, version)
    uri = model_uri(model_name, version)
    schema = input_schema(tracking_uri, uri)
    with fluent(tracking_uri):
        model = mlflow.sklearn.load_model(uri)
    run = c.get_run(mv.run_id) if mv.run_id else None
    metrics = {k: float(v) for k, v in (run.data.metrics if run else {}).items() if k.startswith(("val_", "test_"))}
    return RegisteredVersion(
        model_name=model_name,
        version=str(version),
        model=model,
        feature_version=mv.tags.get("feature_version"),
        columns=tuple(col["name"] for col in schema),
        column_types={col["name"]: col["type"] for col in schema},
        run_id=mv.run_id or "",
        tags=dict(mv.tags),
        metrics=metrics,
    )
