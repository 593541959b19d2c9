"""The report e2e tests run their DAGs in the session's one migrated Airflow home."""

from tests.orchestration.conftest import airflow_home  # noqa: F401 - a shared session fixture
