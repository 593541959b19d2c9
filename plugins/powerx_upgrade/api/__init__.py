"""The control-plane API: a FastAPI app that Airflow's api-server mounts at
`/internal/version/upgrade` (plans, rollback, run status, adjustments, human decisions, reports),
authenticated with Airflow's own tokens and authorised by its auth manager."""
