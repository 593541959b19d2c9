"""A notification the service does not take is not lost silently (issue 14, notify outage): it
is audited `notify.failed` with its body, the step goes on, and the run's end sends it again once
the service answers (`notify.resent`); the service then holds it exactly once. Against the
sandbox over HTTP, with the real notify and audit hooks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.orchestration.hooks.audit import PowerXAuditHook
from powerx_upgrade.orchestration.hooks.notify import PowerXNotifyHook
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.record import NOTIFY_FAILED, NOTIFY_RESENT, Recorder, stable_id
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.e2e

CTX = RunContext(
    run_id="run-notify", dag_id="d", plan_id="p", plugin="crm-sync", target_version="2.4.0"
)


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with running_sandbox(CONFIG_DIR / "scenarios" / "happy.yaml") as url:
        yield url


@pytest.fixture
def recorder(sandbox_url, tmp_path, monkeypatch) -> Iterator[Recorder]:
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_AUDIT", sandbox_url)
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_NOTIFY", sandbox_url)
    httpx.post(f"{sandbox_url}/sandbox/reset").raise_for_status()
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        yield Recorder(
            ledger,
            PowerXAuditHook(retries=0, timeout=10),
            PowerXNotifyHook(retries=1, backoff=0.05, timeout=10),
        )


def outage(sandbox_url: str) -> str:
    answer = httpx.post(
        f"{sandbox_url}/sandbox/faults",
        json={"faults": [{"type": "http_error", "endpoint": "notify", "status": 503}]},
    )
    answer.raise_for_status()
    return str(answer.json()["faults"][0]["id"])


def notifications(sandbox_url: str) -> list[dict]:
    return httpx.get(f"{sandbox_url}/sandbox/notifications").json()["notifications"]


def refused(sandbox_url: str) -> int:
    events = httpx.get(
        f"{sandbox_url}/sandbox/events", params={"prefix": "/internal/notify"}
    ).json()["events"]
    return sum(1 for e in events if e["status"] == 503)


def events(recorder: Recorder) -> list[str]:
    return [r.event for r in recorder.ledger.audit_records(CTX.run_id)]


def test_a_notification_refused_during_an_outage_is_audited_and_sent_once_afterwards(
    recorder, sandbox_url
):
    fault = outage(sandbox_url)
    assert (
        recorder.notify(CTX, "plugin.version.gray.started", key="run.started", title="t") is False
    )
    assert refused(sandbox_url) == 2  # the hook retried once
    (failed,) = [r for r in recorder.ledger.audit_records(CTX.run_id) if r.event == NOTIFY_FAILED]
    assert failed.payload["details"]["key"] == "run.started"
    assert "503" in failed.payload["details"]["error"]
    assert notifications(sandbox_url) == []

    httpx.delete(f"{sandbox_url}/sandbox/faults/{fault}").raise_for_status()
    assert recorder.resend_failed_notifications(CTX) == (["run.started"], [])
    assert recorder.resend_failed_notifications(CTX) == ([], [])  # resent once, not again
    (sent,) = notifications(sandbox_url)
    assert sent["id"] == stable_id(f"{CTX.run_id}:run.started")
    assert sent["event"] == "plugin.version.gray.started"
    assert events(recorder) == [NOTIFY_FAILED, NOTIFY_RESENT]
    assert recorder.flush() == (2, 0)  # both delivered to the audit service


def test_a_notification_still_refused_at_the_end_is_counted_not_delivered(recorder, sandbox_url):
    outage(sandbox_url)
    assert (
        recorder.notify(CTX, "plugin.version.gray.started", key="run.started", title="t") is False
    )
    assert recorder.resend_failed_notifications(CTX) == ([], ["run.started"])
    assert notifications(sandbox_url) == []
    assert events(recorder) == [NOTIFY_FAILED]


def test_a_delivered_notification_leaves_no_failure_record(recorder, sandbox_url):
    assert recorder.notify(CTX, "plugin.version.gray.started", key="run.started", title="t")
    assert recorder.resend_failed_notifications(CTX) == ([], [])
    assert events(recorder) == []
    assert len(notifications(sandbox_url)) == 1
