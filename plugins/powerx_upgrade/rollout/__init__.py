"""The steps of a rollout run, free of Airflow: each takes clients (hooks), the ledger and plain
values, does one step, and records it. The Airflow tasks are thin wrappers around these."""
