"""docker-compose.yaml and the distributed dev stack describe one topology: the compose file's
Airflow settings (executor, broker, result backend, metadata database, ledger) are the ones the
distributed profile runs with (`powerx_dev.devstack.profiles.distributed_settings`, which
tests/stack/distributed/ checks in every running process), up to hosts, ports and passwords;
and both define the same PowerX connections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from powerx_dev.devstack.profiles import (
    COMPOSE_SHARED_KEYS,
    LEDGER_DB,
    METADATA_DB,
    POWERX_CONNECTIONS,
    DistributedShape,
    distributed_settings,
)
from powerx_dev.servers.postgres import PostgresServer
from tests.deploy import compose_rules as rules

pytestmark = pytest.mark.unit


def _compose_env(service: str = "airflow-scheduler") -> dict[str, Any]:
    doc = rules.resolve(rules.load(), {})  # every variable at its default, as `compose up`
    return rules.environment(rules.services(doc)[service])


def _profile_settings() -> dict[str, str]:
    """The settings the distributed runner derives, for servers on arbitrary ports."""
    postgres = PostgresServer("127.0.0.1", 54321, Path("/pg"), Path("/pg/log"), 0)
    return distributed_settings(
        metadata_url=postgres.url(METADATA_DB),
        broker_url="redis://127.0.0.1:63791/0",  # RedisServer.url(0)'s form
        ledger_url=postgres.url(LEDGER_DB),
        shape=DistributedShape(),
    )


def _shape(key: str, value: str) -> Any:
    """What must agree: the executor as is; of a URL its scheme (driver) and database, not its
    host, port or credentials; of the ledger connection its type and its URL's shape."""
    if key == "AIRFLOW__CORE__EXECUTOR":
        return value
    if key == "AIRFLOW_CONN_POWERX_LEDGER":
        conn = json.loads(value)
        return conn["conn_type"], sorted(conn["extra"]), _shape("url", conn["extra"]["url"])
    parts = urlsplit(value)
    return parts.scheme, parts.path


@pytest.mark.parametrize("key", COMPOSE_SHARED_KEYS)
def test_compose_says_what_the_distributed_profile_runs(key: str):
    compose, profile = _compose_env(), _profile_settings()
    assert key in compose, f"docker-compose.yaml x-airflow-common lacks {key}"
    assert _shape(key, str(compose[key])) == _shape(key, profile[key]), (compose[key], profile[key])


def test_every_airflow_service_of_compose_shares_those_settings():
    expected = {key: _compose_env()[key] for key in COMPOSE_SHARED_KEYS}
    for service in ("airflow-apiserver", "airflow-worker", "airflow-triggerer", "airflow-init"):
        env = _compose_env(service)
        assert {key: env.get(key) for key in COMPOSE_SHARED_KEYS} == expected, service


def test_the_result_backend_and_the_metadata_database_are_one_database_in_both():
    for settings in (_compose_env(), _profile_settings()):
        backend = str(settings["AIRFLOW__CELERY__RESULT_BACKEND"])
        assert backend == "db+" + str(settings["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert (
            settings["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"]
            == (settings["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        )


def test_the_ledger_is_its_own_database_in_both():
    for settings in (_compose_env(), _profile_settings()):
        ledger = json.loads(str(settings["AIRFLOW_CONN_POWERX_LEDGER"]))["extra"]["url"]
        metadata = str(settings["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert urlsplit(ledger).path != urlsplit(metadata).path


def test_both_define_the_same_powerx_connections():
    compose = {k for k in _compose_env() if k.startswith("AIRFLOW_CONN_POWERX_")}
    assert compose == {f"AIRFLOW_CONN_POWERX_{name}" for name in POWERX_CONNECTIONS}
    from tests.stack.distributed import conftest as dist

    assert set(dist.SYSTEMS) | {"APPROVAL", "LEDGER"} == set(POWERX_CONNECTIONS)
