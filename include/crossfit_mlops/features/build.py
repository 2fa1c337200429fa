"""Write the V1/V2 feature tables of a snapshot: the offline sources of the Feast feature views."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from crossfit_mlops.data.clean import EVENT_TIMESTAMP
from crossfit_mlops.data.pipeline import load_clean
from crossfit_mlops.features.engineer import engineer_features
from crossfit_mlops.features.specs import feature_set
from crossfit_mlops.settings import Settings, get_settings

log = logging.getLogger(__name__)


def build_feature_table(snapshot_id: str, version: str, settings: Settings | None = None) -> str:
    """Engineer feature ``version`` for a cleaned snapshot; return the parquet path.

    The file is keyed by the snapshot (a rerun replaces it and nothing else) and written to a
    temporary name outside the view's folder first, so Feast never reads a half-written file.
    """
    settings = settings or get_settings()
    spec = feature_set(version)
    table = engineer_features(load_clean(snapshot_id, settings), spec)
    # microsecond timestamps: what every Feast offline store (file, duckdb) reads correctly
    table[EVENT_TIMESTAMP] = table[EVENT_TIMESTAMP].astype("datetime64[us, UTC]")
    final = settings.feature_table_file(spec.view_name, snapshot_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent.parent / f".{spec.view_name}.{final.name}.{os.getpid()}.tmp"
    try:
        table.to_parquet(tmp, index=False)
        os.replace(tmp, final)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("feature table %s for snapshot %s: %d rows -> %s", spec.view_name, snapshot_id, len(table), final)
    return str(final)
