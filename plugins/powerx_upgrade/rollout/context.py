"""A run's identity and inputs: the plan's defaults overridden by the trigger form / run conf."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from powerx_upgrade.domain.models import Plan

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
CONF_KEYS = (
    "target_version",
    "artifact_uri",
    "artifact_sha256",
    "artifact_signature",
    "dry_run",
    "reason",
    "respect_window",
    "allow_downgrade",
)


class RunConfError(ValueError):
    """The run's conf cannot drive this plan; the message names every wrong field."""


@dataclass(frozen=True)
class RunContext:
    """Everything a task needs to know about its run; JSON-able, passed through XCom."""

    run_id: str
    dag_id: str
    plan_id: str
    plugin: str
    target_version: str
    artifact: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    reason: str | None = None
    triggered_by: str | None = None
    respect_window: bool = True
    allow_downgrade: bool = False
    """The plan's or the run's conf `allow_downgrade`: preflight lets tenants go to an older
    version."""

    def key(self, kind: str, tenant: str) -> str:
        """The idempotency key of one tenant operation of this run: a retried task reuses it,
        so the platform never applies the same upgrade or rollback twice."""
        return f"{self.run_id}:{kind}:{tenant}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunContext:
        return cls(**data)


def resolve_run(
    plan: Plan,
    conf: dict[str, Any] | None,
    *,
    run_id: str,
    dag_id: str,
    triggered_by: str | None = None,
) -> RunContext:
    """The plan's defaults overridden by the run's conf, checked; all problems in one error."""
    conf = {k: v for k, v in (conf or {}).items() if v not in (None, "")}
    problems: list[str] = []
    unknown = sorted(set(conf) - set(CONF_KEYS))
    if unknown:
        problems.append(
            f"unknown conf key(s) {', '.join(unknown)} (allowed: {', '.join(CONF_KEYS)})"
        )
    version = str(conf.get("target_version") or plan.target_version or "")
    if not version:
        problems.append("target_version: the plan has no default; give one in the run's conf")
    elif not _VERSION.match(version):
        problems.append(f"target_version {version!r} is not a version like 2.4.0")
    default = plan.artifact
    artifact = {
        "uri": conf.get("artifact_uri") or (default.uri if default else None),
        "sha256": conf.get("artifact_sha256") or (default.sha256 if default else None),
        "signature": conf.get("artifact_signature") or (default.signature if default else None),
    }
    dry_run = _flag(conf.get("dry_run", False), "dry_run", problems)
    if not dry_run:
        if not artifact["uri"]:
            problems.append("artifact_uri: required (the plan has no default artifact)")
        if not artifact["sha256"]:
            problems.append("artifact_sha256: required (the plan has no default artifact)")
    if artifact["sha256"] and not _SHA256.match(str(artifact["sha256"])):
        problems.append(f"artifact_sha256 {artifact['sha256']!r} is not 64 hex digits")
    respect_window = _flag(conf.get("respect_window", True), "respect_window", problems)
    allow_downgrade = plan.allow_downgrade or _flag(
        conf.get("allow_downgrade", False), "allow_downgrade", problems
    )
    if problems:
        raise RunConfError(f"run conf for plan {plan.id!r}: " + "; ".join(problems))
    return RunContext(
        run_id=run_id,
        dag_id=dag_id,
        plan_id=plan.id,
        plugin=plan.plugin,
        target_version=version,
        artifact={k: v for k, v in artifact.items() if v},
        dry_run=dry_run,
        reason=conf.get("reason"),
        triggered_by=triggered_by,
        respect_window=respect_window,
        allow_downgrade=allow_downgrade,
    )


def _flag(value: Any, name: str, problems: list[str]) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    problems.append(f"{name} must be true or false, not {value!r}")
    return False
