"""Alerts and metrics of real runs: each rule fires once per run, rule and batch, as a
`plugin.version.gray.alert` notification; the metrics reach a real UDP StatsD socket."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.config import load_config
from powerx_upgrade.domain.planner import plan_batches
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.alerts import alerts_of
from powerx_upgrade.rollout.preflight import tenants_of
from tests.airflow_harness import E2E_CONFIG, E2E_SHA256, dags_test
from tests.conftest import CONFIG_DIR
from tests.signing import signed

pytestmark = pytest.mark.e2e

DAG = "plugin_upgrade__crm-sync-alerts"
SCENARIOS = CONFIG_DIR / "scenarios"


class StatsdSink:
    """A real UDP socket that keeps every datagram it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.lines += data.decode(errors="replace").splitlines()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def env(self, prefix: str) -> dict[str, str]:
        return {
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(self.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": prefix,
            "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
        }


@pytest.fixture
def statsd() -> Iterator[StatsdSink]:
    sink = StatsdSink()
    yield sink
    sink.close()


def run(
    home: Path, url: str, tmp_path: Path, sink: StatsdSink, version: str
) -> tuple[int, Ledger, str]:
    result = dags_test(
        home,
        DAG,
        sandbox_url=url,
        ledger_file=tmp_path / "ledger.db",
        conf=signed({"target_version": version}, E2E_SHA256),
        extra_env=sink.env("powerx"),
    )
    book = Ledger(result.ledger_url)
    runs = book.runs()
    assert runs, result.tail()
    return result.returncode, book, runs[-1].run_id


def alert_notifications(client: httpx.Client) -> list[dict]:
    records = client.get("/sandbox/notifications").json()["notifications"]
    return [n for n in records if n["event"] == "plugin.version.gray.alert"]


def test_error_rate_rollback_failure_and_batch_runtime_alerts_fire_once_each(
    airflow_home, tmp_path, statsd
):
    with (
        running_sandbox(SCENARIOS / "bad-version.yaml") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        plan = load_config([E2E_CONFIG]).plans["crm-sync-alerts"]
        fleet = client.get("/internal/plugins/crm-sync/tenants").json()["tenants"]
        first = plan_batches(plan, tenants_of(fleet)).batches[0].tenants
        stuck = first[0]  # its rollback will fail
        client.post(
            "/sandbox/faults",
            json={
                "faults": [
                    {
                        "type": "deploy_failure",
                        "operation": "rollback",
                        "tenants": [stuck],
                        "rate": 1.0,
                    }
                ]
            },
        ).raise_for_status()
        code, book, run_id = run(airflow_home, url, tmp_path, statsd, "2.5.0")
        notified = alert_notifications(client)

    assert code != 0 and book.get_run(run_id).outcome == "rollback_failed"
    raised = Counter((a["rule"], a["batch"]) for a in alerts_of(book, run_id))
    assert raised[("grey_error_rate", 2)] == 1
    assert raised[("rollback_failure", None)] == 1
    assert raised[("batch_runtime", 1)] == 1  # batch 1 baked 12 s > max_batch_duration 4 s
    assert ("batch_runtime", 2) not in raised  # batch 2 failed its gate within seconds
    assert all(count == 1 for count in raised.values())
    assert ("monitoring_data_missing", 1) not in raised
    sent = Counter(n["context"]["rule"] for n in notified)
    assert sent == Counter(rule for rule, _ in raised.elements())
    assert {n["severity"] for n in notified if n["context"]["rule"] == "grey_error_rate"} == {
        "critical"
    }
    failure = next(n for n in notified if n["context"]["rule"] == "rollback_failure")
    assert stuck in failure["message"] and failure["channels"] == ["slack:#releases"]

    names = Counter(line.split(",")[0].split(":")[0] for line in statsd.lines)
    assert names["powerx.version.upgrade.alert_total"] == sum(raised.values())
    assert names["powerx.version.upgrade.batch_duration_minutes"] == 2
    assert names["powerx.version.rollback.duration_ms"] == 1
    assert names["powerx.version.upgrade.success_rate"] == 1
    tagged = [
        line for line in statsd.lines if line.startswith("powerx.version.upgrade.alert_total")
    ]
    assert all("plan=crm-sync-alerts" in line and "rule=" in line for line in tagged)


def test_missing_data_alerts_once_and_rolls_back(airflow_home, tmp_path, statsd):
    gap = Path(__file__).parents[1] / "fixtures" / "scenarios" / "gap-after-10s.yaml"
    with running_sandbox(gap) as url, httpx.Client(base_url=url, timeout=10) as client:
        code, book, run_id = run(airflow_home, url, tmp_path, statsd, "2.4.0")
        notified = alert_notifications(client)
    raised = Counter((a["rule"], a["batch"]) for a in alerts_of(book, run_id))
    assert raised[("monitoring_data_missing", 2)] == 1
    assert ("monitoring_data_missing", 1) not in raised
    verdicts = [g.phase for g in book.gate_evaluations(run_id, final_only=True)]
    assert verdicts == ["pass", "no_data"]
    assert Counter(n["context"]["rule"] for n in notified)["monitoring_data_missing"] == 1
    assert code != 0 and book.get_run(run_id).outcome == "rolled_back"  # missing_data: rollback
    upgraded = {a.tenant_id for a in book.actions(run_id, kind="upgrade") if a.state == "succeeded"}
    rolled = {a.tenant_id for a in book.actions(run_id, kind="rollback") if a.state == "succeeded"}
    assert upgraded and rolled == upgraded
