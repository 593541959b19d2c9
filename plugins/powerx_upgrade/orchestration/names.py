"""Every task id and branch target of the plan DAGs and the rollback DAG, defined once.

The DAG descriptions, the task functions, the operators' branch targets and every XCom pull
take their ids from here; a test fails on a task-id literal anywhere else in the package.
"""

from __future__ import annotations

PREFLIGHT, ROLLBACK, FINALIZE = "preflight", "rollback", "finalize"

VALIDATE = "preflight.validate"
VERIFY_ARTIFACT = "preflight.verify_artifact"
PLAN = "preflight.plan"
BEGIN = "preflight.begin"
"""Wait for the window (a freeze stops the run), subscribe monitoring, take the baseline,
announce the run, then branch: batch 1 or the dry run's end. One task, not five: the steps are
one concern (get ready to touch the first tenant) and each costs a scheduler hop and a task
process (docs/performance.md)."""
DRY_RUN = "preflight.dry_run"

RECORD = "finalize.record"
REPORT = "finalize.report"
RESULT = "finalize.result"

# the batch rollback group of a plan DAG
ROLLBACK_SCOPE = "rollback.scope"
ROLLBACK_EXECUTE = "rollback.execute"
ROLLBACK_VERIFY = "rollback.verify"
ROLLBACK_ANNOUNCE = "rollback.announce"

# the `plugin_upgrade_rollback` DAG (its scope, execute and verify share the ids above)
LATE_RESOLVE = "rollback.resolve"
LATE_WAIT = "rollback.wait"
LATE_RECORD = "rollback.record"
LATE_REPORT = "rollback.report"

# the steps of batch k's group: `batch(k, GATE)` is `batch_k.gate`
START, APPROVE, REJECTED, SHARDS, DEPLOY, GATE, DECIDE = (
    "start",
    "approve",
    "rejected",
    "shards",
    "deploy",
    "gate",
    "decide",
)
PROMOTE, BATCH_ROLLBACK, PAUSE = "promote", "rollback", "pause"
RESUME, PAUSE_ROLLBACK, PAUSE_STOP = "resume", "pause_rollback", "pause_stop"


def batch_group(k: int) -> str:
    return f"batch_{k}"


def batch(k: int, step: str) -> str:
    """The full task id of a step of batch `k`'s group."""
    return f"{batch_group(k)}.{step}"


def local(task_id: str) -> str:
    """The task's id inside its group (`rollback.scope` -> `scope`)."""
    return task_id.split(".", 1)[1]


SHARD_LABEL = "tenants {{ task.op_kwargs['shard']['start'] }}-{{ task.op_kwargs['shard']['end'] }}"
"""A mapped deploy or rollback task's label: its shard's reference (the tenants by position)."""
