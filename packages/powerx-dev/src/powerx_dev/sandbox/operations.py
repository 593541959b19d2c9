"""Upgrade and roll back one tenant: idempotent by key, one operation in flight per tenant,
seeded latency and deploy failures (a part of `SandboxState`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from powerx_dev.sandbox.contract import RollbackRequest, UpgradeRequest
from powerx_dev.sandbox.encoding import fingerprint, iso
from powerx_dev.sandbox.errors import IdempotencyMismatch, OperationInFlight, RollbackUnavailable
from powerx_dev.sandbox.faults import ActiveFault, DeployFailureFault, InFlightFault, fires
from powerx_dev.sandbox.scenario import Scenario
from powerx_dev.sandbox.seeded import key_hash, symmetric
from powerx_dev.sandbox.tenants import TenantRecord


@dataclass
class _Idempotent:
    fingerprint: str
    task: asyncio.Task[dict[str, Any]]


class TenantOperations:
    """The upgrade and rollback of `SandboxState`, which provides the attributes below."""

    scenario: Scenario
    seed: int
    sleep: Callable[[float], Awaitable[Any]]
    faults: list[ActiveFault]
    first_upgrade_at: int | None
    _idempotent: dict[tuple[str, str, str], _Idempotent]
    _op_seq: int
    now_ms: Callable[[], int]
    """The sandbox clock in epoch milliseconds (`SandboxState.now_ms`)."""

    def _holding(self, version: str, role: str) -> dict[str, Any]:
        return {"version": version, "role": role, "amounts": self.scenario.resources_for(version)}

    async def upgrade(self, record: TenantRecord, request: UpgradeRequest) -> tuple[dict, bool]:
        """Install a version on a tenant: (answer, replayed)."""
        return await self._operate(
            record,
            "upgrade",
            request.idempotency_key,
            fingerprint(request),
            lambda op_id: self._run_upgrade(record, request, op_id),
        )

    async def rollback(self, record: TenantRecord, request: RollbackRequest) -> tuple[dict, bool]:
        """Return a tenant to its previous version (and config): (answer, replayed)."""
        return await self._operate(
            record,
            "rollback",
            request.idempotency_key,
            fingerprint(request),
            lambda op_id: self._run_rollback(record, request, op_id),
        )

    async def _operate(
        self,
        record: TenantRecord,
        kind: str,
        key: str,
        digest: str,
        runner: Callable[[str], Awaitable[dict[str, Any]]],
    ) -> tuple[dict[str, Any], bool]:
        store_key = (record.id, kind, key)
        known = self._idempotent.get(store_key)
        if known is not None:
            if known.fingerprint != digest:
                raise IdempotencyMismatch(
                    f"idempotency key {key!r} was already used for a different {kind} "
                    f"of tenant {record.id!r}"
                )
            return dict(await asyncio.shield(known.task)), True
        if record.in_flight is not None or self._busy_elsewhere(record, kind):
            raise OperationInFlight(
                f"tenant {record.id!r} has operation {record.in_flight or 'of another client'} "
                "in flight; retry later",
                {"Retry-After": "1"},
            )
        self._op_seq += 1
        op_id = f"op-{self._op_seq:06d}"
        record.in_flight = op_id  # before any await: closes the window for a second operation
        # A task, so a client that disconnects cannot leave the tenant half-changed.
        task = asyncio.ensure_future(runner(op_id))
        self._idempotent[store_key] = _Idempotent(digest, task)
        try:
            return dict(await asyncio.shield(task)), False
        except BaseException:
            if task.done() and (task.cancelled() or task.exception() is not None):
                self._idempotent.pop(store_key, None)
            raise

    def _busy_elsewhere(self, record: TenantRecord, kind: str) -> bool:
        """An `in_flight` fault holds the tenant: count the refusal and say so."""
        now = self.now_ms()
        for fault in self.faults:
            spec = fault.spec
            if not isinstance(spec, InFlightFault) or spec.operation != kind:
                continue
            if not spec.matches(record.id, record.labels) or fault.spent(record.id):
                continue
            if fault.active_at(now, self.first_upgrade_at):
                fault.hits[record.id] += 1
                return True
        return False

    def _latency(self, kind: str, tenant_id: str, key: str) -> float:
        spec = self.scenario.latency
        base = spec.upgrade_ms if kind == "upgrade" else spec.rollback_ms
        jitter = spec.jitter * symmetric(key_hash(self.seed, "latency", kind, tenant_id, key))
        return max(0.0, base * (1.0 + jitter)) / 1000.0

    def _deploy_failure(self, kind: str, record: TenantRecord, version: str) -> str | None:
        record.attempts[(kind, version)] += 1
        attempt = record.attempts[(kind, version)]
        now = self.now_ms()
        for fault in self.faults:
            spec = fault.spec
            if not isinstance(spec, DeployFailureFault) or spec.operation != kind:
                continue
            if spec.version is not None and spec.version != version:
                continue
            if not spec.matches(record.id, record.labels):
                continue
            if not fault.active_at(now, self.first_upgrade_at):
                continue
            if fires(self.seed, fault.id, spec.rate, record.id, kind, version, attempt):
                return spec.message
        return None

    def _operation(
        self,
        op_id: str,
        kind: str,
        key: str,
        record: TenantRecord,
        before: tuple[str, str],
        started: float,
        *,
        status: str = "succeeded",
        noop: bool = False,
        freed: Sequence[dict[str, Any]] = (),
        error: str | None = None,
        target: str | None = None,
    ) -> dict[str, Any]:
        finished = self.now_ms()
        record.updated_at = finished
        operation = {
            "id": op_id,
            "kind": kind,
            "status": status,
            "noop": noop,
            "idempotency_key": key,
            "from_version": before[0],
            "to_version": target or record.version,
            "config_version_before": before[1],
            "config_version_after": record.config_version,
            "freed": [dict(holding) for holding in freed],
            "error": error,
            "started_at": iso(started),
            "finished_at": iso(finished),
        }
        record.operations.append(operation)
        return {**record.view(), "operation": operation}

    async def _run_upgrade(
        self, record: TenantRecord, request: UpgradeRequest, op_id: str
    ) -> dict[str, Any]:
        started = self.now_ms()
        before = (record.version, record.config_version)
        key, target = request.idempotency_key, request.version
        try:
            if target == record.version:
                return self._operation(op_id, "upgrade", key, record, before, started, noop=True)
            record.state = "upgrading"
            await self.sleep(self._latency("upgrade", record.id, key))
            failure = self._deploy_failure("upgrade", record, target)
            if failure is not None:
                record.state, record.last_error = "failed", failure
                return self._operation(
                    op_id, "upgrade", key, record, before, started,
                    status="failed", error=failure, target=target,
                )  # fmt: skip
            freed = [h for h in record.holdings if h["role"] == "standby"]
            record.holdings = [
                {**h, "role": "standby"} for h in record.holdings if h["role"] == "active"
            ] + [self._holding(target, "active")]
            record.previous_version, record.previous_config_version = before
            record.config_seq += 1
            record.config_version = f"cfg-{record.config_seq}"
            record.install(target, self.now_ms())
            record.state, record.last_error = "ready", None
            return self._operation(op_id, "upgrade", key, record, before, started, freed=freed)
        finally:
            record.in_flight = None
            if record.state == "upgrading":  # cancelled mid-way: nothing was changed
                record.state = "ready"

    async def _run_rollback(
        self, record: TenantRecord, request: RollbackRequest, op_id: str
    ) -> dict[str, Any]:
        started = self.now_ms()
        before = (record.version, record.config_version)
        key = request.idempotency_key
        target = request.to_version or record.previous_version
        try:
            if target is None:
                raise RollbackUnavailable(
                    f"tenant {record.id!r} has no previous version to roll back to"
                )
            if target == record.version:
                if record.state == "failed":
                    record.state, record.last_error = "ready", None
                return self._operation(op_id, "rollback", key, record, before, started, noop=True)
            if target != record.previous_version:
                raise RollbackUnavailable(
                    f"cannot roll tenant {record.id!r} back to {target}: it runs "
                    f"{record.version} and its previous version is {record.previous_version}"
                )
            record.state = "rolling_back"
            await self.sleep(self._latency("rollback", record.id, key))
            failure = self._deploy_failure("rollback", record, target)
            if failure is not None:
                record.state, record.last_error = "failed", failure
                return self._operation(
                    op_id, "rollback", key, record, before, started,
                    status="failed", error=failure, target=target,
                )  # fmt: skip
            freed = [h for h in record.holdings if h["role"] == "active"]
            record.holdings = [
                {**h, "role": "active"} for h in record.holdings if h["role"] == "standby"
            ] or [self._holding(target, "active")]
            if request.restore_config and record.previous_config_version is not None:
                record.config_version = record.previous_config_version
            record.previous_version = record.previous_config_version = None
            record.install(target, self.now_ms())
            record.state, record.last_error = "ready", None
            return self._operation(op_id, "rollback", key, record, before, started, freed=freed)
        finally:
            record.in_flight = None
            if record.state == "rolling_back":
                record.state = "ready"
