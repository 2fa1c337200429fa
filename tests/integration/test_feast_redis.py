"""Feast's scale-out online store: Redis (the local server on 127.0.0.1:6379).

The test takes an empty Redis database of its own (db 1-15 with no keys), materializes a small
snapshot into it through the project's code (``CROSSFIT_FEAST_REDIS``), reads athletes back through
the serving reader, and checks them against the same snapshot materialized into SQLite. The
database is flushed at the end.
"""

from __future__ import annotations

import pytest

from crossfit_mlops.settings import get_settings

pytestmark = pytest.mark.integration

SNAPSHOT = "2026-11-20"


@pytest.fixture
def redis_db():
    from tests.support.services import empty_redis_db

    with empty_redis_db() as db:
        yield db


def test_materialize_and_read_through_redis_match_sqlite(tmp_path, monkeypatch, redis_db):
    import redis

    from crossfit_mlops.data.ingest import ingest_snapshot
    from crossfit_mlops.data.validate import validate_and_clean
    from crossfit_mlops.features.build import build_feature_table
    from crossfit_mlops.features.feast_repo import (
        apply_definitions,
        get_store,
        materialize_snapshot,
    )
    from crossfit_mlops.features.specs import feature_set
    from crossfit_mlops.serving.online import KnownAthletes, OnlineFeatureReader, UnknownAthletes
    from crossfit_mlops.storage import snapshot_time

    monkeypatch.setenv("CROSSFIT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("CROSSFIT_FEAST_REDIS", raising=False)
    sqlite_settings = get_settings()
    ingest_snapshot(SNAPSHOT, rows=15000, seed=3, settings=sqlite_settings)
    validate_and_clean(SNAPSHOT, settings=sqlite_settings)
    for version in ("v1", "v2"):
        build_feature_table(SNAPSHOT, version, settings=sqlite_settings)

    monkeypatch.setenv("CROSSFIT_FEAST_REDIS", f"127.0.0.1:6379,db={redis_db}")
    redis_settings = get_settings()
    store = get_store(redis_settings)
    assert type(store.config.online_store).__name__ == "RedisOnlineStoreConfig"
    apply_definitions(settings=redis_settings, store=store)
    materialize_snapshot(snapshot_time(SNAPSHOT), settings=redis_settings, store=store)
    assert redis.Redis(host="127.0.0.1", port=6379, db=redis_db).dbsize() > 100

    sqlite_store = get_store(sqlite_settings)
    apply_definitions(settings=sqlite_settings, store=sqlite_store)  # creates the SQLite tables
    materialize_snapshot(snapshot_time(SNAPSHOT), settings=sqlite_settings, store=sqlite_store)

    columns = tuple(feature_set("v2").names)
    from_redis = OnlineFeatureReader(store, KnownAthletes(redis_settings))
    from_sqlite = OnlineFeatureReader(sqlite_store, KnownAthletes(sqlite_settings))
    athletes = sorted(KnownAthletes(redis_settings).get("v2"))[:25]
    redis_rows = from_redis.read(athletes, "v2", columns)
    sqlite_rows = from_sqlite.read(athletes, "v2", columns)
    assert [r.athlete_id for r in redis_rows] == athletes
    assert [r.values for r in redis_rows] == [r.values for r in sqlite_rows]
    assert {r.event_timestamp for r in redis_rows} == {snapshot_time(SNAPSHOT).to_pydatetime()}
    with pytest.raises(UnknownAthletes):
        from_redis.read([123456789], "v2", columns)
