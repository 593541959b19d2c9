"""The run-wide blast-radius budget (`policy.budget`), judged on plain counts: how many tenants
are on the new version before the last batch, and how many deploys failed in all batches."""

from __future__ import annotations

from dataclasses import dataclass

from powerx_upgrade.domain.policy import BudgetSpec


@dataclass(frozen=True)
class BudgetBreach:
    limit: str
    """`max_exposed` or `max_failed_tenants`."""
    value: int
    allowed: int
    reason: str


def budget_breach(
    budget: BudgetSpec, *, exposed: int, failed: int, last_batch: bool
) -> BudgetBreach | None:
    """The first limit the run has gone past after a batch's deploy, or None. `max_exposed`
    counts only before the last batch (the last batch exposes everyone by design)."""
    if budget.max_failed_tenants is not None and failed > budget.max_failed_tenants:
        return BudgetBreach(
            "max_failed_tenants",
            failed,
            budget.max_failed_tenants,
            f"{failed} tenant deploys failed in this run, more than budget.max_failed_tenants "
            f"{budget.max_failed_tenants}",
        )
    if not last_batch and budget.max_exposed is not None and exposed > budget.max_exposed:
        return BudgetBreach(
            "max_exposed",
            exposed,
            budget.max_exposed,
            f"{exposed} tenants are on the new version before the last batch, more than "
            f"budget.max_exposed {budget.max_exposed}",
        )
    return None
