"""A plan as a plain DAG description (groups, tasks, edges), before any Airflow object exists.

The factory (`factory.py`) materialises this in one place; tests check the shape here without
Airflow. Reading order of a run:

    preflight: validate -> verify_artifact -> plan -> begin (window, subscribe, baseline,
               announce; branch: batch 1 or dry_run)
    batch_k:   start -> [approve] -> shards -> deploy (mapped) -> gate -> decide
               decide -> promote | rollback | pause;  pause -> resume | pause_rollback | pause_stop
    rollback:  scope -> execute (mapped) -> verify -> announce
    finalize:  record -> report -> result   (record and report run on every outcome)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from powerx_upgrade.domain.dag_ids import dag_id_of
from powerx_upgrade.domain.durations import format_duration
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.orchestration import names

TAGS = ("grey-upgrade",)

NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
NONE_SKIPPED = "none_skipped"
ALL_DONE = "all_done"
ALL_SUCCESS = "all_success"


@dataclass(frozen=True)
class TaskNode:
    task_id: str
    """Fully qualified: `batch_2.deploy`."""
    kind: str
    group: str
    batch: int | None = None
    trigger_rule: str = ALL_SUCCESS
    mapped_over: str | None = None
    """The task whose XCom list this task is mapped over."""
    doc: str = ""


@dataclass(frozen=True)
class DagShape:
    dag_id: str
    plan_id: str
    schedule: str | None
    timezone: str
    tags: tuple[str, ...]
    doc_md: str
    nodes: tuple[TaskNode, ...]
    edges: tuple[tuple[str, str], ...]
    branch_targets: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def node(self, task_id: str) -> TaskNode:
        return next(n for n in self.nodes if n.task_id == task_id)

    def upstream(self, task_id: str) -> list[str]:
        return [a for a, b in self.edges if b == task_id]

    def downstream(self, task_id: str) -> list[str]:
        return [b for a, b in self.edges if a == task_id]


def dag_id_for(plan_id: str) -> str:
    return dag_id_of(plan_id)


def approval_batches(plan: Plan) -> set[int]:
    """Batches that carry an approval task: those whose policy batch asks for approval, and
    earlier ones that may absorb such a batch when a small fleet merges trailing batches (those
    approve themselves at run time when their planned batch needs no approval)."""
    flags = [b.approval == "required" for b in plan.policy.batches]
    return {k for k in range(1, len(flags) + 1) if any(flags[k - 1 :])}


@dataclass
class _Builder:
    """Collects a DAG's nodes, edges and branch targets in reading order."""

    nodes: list[TaskNode] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    branches: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def add(
        self,
        task_id: str,
        kind: str,
        *,
        batch: int | None = None,
        rule: str = ALL_SUCCESS,
        mapped_over: str | None = None,
        doc: str = "",
    ) -> str:
        group = task_id.split(".")[0]
        self.nodes.append(TaskNode(task_id, kind, group, batch, rule, mapped_over, doc))
        return task_id

    def chain(self, *task_ids: str) -> None:
        self.edges.extend(itertools.pairwise(task_ids))

    def branch(self, source: str, *targets: str) -> None:
        self.edges.extend((source, t) for t in targets)
        self.branches[source] = targets


def describe_plan(plan: Plan) -> DagShape:
    """The DAG of a plan, as data."""
    dag = _Builder()
    _preflight(dag)
    record = _finalize(dag)
    scope = _rollback_group(dag, record)
    count = len(plan.policy.batches)
    with_approval = approval_batches(plan)
    for k in range(1, count + 1):
        following = names.batch(k + 1, names.START) if k < count else record
        _batch_group(dag, k, k in with_approval, scope=scope, record=record, following=following)
    return DagShape(
        dag_id=dag_id_for(plan.id),
        plan_id=plan.id,
        schedule=plan.window.schedule if plan.window else None,
        timezone=plan.window.timezone if plan.window else "UTC",
        tags=(*TAGS, f"plugin:{plan.plugin}", f"policy:{plan.policy_id}"),
        doc_md=doc_md(plan),
        nodes=tuple(dag.nodes),
        edges=tuple(dag.edges),
        branch_targets=dag.branches,
    )


