"""PowerX grey upgrade: metric-gated, batch-by-batch plugin rollouts for Apache Airflow 3."""

__version__ = "0.1.0"
