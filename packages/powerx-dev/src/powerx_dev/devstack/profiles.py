"""The two profiles of the stack runner and the Airflow settings of the distributed one.

- `local` (the default): LocalExecutor on SQLite, one scheduler; what `running_airflow` runs.
- `distributed`: what docker-compose.yaml describes, as native processes: PostgreSQL (Airflow's
  metadata database and the ledger as two databases), Redis as the Celery broker,
  CeleryExecutor with two Celery workers, two schedulers (Airflow's HA mode), the dag-processor,
  the triggerer and the api-server (`running_distributed_airflow`).

`distributed_settings` is the one source of truth of the distributed profile's Airflow and
PowerX settings: the runner starts every component with them, and tests/deploy checks that
docker-compose.yaml's `x-airflow-common` environment says the same (hosts, ports and passwords
aside).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PROFILES = ("local", "distributed")

METADATA_DB = "airflow"
"""The PostgreSQL database of Airflow's metadata (the compose file's POSTGRES_DB)."""
LEDGER_DB = "powerx_ledger"
"""The PostgreSQL database of the PowerX ledger (the compose file's POWERX_LEDGER_DB)."""


@dataclass(frozen=True)
class DistributedShape:
    """How many of each component the distributed profile runs, and how busy each may get.

    :param schedulers: schedulers in HA mode (they share the work through row locks).
    :param workers: Celery workers, each with its own hostname (`worker-N@<host>`).
    :param worker_concurrency: task slots of each worker (keep it modest on a small machine).
    :param heartbeat_timeout: `[scheduler] task_instance_heartbeat_timeout`: seconds without a
        task heartbeat after which the scheduler fails the task (and retries it, when it has
        retries left). This is what re-queues the task of a worker that died: Celery does not
        (see docs/deployment.md). Airflow's default is 300 s.
    :param heartbeat_check_interval: how often the schedulers look for such tasks.
    """

    schedulers: int = 2
    workers: int = 2
    worker_concurrency: int = 2
    heartbeat_timeout: int = 20
    heartbeat_check_interval: float = 5.0


def distributed_settings(
    *, metadata_url: str, broker_url: str, ledger_url: str, shape: DistributedShape
) -> dict[str, str]:
    """The Airflow (`AIRFLOW__SECTION__KEY`) and PowerX settings of the distributed profile.

    :param metadata_url: SQLAlchemy URL of Airflow's metadata database (PostgreSQL, psycopg 3).
    :param broker_url: the Celery broker (`redis://host:port/0`).
    :param ledger_url: SQLAlchemy URL of the ledger database (PostgreSQL, its own database).
    :param shape: counts and timeouts.
    """
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        # The api-server's async engine: Airflow would derive `postgresql+asyncpg` (not
        # installed); psycopg 3 is both a sync and an async driver.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        # Task states go to the metadata database, as in Airflow's own compose file.
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata_url}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(shape.worker_concurrency),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(shape.heartbeat_timeout),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": str(
            shape.heartbeat_check_interval
        ),
        "AIRFLOW_CONN_POWERX_LEDGER": json.dumps(
            {"conn_type": "generic", "extra": {"url": ledger_url}}
        ),
    }


COMPOSE_SHARED_KEYS = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW_CONN_POWERX_LEDGER",
)
"""The settings docker-compose.yaml and the distributed profile must agree on (up to hosts,
ports and passwords). The heartbeat timeout and the worker concurrency are the test stack's own:
shorter than production's, so that a killed worker's task is retried within seconds."""

POWERX_CONNECTIONS = ("PLATFORM", "MONITORING", "NOTIFY", "AUDIT", "APPROVAL", "LEDGER")
"""The `powerx_*` Airflow connections a deployment defines (`AIRFLOW_CONN_POWERX_<NAME>`): the
compose file and every dev stack set all of them."""
