"""One migrated Airflow home for every DAG run of the session (`airflow db migrate` is slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.airflow_harness import migrate


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    migrate(home)
    return home