def _preflight(dag: _Builder) -> None:
    add = dag.add
    dag.chain(
        add(names.VALIDATE, "validate", doc="check the run's conf against the plan"),
        add(
            names.VERIFY_ARTIFACT,
            "verify_artifact",
            doc="check the artifact's Ed25519 signature; refuse before any tenant is touched",
        ),
        add(names.PLAN, "plan", doc="fetch tenants, plan the batches"),
        add(
            names.BEGIN,
            "begin",
            doc="wait for the window (stop during a freeze); subscribe monitoring, pre_upgrade "
            "baseline, announce; dry run ends here, else batch 1",
        ),
    )
    add(names.DRY_RUN, "dry_run", doc="dry run: no tenant is touched")


def _finalize(dag: _Builder) -> str:
    record = dag.add(
        names.RECORD,
        "record",
        rule=ALL_DONE,
        doc="outcome, notification and audit; runs on every outcome",
    )
    report = dag.add(
        names.REPORT,
        "report",
        rule=ALL_DONE,
        doc="report.json/md/html (+ post-mortem); renders even when record failed",
    )
    result = dag.add(names.RESULT, "result", doc="fails the run unless fully promoted")
    first = names.batch(1, names.START)
    dag.edges += [
        (names.BEGIN, first),
        (names.BEGIN, names.DRY_RUN),
        (names.DRY_RUN, record),
        (record, report),
        (report, result),
    ]
    dag.branches[names.BEGIN] = (first, names.DRY_RUN)
    return record


def _rollback_group(dag: _Builder, record: str) -> str:
    scope = dag.add(
        names.ROLLBACK_SCOPE,
        "rollback_scope",
        rule=NONE_FAILED_MIN_ONE_SUCCESS,
        doc="which tenants go back (policy scope)",
    )
    execute = dag.add(
        names.ROLLBACK_EXECUTE,
        "rollback_execute",
        mapped_over=scope,
        doc="roll tenants back, concurrently and idempotently",
    )
    verify = dag.add(
        names.ROLLBACK_VERIFY,
        "rollback_verify",
        rule=NONE_SKIPPED,
        doc="read every tenant back from the platform",
    )
    announce = dag.add(
        names.ROLLBACK_ANNOUNCE, "rollback_announce", doc="notify and audit the rollback"
    )
    dag.chain(scope, execute, verify, announce, record)
    return scope


def _batch_group(
    dag: _Builder, k: int, approval: bool, *, scope: str, record: str, following: str
) -> None:
    """Batch k's group. Without an approval, `start` also cuts the deploy shards (one task, one
    scheduler hop less per batch); with one, the shards are cut after the approval."""
    start = dag.add(
        names.batch(k, names.START),
        "start" if approval else "start_shards",
        batch=k,
        rule=ALL_SUCCESS if k == 1 else NONE_FAILED_MIN_ONE_SUCCESS,
        doc="skip if not planned; wait for the window"
        + ("" if approval else "; cut the batch into deploy shards"),
    )
    shards = start
    if approval:
        shards = dag.add(
            names.batch(k, names.SHARDS), "shards", batch=k, doc="cut the batch into deploy shards"
        )
        _approval(dag, k, start, shards, record)
    decide = _deploy_and_gate(dag, k, shards)
    promote, resume = _outcomes(dag, k, decide, scope=scope, record=record)
    dag.edges += [(promote, following), (resume, following)]


def _approval(dag: _Builder, k: int, start: str, shards: str, record: str) -> None:
    approve = dag.add(
        names.batch(k, names.APPROVE), "approve", batch=k, doc="a human approves the batch"
    )
    rejected = dag.add(
        names.batch(k, names.REJECTED), "rejected", batch=k, doc="approval refused: stop"
    )
    dag.edges += [(start, approve), (approve, shards), (approve, rejected), (rejected, record)]
    dag.branches[approve] = (shards, rejected)


