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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from powerx_upgrade.ledger import ActionOutcome, ActionRecord, ActionStart, Ledger, TenantHeld
from powerx_upgrade.rollout.batching import Outcomes, begin_all
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.errors import PowerXConflict, PowerXThrottled, PowerXUnavailable
from powerx_upgrade.rollout.pacing import AdaptiveConcurrency
from powerx_upgrade.rollout.record import Recorder, audit_entry

log = logging.getLogger(__name__)

MAX_THROTTLED = 20
"""Throttled answers (429) a tenant may get before it counts as failed: they cost no retry,
the adaptive concurrency slows the shard down instead, but a platform that never recovers must
not hold a task for ever."""
_T = TypeVar("_T")


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
    pacing: dict[str, Any] = field(default_factory=dict)

    def count(self, state: str) -> int:
        return sum(1 for r in self.results if r.state == state)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "batch": self.batch,
            "tenants": len(self.results),
            **{s: self.count(s) for s in ("succeeded", "failed", "skipped", "refused")},
            "failed_tenants": [r.tenant for r in self.results if r.state == "failed"][:100],
            "pacing": self.pacing,
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
    audited: list[str] = []
    for tenant, holder in refused.items():
        ledger.record_refusal(
            run_id=ctx.run_id,
            plugin=ctx.plugin,
            tenant_id=tenant,
            batch_index=batch,
            reason=f"tenant is in active run {holder} of plugin {ctx.plugin}",
        )
        audited.append(
            recorder.audit(
                ctx,
                "tenant.upgrade.refused",
                tenants=[tenant],
                details={"batch": batch, "held_by": holder},
                audit_id=f"{ctx.key('upgrade-refused', tenant)}",
            )
        )
        results.append(TenantResult(tenant, "refused", error=f"held by run {holder}"))
    todo = [t for t in tenants if t not in refused]
    pacing = AdaptiveConcurrency(concurrency)
    outcomes = Outcomes(ledger)
    # read every tenant's current version first: the actions then begin in one transaction
    reads = _run_all(lambda t: _read_tenant(platform, ctx, t, retry, sleep, pacing), todo, pacing)
    actions = begin_all(
        ledger,
        ctx,
        "upgrade",
        [
            ActionStart(
                tenant_id=tenant,
                idempotency_key=ctx.key("upgrade", tenant),
                to_version=ctx.target_version,
                batch_index=batch,
                from_version=current.get("version") if isinstance(current, dict) else None,
                from_config=current.get("config_version") if isinstance(current, dict) else None,
            )
            for tenant, current in zip(todo, reads, strict=True)
        ],
    )

    def one(item: tuple[str, Any, ActionRecord | TenantHeld]) -> TenantResult:
        tenant, current, action = item
        if isinstance(action, TenantHeld):
            raise action
        op = _TenantOp(outcomes, ctx, "upgrade", tenant, batch)
        return _upgrade_one(platform, op, current, action, retry, sleep, pacing)

    try:
        results += _run_all(one, list(zip(todo, reads, actions, strict=True)), pacing)
    finally:  # a failed thread must not cost the others their records
        outcomes.flush()
    recorder.flush(ids=audited + outcomes.audit_ids)
    return ShardSummary("upgrade", batch, tuple(results), pacing.stats())


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

    `targets`: [{"tenant", "from_version", "batch"}] as chosen by the rollback scope. The
    shard's actions begin in one ledger transaction and end in one per `LEDGER_BATCH`.
    """
    pacing = AdaptiveConcurrency(concurrency)
    outcomes = Outcomes(ledger)
    actions = begin_all(
        ledger,
        ctx,
        "rollback",
        [
            ActionStart(
                tenant_id=t["tenant"],
                idempotency_key=ctx.key("rollback", t["tenant"]),
                to_version=t.get("from_version") or "",
                batch_index=t.get("batch"),
                from_version=ctx.target_version,
            )
            for t in targets
        ],
    )

    def one(item: tuple[dict[str, Any], ActionRecord | TenantHeld]) -> TenantResult:
        target, action = item
        if isinstance(action, TenantHeld):
            raise action
        op = _TenantOp(outcomes, ctx, "rollback", target["tenant"], target.get("batch"))
        return _rollback_one(platform, op, target, action, retry, sleep, pacing)

    try:
        results = _run_all(one, list(zip(targets, actions, strict=True)), pacing)
    finally:  # a failed thread must not cost the others their records
        outcomes.flush()
    recorder.flush(ids=outcomes.audit_ids)
    return ShardSummary("rollback", None, tuple(results), pacing.stats())


def _run_all(work: Callable[[Any], _T], items: list[Any], pacing: AdaptiveConcurrency) -> list[_T]:
    """`work` on every item, in order; `pacing` bounds the platform calls in flight."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(pacing.ceiling, len(items)))) as pool:
        return list(pool.map(work, items))


