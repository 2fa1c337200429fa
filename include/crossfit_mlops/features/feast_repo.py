"""Feast glue: definitions built from the feature specs, apply, materialize, retrieval.

The Feast repo (``include/feast/repo/feature_repo``) holds ``feature_store.yaml`` and a
``feature_definitions.py`` that calls :func:`feast_definitions`, so ``feast apply`` in that folder and
:func:`apply_definitions` register exactly the same objects. :func:`get_store` reads the same yaml and
only replaces its registry and online-store paths by the ones of the current settings (so tests and
the pipeline can run against a state directory of their own). With ``CROSSFIT_FEAST_REDIS`` set
(``host:port[,db=N]``) the online store is Redis instead of the SQLite file; with
``CROSSFIT_FEAST_REGISTRY_URI`` (a SQLAlchemy URI, e.g. PostgreSQL) the registry is Feast's SQL
registry instead of the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from crossfit_mlops.features.specs import FEATURE_SETS, FEATURE_TTL, feature_set
from crossfit_mlops.settings import Settings, get_settings
from crossfit_mlops.storage import ENTITY_KEY, EVENT_TIMESTAMP, Catalog

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

ENTITY_NAME = "athlete"
FEAST_PROJECT = "crossfit"


@dataclass(frozen=True)
class FeastDefinitions:
    entity: Any
    sources: dict[str, Any]
    views: dict[str, Any]
    services: dict[str, Any]

    def all(self) -> list[Any]:
        return [self.entity, *self.sources.values(), *self.views.values(), *self.services.values()]


def feast_definitions(settings: Settings | None = None) -> FeastDefinitions:
    """Entity, sources, feature views and services for every feature set in the specs."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    settings = settings or get_settings()
    dtypes = {"int64": Int64, "float64": Float64}
    entity = Entity(
        name=ENTITY_NAME,
        join_keys=[ENTITY_KEY],
        value_type=ValueType.INT64,
        description="A CrossFit Games athlete, keyed by the real athlete_id of the raw file.",
    )
    sources, views, services = {}, {}, {}
    for version, spec in FEATURE_SETS.items():
        source = FileSource(
            name=f"{spec.view_name}_source",
            path=str(Catalog(settings).feature_table_dir(spec.view_name)),
            timestamp_field=EVENT_TIMESTAMP,
            s3_endpoint_override=settings.s3_endpoint if settings.on_object_storage else None,
            description=f"Feature table {version}: one parquet file per snapshot.",
        )
        view = FeatureView(
            name=spec.view_name,
            entities=[entity],
            ttl=FEATURE_TTL,
            schema=[Field(name=f.name, dtype=dtypes[f.dtype], description=f.description) for f in spec.features],
            source=source,
            online=True,
            description=spec.description,
            tags={"feature_version": version},
        )
        service = FeatureService(
            name=spec.service_name,
            features=[view],
            description=f"Features of model version {version}: {spec.description}",
            tags={"feature_version": version},
        )
        sources[version], views[version], services[version] = source, view, service
    return FeastDefinitions(entity=entity, sources=sources, views=views, services=services)


def repo_config(settings: Settings | None = None):
    """The committed ``feature_store.yaml`` with registry/online paths from the settings."""
    import yaml
    from feast.repo_config import RepoConfig

    settings = settings or get_settings()
    yaml_path = settings.feast_repo_path / "feature_store.yaml"
    raw = yaml.safe_load(os.path.expandvars(yaml_path.read_text()))
    registry = raw.get("registry")
    registry = dict(registry) if isinstance(registry, dict) else {"path": registry}
    if settings.feast_registry_uri:  # scale-out: a SQL registry shared by every process and host
        registry = {"registry_type": "sql", "path": settings.feast_registry_uri, "cache_ttl_seconds": 60}
    else:
        registry["path"] = str(settings.feast_registry_path)
    raw["registry"] = registry
    online = dict(raw.get("online_store") or {"type": "sqlite"})
    if settings.feast_redis:  # the scale-out option: compose mode, or any shared deployment
        online = {"type": "redis", "connection_string": settings.feast_redis}
    elif online.get("type", "sqlite") == "sqlite":
        online["path"] = str(settings.feast_online_store_path)
    raw["online_store"] = online
    config = RepoConfig(**raw)
    config.repo_path = settings.feast_repo_path
    return config


