"""One hook per external system, on apache-airflow-providers-http."""
