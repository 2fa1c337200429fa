"""Pure helpers of the local stack (no process is started here)."""

import sqlite3

from crossfit_mlops.ops.stack import sqlite_wal


def test_sqlite_backend_is_put_in_wal_mode_before_the_server_opens_it(tmp_path):
    db = tmp_path / "nested" / "mlflow.db"
    assert sqlite_wal(f"sqlite:///{db}") is True
    with sqlite3.connect(db) as conn:  # the mode is stored in the file
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sqlite_wal(f"sqlite:///{db}") is True  # idempotent


def test_other_backends_are_left_alone():
    assert sqlite_wal("postgresql+psycopg2://localhost/mlflow") is False