def get_store(settings: Settings | None = None) -> FeatureStore:
    from feast import FeatureStore

    settings = settings or get_settings()
    if not (settings.feast_registry_uri and settings.feast_redis):  # a local file store is in use
        settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(settings))


def apply_definitions(settings: Settings | None = None, store: FeatureStore | None = None) -> list[str]:
    """Register entity, views and services (idempotent). Returns the names applied."""
    settings = settings or get_settings()
    store = store or get_store(settings)
    definitions = feast_definitions(settings)
    for spec in FEATURE_SETS.values():  # a FileSource folder must exist before Feast reads it
        if not settings.on_object_storage:  # (a bucket has no folders: a prefix exists with its first table)
            Catalog(settings).feature_table_dir(spec.view_name).mkdir(parents=True, exist_ok=True)
    store.apply(definitions.all())
    names = [o.name for o in definitions.all()]
    log.info("feast apply: %s", ", ".join(names))
    return names


def materialize_snapshot(
    snapshot_time: pd.Timestamp,
    versions: tuple[str, ...] = tuple(FEATURE_SETS),
    settings: Settings | None = None,
    store: FeatureStore | None = None,
) -> None:
    """Load the newest features up to ``snapshot_time`` into the online store.

    The window is the feature TTL back from the snapshot, so the online store ends with each
    athlete's latest profile that is still fresh at that time.
    """
    store = store or get_store(settings)
    end = snapshot_time.to_pydatetime() + timedelta(seconds=1)
    start = end - FEATURE_TTL
    views = [feature_set(v).view_name for v in versions]
    store.materialize(start_date=start, end_date=end, feature_views=views)
    log.info("materialized %s for %s .. %s", views, start, end)


def historical_features(
    entity_df: pd.DataFrame,
    version: str,
    settings: Settings | None = None,
    store: FeatureStore | None = None,
) -> pd.DataFrame:
    """Point-in-time join of the version's FeatureService onto ``entity_df``.

    ``entity_df`` has ``athlete_id``, ``event_timestamp`` and any label columns. Exactly one row per
    entity row comes back, in the entity frame's order: rows whose features are missing or outside
    the TTL window are an error, never silently dropped (the file offline store drops them).
    """
    store = store or get_store(settings)
    spec = feature_set(version)
    service = store.get_feature_service(spec.service_name)
    entity = entity_df.reset_index(drop=True).assign(_entity_row=lambda d: range(len(d)))
    result = store.get_historical_features(entity_df=entity, features=service).to_df()
    if len(result) != len(entity) or result[spec.names].isna().any().any():
        missing = len(entity) - int(result[spec.names].notna().all(axis=1).sum())
        raise LookupError(
            f"{missing} of {len(entity)} entity rows have no {version} features inside the TTL "
            f"({FEATURE_TTL.days} days) at their event_timestamp: materialize/engineer that snapshot first"
        )
    result = result.sort_values("_entity_row").drop(columns="_entity_row").reset_index(drop=True)
    return result[[*entity_df.columns, *spec.names]]


def online_features(
    athlete_ids: list[int],
    version: str,
    settings: Settings | None = None,
    store: FeatureStore | None = None,
) -> pd.DataFrame:
    """Features of the athletes from the online store (None where an athlete is unknown)."""
    store = store or get_store(settings)
    service = store.get_feature_service(feature_set(version).service_name)
    rows = [{ENTITY_KEY: int(i)} for i in athlete_ids]
    return store.get_online_features(features=service, entity_rows=rows).to_df()
