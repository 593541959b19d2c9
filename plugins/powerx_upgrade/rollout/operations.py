"""Per-tenant upgrades and rollbacks: bounded concurrency, retries, idempotency, ledger records.

Idempotency has two layers. The ledger keeps one action per (run, kind, tenant), keyed
`<run>:<kind>:<tenant>`; a retried Airflow task finds it and skips tenants already done. The
platform call of attempt n uses `<key>#<n>`: a task retried after a crash replays attempt 1 with
the same key, and the platform answers from its record instead of acting twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.errors import PowerXConflict, PowerXUnavailable
from powerx_upgrade.rollout.record import Recorder

log = logging.getLogger(__name__)


class PlatformClient(Protocol):
    def get_tenant(self, plugin: str, tenant: str) -> dict[str, Any]: ...
    def list_tenants(self, plugin: str) -> list[dict[str, Any]]: ...
    def upgrade(
        self,
        plugin: str,
        tenant: str,
        *,
        version: str,
        artifact: dict[str, Any],
        idempotency_key: str,
    ) -> dict[str, Any]: ...
    def rollback(
        self,
        plugin: str,
        tenant: str,
        *,
        to_version: str | None,
        idempotency_key: str,
        restore_config: bool = True,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TenantResult:
    tenant: str
    state: str
    """succeeded | failed | skipped | refused"""
    from_version: str | None = None
    to_version: str | None = None
    attempts: int = 0
    error: str | None = None


@dataclass(frozen=True)
class ShardSummary:
    kind: str
    batch: int | None
    results: tuple[TenantResult, ...]

    def count(self, state: str) -> int:
        return sum(1 for r in self.results if r.state == state)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "batch": self.batch,
            "tenants": len(self.results),
            **{s: self.count(s) for s in ("succeeded", "failed", "skipped", "refused")},
            "failed_tenants": [r.tenant for r in self.results if r.state == "failed"][:100],
        }


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 10.0

    def wait(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))


def deploy_shard(
    platform: PlatformClient,
    ledger: Ledger,
    recorder: Recorder,
    ctx: RunContext,
    *,
    batch: int,
    tenants: Sequence[str],
    concurrency: int,
    retry: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> ShardSummary:
    """Upgrade a shard of a batch: claim the tenants, upgrade the claimed ones concurrently."""
    refused = ledger.claim_tenants(ctx.run_id, ctx.plugin, list(tenants))
    results: list[TenantResult] = []
    for tenant, holder in refused.items():
        ledger.record_refusal(
            run_id=ctx.run_id,
            plugin=ctx.plugin,
            tenant_id=tenant,
            batch_index=batch,
            reason=f"tenant is in active run {holder} of plugin {ctx.plugin}",
        )
        recorder.audit(
            ctx,
            "tenant.upgrade.refused",
            tenants=[tenant],
            details={"batch": batch, "held_by": holder},
            audit_id=f"{ctx.key('upgrade-refused', tenant)}",
        )
        results.append(TenantResult(tenant, "refused", error=f"held by run {holder}"))
    todo = [t for t in tenants if t not in refused]

    def one(tenant: str) -> TenantResult:
        return _upgrade_one(platform, ledger, recorder, ctx, batch, tenant, retry, sleep)

    results += _run_all(one, todo, concurrency)
    recorder.flush()
    return ShardSummary("upgrade", batch, tuple(results))


def rollback_shard(
    platform: PlatformClient,
    ledger: Ledger,
    recorder: Recorder,
    ctx: RunContext,
    *,
    targets: Sequence[dict[str, Any]],
    concurrency: int,
    retry: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> ShardSummary:
    """Roll tenants back to the version each had before this run, config restored.

    `targets`: [{"tenant", "from_version", "batch"}] as chosen by the rollback scope.
    """

    def one(target: dict[str, Any]) -> TenantResult:
        return _rollback_one(platform, ledger, recorder, ctx, target, retry, sleep)

    results = _run_all(one, list(targets), concurrency)
    recorder.flush()
    return ShardSummary("rollback", None, tuple(results))


def _run_all(
    work: Callable[[Any], TenantResult], items: list[Any], concurrency: int
) -> list[TenantResult]:
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items)))) as pool:
        return list(pool.map(work, items))


@dataclass(frozen=True)
class _TenantOp:
    """One tenant's upgrade or rollback in this run: who and what, named once."""

    ledger: Ledger
    recorder: Recorder
    ctx: RunContext
    kind: str
    tenant: str
    batch: int | None

    @property
    def key(self) -> str:
        return self.ctx.key(self.kind, self.tenant)

    def begin(
        self, from_version: str | None, to_version: str, from_config: str | None = None
    ) -> Any:
        return self.ledger.begin_action(
            run_id=self.ctx.run_id,
            plugin=self.ctx.plugin,
            tenant_id=self.tenant,
            batch_index=self.batch,
            kind=self.kind,
            from_version=from_version,
            to_version=to_version,
            idempotency_key=self.key,
            from_config=from_config,
        )

    def finish(
        self,
        from_version: str | None,
        *,
        state: str,
        attempts: int,
        error: str | None = None,
        noop: bool = False,
        to_version: str | None = None,
        config_after: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> TenantResult:
        """Record the outcome in the ledger and the audit outbox."""
        self.ledger.finish_action(
            self.key,
            state,
            to_version=to_version,
            config_after=config_after,
            error=error,
            attempts=attempts,
            noop=noop,
            detail=detail,
        )
        self.recorder.audit(
            self.ctx,
            f"tenant.{self.kind}.{state}",
            tenants=[self.tenant],
            audit_id=f"{self.key}:{state}",
            details={
                "batch": self.batch,
                "from_version": from_version,
                "to_version": to_version,
                "attempts": attempts,
                "error": error,
                "noop": noop,
            },
        )
        return TenantResult(self.tenant, state, from_version, to_version, attempts, error)


def _upgrade_one(
    platform: PlatformClient,
    ledger: Ledger,
    recorder: Recorder,
    ctx: RunContext,
    batch: int,
    tenant: str,
    retry: RetryPolicy,
    sleep: Callable[[float], None],
) -> TenantResult:
    op = _TenantOp(ledger, recorder, ctx, "upgrade", tenant, batch)
    try:
        current = _with_retries(lambda _: platform.get_tenant(ctx.plugin, tenant), retry, sleep)[0]
    except Exception as exc:
        action = op.begin(None, ctx.target_version)
        if action.state == "succeeded":
            return TenantResult(tenant, "skipped", action.from_version, ctx.target_version)
        return op.finish(None, state="failed", error=f"cannot read tenant: {exc}", attempts=0)
    action = op.begin(current.get("version"), ctx.target_version, current.get("config_version"))
    if action.state == "succeeded":  # a retried task: this tenant is done
        return TenantResult(tenant, "skipped", action.from_version, ctx.target_version)
    if action.from_version == ctx.target_version:  # on the target before this run touched it
        return op.finish(
            action.from_version,
            state="skipped",
            noop=True,
            attempts=0,
            detail={"note": "already on the target version"},
        )

    def attempt(n: int) -> dict[str, Any]:
        return platform.upgrade(
            ctx.plugin,
            tenant,
            version=ctx.target_version,
            artifact=ctx.artifact,
            idempotency_key=f"{op.key}#{n}",
        )

    return _operate(op, action.from_version, attempt, retry, sleep)


def _rollback_one(
    platform: PlatformClient,
    ledger: Ledger,
    recorder: Recorder,
    ctx: RunContext,
    target: dict[str, Any],
    retry: RetryPolicy,
    sleep: Callable[[float], None],
) -> TenantResult:
    tenant, to_version = target["tenant"], target.get("from_version")
    op = _TenantOp(ledger, recorder, ctx, "rollback", tenant, target.get("batch"))
    action = op.begin(ctx.target_version, to_version or "")
    if action.state == "succeeded":
        return TenantResult(tenant, "skipped", ctx.target_version, to_version)

    def attempt(n: int) -> dict[str, Any]:
        return platform.rollback(
            ctx.plugin,
            tenant,
            to_version=to_version,
            idempotency_key=f"{op.key}#{n}",
            restore_config=True,
        )

    return _operate(op, ctx.target_version, attempt, retry, sleep)


def _operate(
    op: _TenantOp,
    from_version: str | None,
    attempt: Callable[[int], dict[str, Any]],
    retry: RetryPolicy,
    sleep: Callable[[float], None],
) -> TenantResult:
    """Call the platform until the operation succeeds or the retries run out.

    A transient error (no answer, 5xx, 409 in flight) retries the *same* key: the first call
    may have been applied, and only a replay of its key tells the outcome. Only a failure the
    platform reported moves on to a new key (`#2`, `#3`, ...) for a fresh try.
    """
    error = None
    tries = 0
    generation = 1
    while tries <= retry.retries:
        tries += 1
        try:
            answer = attempt(generation)
        except Exception as exc:
            error = str(exc)
            if not _transient(exc):
                break
            if tries <= retry.retries:
                sleep(retry.wait(tries))
            continue
        operation = answer.get("operation", {})
        if operation.get("status") == "succeeded":
            return op.finish(
                from_version,
                state="succeeded",
                attempts=tries,
                noop=bool(operation.get("noop")),
                to_version=answer.get("version"),
                config_after=answer.get("config_version"),
                detail={
                    "operation": operation.get("id"),
                    "freed": operation.get("freed", []),
                    # the platform's clock at the end of the work: how far it is from ours
                    "platform_at": operation.get("finished_at"),
                },
            )
        error = operation.get("error") or f"platform reported status {operation.get('status')}"
        generation += 1
        if tries <= retry.retries:
            sleep(retry.wait(tries))
    return op.finish(from_version, state="failed", attempts=tries, error=error)


def _transient(exc: Exception) -> bool:
    return isinstance(exc, PowerXUnavailable | PowerXConflict)


def _with_retries(
    call: Callable[[int], Any], retry: RetryPolicy, sleep: Callable[[float], None]
) -> tuple[Any, int]:
    for n in range(1, retry.retries + 2):
        try:
            return call(n), n
        except Exception as exc:
            if not _transient(exc) or n > retry.retries:
                raise
            sleep(retry.wait(n))
    raise AssertionError("unreachable")


def verify_rollback(
    platform: PlatformClient,
    ctx: RunContext,
    targets: Iterable[dict[str, Any]],
    actions: dict[str, Any],
) -> dict[str, Any]:
    """Read every rolled-back tenant from the platform: old version, old config, ready."""
    by_id = {t["id"]: t for t in platform.list_tenants(ctx.plugin)}
    verified: list[dict[str, Any]] = []
    broken: list[dict[str, Any]] = []
    for target in targets:
        tenant = target["tenant"]
        state = by_id.get(tenant)
        upgrade = actions.get(tenant)
        want_config = getattr(upgrade, "from_config", None)
        problems: list[str] = []
        if state is None:
            problems.append("unknown to the platform")
        else:
            if state.get("version") != target.get("from_version"):
                problems.append(f"on {state.get('version')}, expected {target.get('from_version')}")
            if want_config and state.get("config_version") != want_config:
                problems.append(f"config {state.get('config_version')}, expected {want_config}")
            if state.get("state") != "ready":
                problems.append(f"state {state.get('state')}")
        (broken if problems else verified).append(
            {
                "tenant": tenant,
                "version": state.get("version") if state else None,
                "problems": problems,
            }
        )
    return {"verified": verified, "broken": broken, "checked_at": datetime.now(UTC).isoformat()}


def summary_json(summary: ShardSummary) -> dict[str, Any]:
    return {**summary.as_dict(), "results": [asdict(r) for r in summary.results]}
