"""Write the V1/V2 feature tables of a snapshot: the offline sources of the Feast feature views."""

from __future__ import annotations

import logging

from crossfit_mlops.features.engineer import engineer_features
from crossfit_mlops.features.specs import feature_set
from crossfit_mlops.settings import Settings, get_settings
from crossfit_mlops.storage import EVENT_TIMESTAMP, Catalog, publishing, snapshot_lock

log = logging.getLogger(__name__)


def build_feature_table(snapshot_id: str, version: str, settings: Settings | None = None) -> str:
    """Engineer feature ``version`` for a cleaned snapshot; return the parquet path.

    The file is keyed by the snapshot (a rerun replaces it and nothing else) and staged outside
    the view's folder, so Feast, which reads the folder as a whole, never sees a half-written file.
    A snapshot whose validation report is not "ok" is refused; the snapshot's lock is held
    (shared) so that a validation failing meanwhile cannot be overtaken by this file.
    """
    settings = settings or get_settings()
    catalog = Catalog(settings)
    spec = feature_set(version)
    with snapshot_lock(settings, snapshot_id, shared=True):
        catalog.require_validated(snapshot_id, f"feature table {spec.view_name}")
        table = engineer_features(catalog.load_clean(snapshot_id), spec)
        # microsecond timestamps: what every Feast offline store (file, duckdb) reads correctly
        table[EVENT_TIMESTAMP] = table[EVENT_TIMESTAMP].astype("datetime64[us, UTC]")
        final = catalog.feature_table_file(spec.view_name, snapshot_id)
        with publishing(final, directory=False, staging=final.parent.parent) as tmp:
            table.to_parquet(tmp, index=False)
    log.info("feature table %s for snapshot %s: %d rows -> %s", spec.view_name, snapshot_id, len(table), final)
    return str(final)
