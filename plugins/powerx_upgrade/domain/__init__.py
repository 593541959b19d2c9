"""The Airflow-free core: plan models, batch planner, windows; plain values in, plain values out."""
