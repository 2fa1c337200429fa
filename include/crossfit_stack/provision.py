"""What the stack's services need before they start: the state folders and secrets, the databases,
MLflow's files (SQLite in WAL mode, basic-auth) and the object store's bucket.

Each function takes the stack's configuration (:class:`crossfit_stack.config.StackConfig`); none
starts a process (that is supervisord's, through :mod:`crossfit_stack.control`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlparse

from crossfit_stack.config import StackConfig
from crossfit_stack.programs import MLFLOW_ADMIN, artifacts_destination, mlflow_metrics_dir
from crossfit_stack.supervisor import write_private

log = logging.getLogger(__name__)

ADMIN_USER = "admin"  # Airflow's admin, whose generated password is in secrets.json


# --- the state folder and its secrets ------------------------------------------------------------
def secure_state(cfg: StackConfig) -> None:
    """The state directory and the stack's folders are owner-only (0700); see also the umask 077
    under which supervisord runs every service, and :func:`private_files`."""
    for path in (cfg.settings.state_dir, cfg.airflow_home, cfg.mlflow_dir, cfg.run_dir, cfg.log_dir):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)


def private_files(cfg: StackConfig) -> list[Path]:
    """Databases and secrets of the stack that exist: each made 0600 (returned)."""
    candidates = [
        cfg.secrets_path, cfg.airflow_home / "passwords.json", cfg.mlflow_dir / "basic_auth.ini",
        cfg.mlflow_dir / "basic_auth.db", cfg.settings.feast_registry_path, cfg.settings.feast_online_store_path,
    ]
    for uri in (cfg.mlflow_backend_uri, cfg.airflow_db_uri):
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            candidates += [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    found = [p for p in candidates if p.is_file()]
    for path in found:
        path.chmod(0o600)
    return found


SECRET_FIELDS = (
    "jwt_secret", "fernet_key", "admin_password", "mlflow_admin_password", "flask_secret_key", "s3_access_key", "s3_secret_key",
    "s3_data_access_key", "s3_data_secret_key",
)


def ensure_secrets(cfg: StackConfig) -> dict[str, str]:
    """Generated once per state directory into ``airflow/secrets.json`` (0600), never printed or
    committed: Airflow's JWT secret, Fernet key and admin password; MLflow's admin password
    (basic-auth); the object store's key pair. Fields added by a newer version are filled in."""
    path = cfg.secrets_path
    values = json.loads(path.read_text()) if path.is_file() else {}
    if any(name not in values for name in SECRET_FIELDS):
        from cryptography.fernet import Fernet

        fresh = {
            "jwt_secret": secrets.token_urlsafe(48),
            "fernet_key": Fernet.generate_key().decode(),
            "admin_password": secrets.token_urlsafe(12),
            "mlflow_admin_password": secrets.token_urlsafe(16),
            "flask_secret_key": secrets.token_hex(32),
            "s3_access_key": "crossfit" + secrets.token_hex(6),
            "s3_secret_key": secrets.token_urlsafe(30),
            "s3_data_access_key": "pipeline" + secrets.token_hex(6),
            "s3_data_secret_key": secrets.token_urlsafe(30),
        }
        values = {**fresh, **values}
        write_private(path, json.dumps(values, indent=1))
    passwords = cfg.airflow_home / "passwords.json"
    if not passwords.is_file():
        write_private(passwords, json.dumps({ADMIN_USER: values["admin_password"]}))
    return values


def write_local_settings(cfg: StackConfig) -> None:
    from crossfit_stack.preload import LOCAL_SETTINGS

    config_dir = cfg.airflow_home / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)



# --- MLflow --------------------------------------------------------------------------------------
def sqlite_wal(uri: str) -> bool:
    """Put a SQLite backend store in write-ahead-log mode (a no-op for other databases).

    MLflow leaves its SQLite file in the default rollback-journal mode, where every write locks out
    readers: with parallel training tasks logging at once, requests queue on the lock. In WAL mode
    readers and one writer proceed together (Airflow sets it on its own SQLite database). The mode
    is stored in the file, so it is set once, before the server opens it. A new file is created
    owner-only (0600).
    """
    if not uri.startswith("sqlite:///"):
        return False
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    return mode == "wal"


def reset_mlflow_metrics(cfg: StackConfig) -> None:
    """An empty Prometheus metrics folder for a server about to start: the files of a previous
    server's workers would add their counts to the new one's."""
    folder = mlflow_metrics_dir(cfg)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)


