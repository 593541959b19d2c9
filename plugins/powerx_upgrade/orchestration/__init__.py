"""The Airflow side: the only code that imports airflow (DAG factory, hooks, trigger, operators)."""
