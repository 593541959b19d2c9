"""Shared helpers of the fault matrix on the session stack (docs/reliability.md, "Fault matrix"):
trigger a plan's run with a signed artifact through the REST API and wait for its end under a
deadline; inject sandbox faults that are removed again also when the test fails; count what the
platform really did per tenant. The stack, sandbox and ledger fixtures are tests/stack/conftest.py's.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from powerx_dev.devstack import AirflowStack
from powerx_dev.devstack.errors import AirflowStackError
from powerx_upgrade.ledger import Ledger
from tests.stack.conftest import FIGURES, PLUGIN, artifact_for, explain

T = TypeVar("T")


@dataclass(frozen=True)
class Finished:
    """A run of the fault matrix, followed to its end."""

    run_id: str
    state: str
    """Airflow's state of the DAG run: `success` or `failed`."""
    seconds: float
    """From the trigger to the run's end as the REST API reported it."""


POLL = 2.0
"""Seconds between two looks at a run (a loaded machine answers slowly; no need to press it)."""


def run_to_end(
    stack: AirflowStack,
    dag_id: str,
    version: str,
    *,
    within: float,
    conf: Mapping[str, Any] | None = None,
    figure: str | None = None,
) -> Finished:
    """Trigger `dag_id` for `version` with the artifact signed for it (the TEST-ONLY key the
    stack trusts), like a CI pipeline through the REST API, and wait until the run ends.

    `within`: the outcome's stated time (seconds); the test fails with the run's task states
    and failed logs when the run is still going after it, and that run is then marked failed
    so the next test's run (the DAGs allow one active run) does not queue behind it. A REST
    call that times out on a crowded machine is retried until the deadline, never a failure.
    `conf` adds or overrides conf keys (e.g. a forged `artifact_signature`). `figure` records
    the seconds in the session's figures.
    """
    run_id = f"fault-{uuid.uuid4().hex[:12]}"
    body = {"target_version": version, **artifact_for(version), **(conf or {})}
    started = time.monotonic()
    deadline = started + within
    _patiently(lambda: stack.unpause(dag_id), deadline)
    _patiently(lambda: _trigger_once(stack, dag_id, run_id, body), deadline)
    state: str | None = None
    try:
        while state not in ("success", "failed"):
            assert time.monotonic() < deadline, (
                f"{run_id} not finished within {within:g}s\n" + explain(stack, dag_id, run_id)
            )
            time.sleep(POLL)
            state = _patiently(lambda: stack.run_state(dag_id, run_id), deadline)
    except BaseException:
        _fail_run(stack, dag_id, run_id)
        raise
    seconds = time.monotonic() - started
    if figure is not None:
        FIGURES[figure] = seconds
    return Finished(run_id, state, seconds)


def _patiently(call: Callable[[], T], deadline: float) -> T:
    """`call()`, retried while the api-server answers with a timeout or a 5xx (a loaded
    machine), until the deadline."""
    while True:
        try:
            return call()
        except AirflowStackError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(POLL)


def _trigger_once(stack: AirflowStack, dag_id: str, run_id: str, body: dict[str, Any]) -> None:
    """Trigger under a run id of our own, so that a retry after a lost answer finds the run
    instead of starting a second one."""
    try:
        stack.run(dag_id, run_id)
    except AirflowStackError:  # not there (or no answer): trigger it under our own run id;
        # should an earlier attempt have started it after all, Airflow refuses the same run id
        # (409) instead of starting a second run
        stack.trigger(dag_id, body, run_id=run_id, unpause=False)
    # else an earlier attempt did start it


def _fail_run(stack: AirflowStack, dag_id: str, run_id: str) -> None:
    # best effort: the assertion already says what went wrong
    with contextlib.suppress(Exception):
        stack.api.request(
            "PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"}
        )


@contextmanager
def injected(sandbox: httpx.Client, *faults: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Inject faults into the sandbox now (their `after`/`duration` count from this moment) and
    remove them when the block ends, also when it raises; yields the sandbox's views of them."""
    answer = sandbox.post("/sandbox/faults", json={"faults": list(faults)})
    assert answer.status_code == 201, answer.text
    views = list(answer.json()["faults"])
    try:
        yield views
    finally:
        for view in views:
            sandbox.delete(f"/sandbox/faults/{view['id']}")


def operations(sandbox: httpx.Client, kind: str = "upgrade") -> dict[str, list[dict[str, Any]]]:
    """Every tenant's operations of `kind` at the platform (the sandbox's own record), noop
    replays excluded: what really changed a tenant, however often the client asked."""
    tenants = sandbox.get("/sandbox/tenants", params={"plugin": PLUGIN}).json()["tenants"]
    return {
        t["id"]: [op for op in t["operations"] if op["kind"] == kind and not op["noop"]]
        for t in tenants
    }


def applied_per_tenant(sandbox: httpx.Client, kind: str = "upgrade") -> Counter[str]:
    """How many operations of `kind` succeeded per tenant at the platform (not noop)."""
    return Counter(
        {
            tenant: sum(op["status"] == "succeeded" for op in ops)
            for tenant, ops in operations(sandbox, kind).items()
            if ops
        }
    )


def planned(ledger: Ledger, run_id: str) -> list[str]:
    """The tenants the run planned, batch after batch."""
    record = ledger.get_run(run_id)
    assert record is not None, f"run {run_id} is not in the ledger"
    return [t for batch in record.batches for t in batch["tenants"]]


def audit_events(ledger: Ledger, run_id: str) -> list[str]:
    """The run's audit events in the ledger, in order."""
    return [r.event for r in ledger.audit_records(run_id)]


__all__ = [
    "Finished",
    "applied_per_tenant",
    "audit_events",
    "explain",
    "injected",
    "operations",
    "planned",
    "run_to_end",
]
