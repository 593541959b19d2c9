"""Pure helpers of the loopback client of Airflow's REST API."""

from __future__ import annotations

import pytest

from powerx_upgrade.airflow_client import flat_hitl, loopback_url

pytestmark = pytest.mark.unit


def test_the_loopback_address_keeps_the_api_servers_port_and_path():
    assert loopback_url("https://airflow.example/airflow/", 8080) == "http://127.0.0.1:8080/airflow"
    assert loopback_url(None, None) == "http://127.0.0.1:8080"
    assert loopback_url("http://x:1234", 9090, ssl=True) == "https://127.0.0.1:9090"


def test_a_hitl_request_names_its_task_at_the_top():
    nested = {"subject": "s", "task_instance": {"task_id": "batch_2.pause", "map_index": -1}}
    assert flat_hitl(nested)["task_id"] == "batch_2.pause"
    assert flat_hitl(nested)["map_index"] == -1
    assert (
        flat_hitl({"task_id": "batch_1.approve", "task_instance": {"map_index": None}})["map_index"]
        == -1
    )
