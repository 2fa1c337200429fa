"""crossfit-mlops: predict a CrossFit athlete's total lift, end to end (Airflow, Feast, MLflow)."""

__version__ = "0.1.0"
