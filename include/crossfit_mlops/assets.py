"""Airflow Assets shared by the DAGs (data-aware scheduling).

Imported by DAG files only; it needs nothing but ``airflow.sdk``, so parsing stays cheap.
"""

from __future__ import annotations

from airflow.sdk import Asset

# Updated by crossfit_training_pipeline.materialize_online_store, with extra {"snapshot_id": ...}:
# the online store now holds that snapshot's features. Batch inference is scheduled on it.
ONLINE_FEATURES = Asset(name="crossfit_online_features", uri="feast://crossfit/online_store")

# Updated by crossfit_training_pipeline.promote_challenger when @champion moves: batch inference
# rescores with the new champion.
CHAMPION_MODEL = Asset(name="crossfit_champion_model", uri="mlflow://registry/crossfit_total_lift/champion")