@dataclass(frozen=True)
class _TenantOp:
    """One tenant's upgrade or rollback in this run: who and what, named once."""

    outcomes: Outcomes
    ctx: RunContext
    kind: str
    tenant: str
    batch: int | None

    @property
    def key(self) -> str:
        return self.ctx.key(self.kind, self.tenant)

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
        """Queue the outcome for the ledger, with its audit record."""
        audit = audit_entry(
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
        self.outcomes.add(
            ActionOutcome(
                idempotency_key=self.key,
                state=state,
                to_version=to_version,
                config_after=config_after,
                error=error,
                attempts=attempts,
                noop=noop,
                detail=detail,
                audit=audit,
            )
        )
        return TenantResult(self.tenant, state, from_version, to_version, attempts, error)


def _read_tenant(
    platform: PlatformClient,
    ctx: RunContext,
    tenant: str,
    retry: RetryPolicy,
    sleep: Callable[[float], None],
    pacing: AdaptiveConcurrency,
) -> dict[str, Any] | Exception:
    """The tenant as the platform has it now, or the error that kept us from reading it."""

    def read(_: int) -> dict[str, Any]:
        with pacing.slot():
            return platform.get_tenant(ctx.plugin, tenant)

    try:
        return _with_retries(read, retry, sleep, pacing)[0]  # type: ignore[no-any-return]
    except Exception as exc:
        return exc


def _upgrade_one(
    platform: PlatformClient,
    op: _TenantOp,
    current: dict[str, Any] | Exception,
    action: ActionRecord,
    retry: RetryPolicy,
    sleep: Callable[[float], None],
    pacing: AdaptiveConcurrency,
) -> TenantResult:
    ctx, tenant = op.ctx, op.tenant
    if action.state == "succeeded":  # a retried task: this tenant is done
        return TenantResult(tenant, "skipped", action.from_version, ctx.target_version)
    if isinstance(current, Exception):
        return op.finish(None, state="failed", error=f"cannot read tenant: {current}", attempts=0)
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

    return _operate(op, action.from_version, attempt, retry, sleep, pacing)


def _rollback_one(
    platform: PlatformClient,
    op: _TenantOp,
    target: dict[str, Any],
    action: ActionRecord,
    retry: RetryPolicy,
    sleep: Callable[[float], None],
    pacing: AdaptiveConcurrency,
) -> TenantResult:
    ctx, tenant, to_version = op.ctx, op.tenant, target.get("from_version")
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

    return _operate(op, ctx.target_version, attempt, retry, sleep, pacing)


def _operate(
    op: _TenantOp,
    from_version: str | None,
    attempt: Callable[[int], dict[str, Any]],
    retry: RetryPolicy,
    sleep: Callable[[float], None],
    pacing: AdaptiveConcurrency,
) -> TenantResult:
    """Call the platform until the operation succeeds or the retries run out.

    A transient error (no answer, 5xx, 409 in flight) retries the *same* key: the first call
    may have been applied, and only a replay of its key tells the outcome. Only a failure the
    platform reported moves on to a new key (`#2`, `#3`, ...) for a fresh try. A throttled
    answer (429) costs no retry (up to `MAX_THROTTLED`): it slows the whole shard down instead.
    """
    error = None
    tries = throttled = 0
    generation = 1
    while tries <= retry.retries:
        try:
            with pacing.slot():
                answer = attempt(generation)
        except Exception as exc:
            error = str(exc)
            if isinstance(exc, PowerXThrottled) and throttled < MAX_THROTTLED:
                throttled += 1
                pacing.throttled(exc.retry_after)  # the next slot() waits the window out
                continue
            tries += 1
            if not _transient(exc):
                break
            if tries <= retry.retries:
                sleep(retry.wait(tries))
            continue
        tries += 1
        pacing.succeeded()
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
    call: Callable[[int], Any],
    retry: RetryPolicy,
    sleep: Callable[[float], None],
    pacing: AdaptiveConcurrency | None = None,
) -> tuple[Any, int]:
    for n in range(1, retry.retries + 2):
        try:
            return call(n), n
        except Exception as exc:
            if not _transient(exc) or n > retry.retries:
                raise
            if pacing is not None and isinstance(exc, PowerXThrottled):
                pacing.throttled(exc.retry_after)
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
