"""The prediction log: what the API answered, one row per scored item and model, by hour.

The API (:mod:`crossfit_mlops.serving.log_writer`) writes it; live monitoring reads it
(:func:`read_log`). Both sides know only this module: the columns, the folder layout and how a
part file is published.

Layout, under ``<predictions>/live/`` of the settings (the bucket on the S3-backed profile)::

    date=2026-12-07/hour=05/part-<first logged_at ns>-<host>-<pid>-<seq>.parquet

A part file is written whole then published in one step (a rename on a local disk, one PUT on
S3), so a reader never sees half a file; names starting with ``.`` are files in flight.

One request gives one row per item it scored (``item`` = its index in the batch) and per model
that scored it: ``role`` ``champion`` (the answer) and, when the shadow challenger scored the same
request, ``challenger`` rows under the same ``request_id``. A request answered with an error gives
one ``champion`` row with its ``status`` and ``error`` code and no prediction.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from crossfit_mlops.storage import publishing

LIVE_FOLDER = "live"
CHAMPION, CHALLENGER = "champion", "challenger"
ROUTES = ("/predict", "/predict/features")

# column -> pandas dtype of the part files (pyarrow keeps them in the parquet schema)
COLUMNS: dict[str, str] = {
    "request_id": "string",  # also the response's X-Request-ID header
    "logged_at": "datetime64[us, UTC]",  # when the request arrived
    "route": "string",  # "/predict" (features from the online store) or "/predict/features"
    "status": "int16",  # the HTTP status of the answer
    "error": "string",  # the error code of a non-2xx answer (None on 2xx)
    "role": "string",  # "champion" (the answer) or "challenger" (the shadow's, never returned)
    "item": "int32",  # index of the item in the request's batch
    "athlete_id": "Int64",  # None for /predict/features
    "feature_version": "string",
    "features": "string",  # JSON object {feature name: value used}
    # /predict: the time of the online-store row the features came from (its snapshot); a label
    # for the prediction is the athlete's total lift in a later snapshot. None for /predict/features
    "features_at": "datetime64[us, UTC]",
    "model_name": "string",
    "model_version": "string",
    "prediction": "float64",  # None on an error answer
    "latency_ms": "float64",  # champion rows: the request's time in the API; challenger rows: its scoring
}


# the same columns as a parquet schema: the writer builds its part files as pyarrow tables (no
# pandas frame on the API's write path); a reader gets them back as COLUMNS' dtypes
_ARROW_TYPE = {
    "string": pa.string(),
    "datetime64[us, UTC]": pa.timestamp("us", tz="UTC"),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "Int64": pa.int64(),  # nullable in pandas; every arrow column is
    "float64": pa.float64(),
}
SCHEMA = pa.schema([(name, _ARROW_TYPE[dtype]) for name, dtype in COLUMNS.items()])


def live_root(settings) -> Path:
    """The log's root folder of these settings (a local folder or the bucket's)."""
    return settings.predictions_dir / LIVE_FOLDER


def hour_folder(root: Path, at: datetime) -> Path:
    at = at.astimezone(UTC)
    return root / f"date={at:%Y-%m-%d}" / f"hour={at:%H}"


def new_request_id() -> str:
    return uuid.uuid4().hex


def to_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Records (dicts with the :data:`COLUMNS` keys) as a frame of the log's schema."""
    frame = pd.DataFrame.from_records(list(records), columns=list(COLUMNS))
    for column in ("logged_at", "features_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame.astype(COLUMNS)


def to_table(columns: Mapping[str, Any]) -> pa.Table:
    """Columns (``{name: values}``, every :data:`COLUMNS` name; times as datetimes, or ``logged_at``
    as integer microseconds since the epoch) as a table of the log's :data:`SCHEMA`."""
    return pa.Table.from_pydict({name: columns[name] for name in SCHEMA.names}, schema=SCHEMA)


def write_part(root: Path, rows: pa.Table | pd.DataFrame, seq: int) -> list[Path]:
    """Publish ``rows`` (a table of :data:`SCHEMA` or a frame of :data:`COLUMNS`) as one part file
    per hour it spans; returns the files written."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(rows, schema=SCHEMA, preserve_index=False)
    if table.num_rows == 0:
        return []
    hours = pc.floor_temporal(table["logged_at"], unit="hour")
    written = []
    for hour in sorted(pc.unique(hours).to_pylist()):
        part = table if pc.min(hours).as_py() == pc.max(hours).as_py() else table.filter(pc.equal(hours, pa.scalar(hour, hours.type)))
        first = pc.min(part["logged_at"]).value * 1000  # ns, as the names have always been
        name = f"part-{first}-{socket.gethostname()}-{os.getpid()}-{seq}.parquet"
        final = hour_folder(root, hour) / name
        with publishing(final, directory=False) as tmp:  # a rename here, one PUT in a bucket
            pq.write_table(part, str(tmp))
        written.append(final)
    return written


def _hours(since: datetime, until: datetime) -> Iterable[datetime]:
    at = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while at < until:
        yield at
        at += timedelta(hours=1)


def read_log(root: Path, since: datetime, until: datetime) -> pd.DataFrame:
    """Every logged row with ``since <= logged_at < until`` (UTC-aware datetimes), oldest first."""
    if until <= since:
        return to_frame([])
    parts = []
    for hour in _hours(since, until):
        folder = hour_folder(root, hour)
        if not folder.exists():
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.name.endswith(".parquet"):
                continue
            with path.open("rb") as source:
                parts.append(pd.read_parquet(source))
    if not parts:
        return to_frame([])
    frame = pd.concat(parts, ignore_index=True).astype(COLUMNS)
    keep = (frame["logged_at"] >= pd.Timestamp(since)) & (frame["logged_at"] < pd.Timestamp(until))
    return frame[keep].sort_values(["logged_at", "request_id", "role", "item"], kind="stable").reset_index(drop=True)