def prepare_mlflow(cfg: StackConfig, secrets: dict[str, str]) -> None:
    """The Prometheus metrics folder; basic-auth's configuration (0600): its users database beside
    the store, the admin user created at the first start with the generated password, READ for
    users without a grant."""
    mlflow_metrics_dir(cfg).mkdir(mode=0o700, parents=True, exist_ok=True)
    if not cfg.mlflow_auth:
        return
    ini = "\n".join(
        [
            "[mlflow]",
            "default_permission = READ",
            f"database_uri = sqlite:///{cfg.mlflow_dir / 'basic_auth.db'}",
            f"admin_username = {MLFLOW_ADMIN}",
            f"admin_password = {secrets['mlflow_admin_password']}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            # each request checks the password with PBKDF2 (about 250 ms here): cache the result
            "auth_cache_ttl_seconds = 60",
            "",
        ]
    )
    write_private(cfg.mlflow_dir / "basic_auth.ini", ini)



# --- the object store's bucket -------------------------------------------------------------------
def write_s3_config(cfg: StackConfig, secrets: dict[str, str]) -> Path:
    (cfg.settings.state_dir / "seaweedfs").mkdir(parents=True, exist_ok=True)
    identity = {
        "name": "mlflow",
        "credentials": [{"accessKey": secrets["s3_access_key"], "secretKey": secrets["s3_secret_key"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    identities = [identity]
    data_bucket = data_bucket_of(cfg)
    if data_bucket:  # the pipeline's own pair: its bucket and nothing else
        identities.append({
            "name": "pipeline",
            "credentials": [{"accessKey": secrets["s3_data_access_key"], "secretKey": secrets["s3_data_secret_key"]}],
            "actions": [f"Admin:{data_bucket}"],
        })  # fmt: skip
    path = cfg.run_dir / "s3.json"
    write_private(path, json.dumps({"identities": identities}, indent=1))
    return path


def data_bucket_of(cfg: StackConfig) -> str:
    """The bucket of ``CROSSFIT_DATA_URL`` when the stack's own object store holds it, else ""."""
    if not (cfg.object_store and cfg.settings.on_object_storage):
        return ""
    return urlparse(cfg.settings.data_url).netloc


def s3_client(cfg: StackConfig, secrets: dict[str, str], identity: str = "s3"):
    """A client of the stack's object store with MLflow's key pair, or (``identity="s3_data"``) the pipeline's."""
    import boto3

    return boto3.client(
        "s3", endpoint_url=cfg.s3_endpoint, region_name="us-east-1",
        aws_access_key_id=secrets[f"{identity}_access_key"], aws_secret_access_key=secrets[f"{identity}_secret_key"],
    )


def bucket_of(cfg: StackConfig) -> tuple[str, str]:
    parsed = urlparse(artifacts_destination(cfg))
    return parsed.netloc, parsed.path.lstrip("/")


def ensure_bucket(cfg: StackConfig, secrets: dict[str, str], timeout: float = 90.0) -> str:
    """Create the artifacts bucket if missing; the S3 gateway answers before its filer is ready,
    so the first calls are retried until a write succeeds."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _ = bucket_of(cfg)
    wanted = [(bucket, "s3")] + ([(data, "s3_data")] if (data := data_bucket_of(cfg)) else [])
    deadline, last = time.monotonic() + timeout, None
    while wanted and time.monotonic() < deadline:
        name, identity = wanted[0]
        client = s3_client(cfg, secrets, identity)
        try:
            try:
                client.head_bucket(Bucket=name)
            except ClientError:
                client.create_bucket(Bucket=name)
            client.put_object(Bucket=name, Key=".crossfit-ready", Body=b"ok")
            wanted.pop(0)
        except (BotoCoreError, ClientError) as exc:
            last = exc
            time.sleep(0.5)
    if wanted:
        raise RuntimeError(f"the object store at {cfg.s3_endpoint} did not accept bucket {wanted[0][0]!r}: {last}")
    return bucket


# --- databases -----------------------------------------------------------------------------------
def ensure_databases(cfg: StackConfig) -> list[str]:
    """Create the PostgreSQL databases the settings name, if missing (a fresh machine needs no
    setup); returns the ones created. Other backends are left alone."""
    uris = [cfg.mlflow_backend_uri, cfg.airflow_db_uri, cfg.settings.feast_registry_uri, cfg.settings.lock_uri]
    backend = cfg.celery_result_backend.removeprefix("db+") if cfg.celery else ""
    created = []
    for uri in {u for u in [*uris, backend] if u.startswith("postgresql")}:
        if _create_database(uri):
            created.append(uri.rsplit("/", 1)[-1])
    return created


def _create_database(uri: str) -> bool:
    import psycopg2
    from psycopg2 import sql

    parsed = urlparse(uri.replace("postgresql+psycopg2://", "postgresql://"))
    name = parsed.path.lstrip("/")
    params = {
        "host": parsed.hostname, "port": parsed.port or 5432, "user": parsed.username,
        "password": parsed.password, "dbname": "postgres", "connect_timeout": 5,
    }
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as exc:
        raise RuntimeError(f"PostgreSQL at {parsed.hostname}:{parsed.port or 5432} is unreachable: {exc}") from exc
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log.info("created PostgreSQL database %s", name)
            return True
    finally:
        conn.close()
