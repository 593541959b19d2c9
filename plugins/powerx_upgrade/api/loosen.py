"""`POST /plan` and policy loosening: a plan that would roll out with less protection than
before (`domain.loosening`) needs an approval token for action `adjust` on the plan; the token
is verified, used up and audited like every other; tightening and neutral changes need none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from powerx_upgrade.airflow_client import APPROVAL_HEADER
from powerx_upgrade.api.auth import Caller
from powerx_upgrade.api.errors import Refused
from powerx_upgrade.api.plans import Validation
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.domain.loosening import loosenings


def approval_of_loosening(
    settings: ApiSettings, caller: Caller, plan_id: str, token: str | None, used: dict[str, Any]
) -> Callable[[Validation], None]:
    """The `check` of `PlanStore.write`: nothing for a plan that loosens nothing, else the
    token verified and used up (its jti and the loosened fields go into `used`)."""

    def check(validation: Validation) -> None:
        from powerx_upgrade.rollout.approvals import accept_approval
        from powerx_upgrade.security.approval import ApprovalRefused

        if validation.plan is None or validation.baseline is None:
            return
        found = loosenings(validation.baseline, validation.plan.policy)
        if not found:
            return
        fields = "; ".join(f"{f.path}: {f.before} -> {f.after} ({f.why})" for f in found)
        try:
            claims = accept_approval(
                settings.ledger(),
                token,
                settings.approval_settings(),
                operation="adjust",
                plan=validation.plan,
                run_id=None,
                via=caller.via,
                actor=caller.name,
                now=settings.now(),
            )
        except ApprovalRefused as exc:
            status = {"missing": 401, "not_configured": 503}.get(exc.code, 403)
            raise Refused(
                status,
                exc.code,
                f"plan {plan_id!r} loosens its policy ({fields}): an approval token for action "
                f"'adjust' on plan {plan_id!r} is needed ({APPROVAL_HEADER})"
                + ("" if exc.code == "missing" else f"; the token was refused: {exc.message}"),
            ) from None
        used["approval_jti"] = claims.jti
        used["loosened"] = [f.path for f in found]

    return check
