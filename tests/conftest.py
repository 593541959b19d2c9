"""Shared test helpers: paths of the example config and a factory for config files."""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from tests.prometheus import ScrapedSandbox

# Tests never touch the developer's Airflow: whatever imports airflow in this process (hooks,
# DagBag) gets a throwaway home. Subprocess stacks set their own.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="powerx-tests-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

# Property tests (hypothesis): no deadline (a shared CI machine is slow by moments), and
# derandomised in CI (CI=true), so a red build is reproducible from the same commit; locally each
# run explores new cases. Case counts are set per test (issue 15: >= 1,000 for the plan fuzzers).
settings.register_profile(
    "powerx",
    deadline=None,
    derandomize=os.environ.get("CI", "").lower() == "true",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("powerx")

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "include" / "config"
EXAMPLE_POLICIES = CONFIG_DIR / "upgrade_policies.yaml"
EXAMPLE_TENANTS = CONFIG_DIR / "examples" / "tenants.json"


@pytest.fixture
def write(tmp_path: Path):
    """write("name.yaml", text) -> Path: a dedented file under tmp_path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated Airflow home for every DAG run of the session (`airflow db migrate` is slow)."""
    from tests.airflow_harness import migrate

    home = tmp_path_factory.mktemp("airflow-home")
    migrate(home)
    return home


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory):
    """One real PostgreSQL server (pgserver's binaries, a free port) for the whole session;
    tests take a fresh database of their own with `postgres_server.create_database(name)`."""
    from powerx_dev.servers.postgres import running_postgres

    with running_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's PostgreSQL server (its SQLAlchemy URL)."""
    import uuid

    return postgres_server.create_database(f"test_{uuid.uuid4().hex[:16]}")


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    """The `prometheus` server binary; installs Debian's package when it is missing (never
    skips: the Prometheus tests are part of the default suite)."""
    from powerx_dev.prometheus_server import ensure_prometheus

    return ensure_prometheus()


@pytest.fixture(scope="module")
def bad_version_scraped(prometheus_binary: Path) -> Iterator[ScrapedSandbox]:
    """The bad-version scenario's sandbox scraped every second by a real Prometheus, for one
    test module (it changes the fleet: upgrades and faults are the module's own)."""
    from tests.prometheus import scraped_sandbox

    with scraped_sandbox(ROOT / "include" / "config" / "scenarios" / "bad-version.yaml") as scraped:
        yield scraped