def _deploy_and_gate(dag: _Builder, k: int, shards: str) -> str:
    deploy = dag.add(
        names.batch(k, names.DEPLOY),
        "deploy",
        batch=k,
        mapped_over=shards,
        doc="upgrade the shard's tenants",
    )
    gate = dag.add(
        names.batch(k, names.GATE),
        "gate",
        batch=k,
        rule=NONE_SKIPPED,
        doc="deferrable metric gate over the bake",
    )
    decide = dag.add(
        names.batch(k, names.DECIDE),
        "decide",
        batch=k,
        rule=NONE_SKIPPED,
        doc="promote, roll back or pause",
    )
    dag.chain(shards, deploy, gate, decide)
    return decide


def _outcomes(dag: _Builder, k: int, decide: str, *, scope: str, record: str) -> tuple[str, str]:
    """decide -> promote | rollback | pause; pause -> resume | pause_rollback | pause_stop."""
    add = dag.add
    promote = add(names.batch(k, names.PROMOTE), "promote", batch=k)
    rollback = add(names.batch(k, names.BATCH_ROLLBACK), "rollback", batch=k)
    pause = add(
        names.batch(k, names.PAUSE), "pause", batch=k, doc="a human decides: resume/roll back/stop"
    )
    resume = add(names.batch(k, names.RESUME), "resume", batch=k)
    pause_rollback = add(names.batch(k, names.PAUSE_ROLLBACK), "rollback", batch=k)
    pause_stop = add(names.batch(k, names.PAUSE_STOP), "stop", batch=k)
    dag.edges += [
        (decide, promote),
        (decide, rollback),
        (decide, pause),
        (pause, resume),
        (pause, pause_rollback),
        (pause, pause_stop),
        (rollback, scope),
        (pause_rollback, scope),
        (pause_stop, record),
    ]
    dag.branches[decide] = (promote, rollback, pause)
    dag.branches[pause] = (resume, pause_rollback, pause_stop)
    return promote, resume


def _batch_rows(plan: Plan) -> str:
    return "\n".join(
        f"| {k} | {b.name or f'batch_{k}'} | "
        f"{f'{b.ratio:.0%}' if b.ratio is not None else f'{b.count} tenants'} | "
        f"{format_duration(b.bake)} | {'required' if b.approval == 'required' else '-'} |"
        for k, b in enumerate(plan.policy.batches, start=1)
    )


def _check_lines(plan: Plan) -> str:
    return "\n".join(
        f"- `{c.metric} {c.op} {c.limit}`"
        + (f" against {c.baseline}" if c.baseline else "")
        + f" ({c.scope}"
        + (f", up to {c.max_breaching_tenants} breaching" if c.max_breaching_tenants else "")
        + ")"
        for c in plan.policy.gate.checks
    )


def _window_text(plan: Plan) -> str:
    if not plan.window:
        return "any time (no window)"
    frozen = f"; frozen {', '.join(plan.window.freeze)}" if plan.window.freeze else ""
    return (
        f"`{plan.window.schedule}` for {format_duration(plan.window.duration)} "
        f"({plan.window.timezone}){frozen}"
    )


def doc_md(plan: Plan) -> str:
    """The DAG's documentation in the UI: the plan in the release manager's words."""
    policy = plan.policy
    rows, checks, window = _batch_rows(plan), _check_lines(plan), _window_text(plan)
    select = plan.tenants
    return f"""### Grey upgrade: `{plan.id}`

{plan.description or ""}

- **plugin** `{plan.plugin}` -> **target** `{plan.target_version or "given per run"}`
- **policy** `{plan.policy_id}`; source `{plan.source}`
- **tenants** select `{dict(select.select) or "all"}`, exclude `{list(select.exclude) or "-"}`,
  canary `{select.canary or "-"}`
- **window** {window}
- **owners** {", ".join(plan.owners) or "-"}

| # | batch | reaches | bake | approval |
|---|---|---|---|---|
{rows}

**Gate** every {format_duration(policy.gate.poke_interval)}, ignoring the last
{format_duration(policy.gate.signal_delay)}; no data for
{format_duration(policy.gate.missing_data.after)} -> {policy.gate.missing_data.action}:
{checks}

**Rollback** {policy.rollback.mode}, scope `{policy.rollback.scope}`, deadline
{format_duration(policy.rollback.deadline)}. A pause waits {format_duration(policy.pause.timeout)},
then {policy.pause.default}.
"""
