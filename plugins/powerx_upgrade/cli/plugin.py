"""`powerx plugin ...`: trigger, follow, steer and roll back plan runs on a running Airflow,
through its REST API and the project's control-plane API (what a CI pipeline or an on-call
engineer uses instead of the UI).

Exit codes: 0 ok (with `upgrade --wait`: the run promoted), 1 the run did not promote or the
server refused the request (permission, approval token, state), 2 usage or connection error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from powerx_upgrade.cli import client as http
from powerx_upgrade.cli.client import (
    AirflowClient,
    ApiError,
    ConnectionSettings,
    ControlPlane,
    ControlPlaneMissing,
    dag_id_of,
    plan_id_of,
)
from powerx_upgrade.domain.durations import parse_duration

EXIT_OK, EXIT_NOT_PROMOTED, EXIT_USAGE = 0, 1, 2
EXIT_REFUSED = EXIT_NOT_PROMOTED

STRATEGIES = ("policy",)
"""`--strategy` values: `policy` runs the plan's own policy (batches, gates, rollback)."""

DECISION_VERBS = {
    "pause": "pause at the next gate (a human then resumes, rolls back or stops)",
    "resume": "answer a waiting pause with Resume",
    "approve": "approve a batch that waits for approval",
    "reject": "reject a batch that waits for approval (the run stops)",
    "stop": "answer a waiting pause with Stop (no rollback; the run ends)",
    "takeover": "manual takeover: every further batch waits for a human decision",
    "release": "end a manual takeover: batches promote automatically again",
}

ROLLBACK_SCOPES = ("all_upgraded", "batch", "failed_tenants")
TERMINAL_STATES = frozenset({"success", "failed"})
SUCCESS_OUTCOMES = {False: "promoted", True: "dry_run"}
"""The outcome `upgrade --wait` exits 0 on, by whether the run was a dry run."""

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_BATCH_TASK = re.compile(r"^batch_(\d+)\.(\w+)$")

console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

VERDICT_STYLE = {
    "pass": "green",
    "fail": "bold red",
    "no_data": "yellow",
    "error": "bold red",
    "inconclusive": "yellow",
    "rollback_requested": "bold yellow",
    "pause_requested": "yellow",
    "baking": "cyan",
}
OUTCOME_STYLE = {"promoted": "bold green", "dry_run": "green"}


class UsageError(Exception):
    """The command line is wrong; the message says which option and why."""


# ---------------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection (flags win over the environment)")
    group.add_argument(
        "--airflow-url",
        metavar="URL",
        help=f"Airflow api-server (${http.ENV_URL}; default {http.DEFAULT_AIRFLOW_URL})",
    )
    group.add_argument("--token", metavar="JWT", help=f"Airflow API token (${http.ENV_TOKEN})")
    group.add_argument(
        "--username", help=f"login for POST /auth/token when no token (${http.ENV_USERNAME})"
    )
    group.add_argument("--password", help=f"its password (${http.ENV_PASSWORD})")
    group.add_argument(
        "--approval-token",
        metavar="JWT",
        help=f"approval token for rollback, decisions and adjustments (${http.ENV_APPROVAL_TOKEN})",
    )
    group.add_argument(
        "--http-timeout", type=float, default=30.0, metavar="S", help="seconds per HTTP request"
    )
    return common


def register(nouns: argparse._SubParsersAction) -> None:
    parser = nouns.add_parser(
        "plugin",
        help="upgrade, follow, steer and roll back plan runs on a running Airflow",
        description="Talk to a running Airflow (REST API v2) and the PowerX control-plane API "
        "(/internal/version/upgrade). Exit codes: 0 ok/promoted, 1 not promoted or refused, "
        "2 usage or connection error.",
    )
    add_verbs(parser)


def add_verbs(parser: argparse.ArgumentParser) -> None:
    common = _connection_options()
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    _add_upgrade(verbs, common)
    _add_status(verbs, common)
    _add_rollback(verbs, common)
    for verb, text in DECISION_VERBS.items():
        decide = verbs.add_parser(verb, parents=[common], help=text, description=text)
        decide.add_argument("run_id", metavar="RUN")
        decide.add_argument("--batch", type=int, metavar="N", help="the batch (1-based)")
        decide.add_argument("--reason", help="why (kept in the ledger and the audit trail)")
        decide.set_defaults(func=cmd_decide, decision=verb)
    _add_adjust(verbs, common)
    report = verbs.add_parser("report", help="a run's report")
    report_verbs = report.add_subparsers(dest="report_verb", metavar="VERB", required=True)
    show = report_verbs.add_parser(
        "show", parents=[common], help="print a run's stored report (md, json or html)"
    )
    show.add_argument("run_id", metavar="RUN")
    show.add_argument("--format", choices=("md", "json", "html"), default="md")
    show.add_argument("--plan", help="the run's plan (only needed without the control-plane API)")
    show.set_defaults(func=cmd_report_show)


def _add_upgrade(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    upgrade = verbs.add_parser(
        "upgrade",
        parents=[common],
        help="trigger a plan's run (a rollout of a signed artifact); --wait follows it",
        description="Trigger the plan's DAG through the REST API with the version and the "
        "signed artifact. --strategy policy (the only strategy today) runs the plan's own "
        "policy: its batches, gates and rollback. With --wait: follow the batches and exit 0 "
        "only when the run promoted (1 otherwise).",
    )
    upgrade.add_argument("--plan", required=True, help="plan id (DAG plugin_upgrade__<plan>)")
    upgrade.add_argument(
        "--strategy", default="policy", help="rollout strategy; only `policy` is supported"
    )
    upgrade.add_argument("--version", dest="target_version", required=True, help="e.g. 2.4.0")
    upgrade.add_argument("--artifact", metavar="URI", help="the release artifact's URI")
    upgrade.add_argument("--sha256", metavar="HEX", help="the artifact's SHA-256 (64 hex)")
    upgrade.add_argument(
        "--signature", metavar="B64", help="Ed25519 signature (`powerx artifact sign`)"
    )
    upgrade.add_argument("--reason", help="change reason (shown in the report and audit)")
    upgrade.add_argument(
        "--dry-run", action="store_true", help="plan and announce only; no tenant is touched"
    )
    upgrade.add_argument("--run-id", help="the run id (default: Airflow makes one)")
    upgrade.add_argument(
        "--wait", action="store_true", help="follow the run to its end; exit by its outcome"
    )
    upgrade.add_argument(
        "--timeout", default="60m", help="with --wait: give up after this long (e.g. 30m)"
    )
    upgrade.add_argument(
        "--poll", type=float, default=3.0, metavar="S", help="seconds between looks"
    )
    upgrade.set_defaults(func=cmd_upgrade)


def _add_status(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    status = verbs.add_parser(
        "status",
        parents=[common],
        help="batches, verdicts and decisions of a run (--watch: live until it ends)",
        description="Without RUN: the plan's latest run (--plan), or the latest runs of every "
        "plan.",
    )
    status.add_argument("run_id", nargs="?", metavar="RUN")
    status.add_argument("--plan", help="the plan (its latest run when RUN is not given)")
    status.add_argument("--watch", action="store_true", help="refresh until the run ends")
    status.add_argument("--poll", type=float, default=3.0, metavar="S", help="refresh interval")
    status.add_argument("--format", choices=("table", "json"), default="table")
    status.set_defaults(func=cmd_status)


def _add_rollback(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    rollback = verbs.add_parser(
        "rollback",
        parents=[common],
        help="roll a run back (an active run through its rollback group, a finished one "
        "through the plugin_upgrade_rollback DAG)",
    )
    target = rollback.add_mutually_exclusive_group(required=True)
    target.add_argument("--run", dest="run_id", help="the run to roll back")
    target.add_argument("--plan", dest="plan_id", help="roll back the plan's latest run")
    rollback.add_argument("--scope", choices=ROLLBACK_SCOPES, help="default: the policy's")
    rollback.add_argument("--reason", required=True, help="why (ledger, audit, report)")
    rollback.set_defaults(func=cmd_rollback)


def _add_adjust(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    adjust = verbs.add_parser(
        "adjust",
        parents=[common],
        help="change an active run's thresholds, bake, remaining batches or concurrency",
        description="Keys: gate.<metric>[.<scope>]=<limit> (e.g. gate.error_rate=0.03, "
        "gate.latency_p95_ms.per_tenant=+25%%), bake=<duration>, "
        "batches.<N>.ratio|count|bake=<value>, deploy.concurrency=<n>, "
        "rollback.concurrency=<n>. --file takes the same as YAML/JSON (the Adjustment).",
    )
    adjust.add_argument("run_id", metavar="RUN")
    source = adjust.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--set", dest="settings", action="append", metavar="KEY=VALUE", help="repeatable"
    )
    source.add_argument("--file", type=Path, help="YAML or JSON adjustment")
    adjust.add_argument("--reason", help="why (kept in the ledger and the audit trail)")
    adjust.set_defaults(func=cmd_adjust)


# ---------------------------------------------------------------------------------------------
# pure helpers: conf, adjustments, exit codes
# ---------------------------------------------------------------------------------------------


def upgrade_conf(args: argparse.Namespace) -> dict[str, Any]:
    """The run conf of `upgrade` (the plan's trigger form); UsageError for a bad command line."""
    if args.strategy not in STRATEGIES:
        raise UsageError(
            f"--strategy {args.strategy!r} is not supported; only `policy` is (the plan's own "
            "policy: its batches, gates and rollback)"
        )
    if not args.dry_run:
        missing = [
            flag
            for flag, value in (
                ("--artifact", args.artifact),
                ("--sha256", args.sha256),
                ("--signature", args.signature),
            )
            if not value
        ]
        if missing:
            raise UsageError(
                f"{', '.join(missing)} required: a rollout ships a signed artifact "
                "(`powerx artifact sign` makes the signature; --dry-run needs none)"
            )
    if args.sha256 and not _SHA256.match(args.sha256):
        raise UsageError(f"--sha256 {args.sha256!r} is not 64 hex digits")
    conf: dict[str, Any] = {
        "target_version": args.target_version,
        "artifact_uri": args.artifact,
        "artifact_sha256": args.sha256.lower() if args.sha256 else None,
        "artifact_signature": args.signature,
        "reason": args.reason,
    }
    if args.dry_run:
        conf["dry_run"] = True
    return {k: v for k, v in conf.items() if v is not None}


_SECONDS = re.compile(r"\d+(\.\d+)?")
"""A plain number of seconds (`--timeout 900`)."""


def timeout_seconds(text: str) -> float:
    """`--timeout` as seconds: a duration (`90s`, `30m`, `2h`) or plain seconds."""
    if _SECONDS.fullmatch(text.strip()):
        return float(text)
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise UsageError(f"--timeout {text!r}: {exc}") from None


def exit_code_for_outcome(outcome: str | None, *, dry_run: bool = False) -> int:
    """0 when the run ended as it should (promoted; a dry run: dry_run), else 1."""
    return EXIT_OK if outcome == SUCCESS_OUTCOMES[dry_run] else EXIT_NOT_PROMOTED


def exit_code_for_error(error: ApiError) -> int:
    """1 when the server refused (permission, approval token, state), 2 when the request could
    not be made or was wrong (connection, login, unknown run, bad input, no control plane)."""
    if isinstance(error, http.Forbidden | http.Conflict):
        return EXIT_REFUSED
    return EXIT_USAGE


def _scalar(text: str) -> Any:
    """A `--set` value: an int, a float, true/false, else the text (durations, `+20%`)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text.strip()


_BATCH_FIELDS = ("ratio", "count", "bake")
_CONCURRENCY_KEYS = {
    "deploy.concurrency": "deploy_concurrency",
    "deploy_concurrency": "deploy_concurrency",
    "rollback.concurrency": "rollback_concurrency",
    "rollback_concurrency": "rollback_concurrency",
}


def parse_settings(settings: Sequence[str]) -> dict[str, Any]:
    """`--set KEY=VALUE ...` as the control plane's Adjustment payload.

    `gate.error_rate=0.03` -> `checks: [{metric: error_rate, limit: 0.03}]`,
    `gate.latency_p95_ms.per_tenant=+25%` -> `... scope: per_tenant ...`, `bake=2m`,
    `batches.3.ratio=0.6` -> `batches: {3: {ratio: 0.6}}`, `deploy.concurrency=10`.
    """
    adjustment: dict[str, Any] = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE (e.g. gate.error_rate=0.03)")
        _apply_setting(adjustment, key, raw.strip(), item)
    return adjustment


def _apply_setting(adjustment: dict[str, Any], key: str, raw: str, item: str) -> None:
    parts = key.split(".")
    if key == "bake":
        adjustment["bake"] = raw
    elif key in _CONCURRENCY_KEYS:
        value = _scalar(raw)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"--set {item!r}: concurrency must be a whole number >= 1")
        adjustment[_CONCURRENCY_KEYS[key]] = value
    elif parts[0] == "gate" and len(parts) in (2, 3):
        check: dict[str, Any] = {"metric": parts[1], "limit": _scalar(raw)}
        if len(parts) == 3:
            check["scope"] = parts[2]
        checks = adjustment.setdefault("checks", [])
        checks[:] = [
            c for c in checks if (c["metric"], c.get("scope")) != (parts[1], check.get("scope"))
        ]
        checks.append(check)
    elif parts[0] in ("batches", "batch") and len(parts) == 3 and parts[2] in _BATCH_FIELDS:
        if not parts[1].isdigit() or int(parts[1]) < 1:
            raise UsageError(f"--set {item!r}: the batch must be a number >= 1")
        value: Any = raw if parts[2] == "bake" else _scalar(raw)
        adjustment.setdefault("batches", {}).setdefault(int(parts[1]), {})[parts[2]] = value
    else:
        raise UsageError(
            f"--set {item!r}: unknown key {key!r}; known: gate.<metric>[.<scope>], bake, "
            "batches.<N>.ratio|count|bake, deploy.concurrency, rollback.concurrency"
        )


def load_adjustment(path: Path) -> dict[str, Any]:
    """An Adjustment from a YAML/JSON file (the mapping itself, or under `adjust:`)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--file {path}: not YAML/JSON: {exc}") from None
    if isinstance(data, dict) and set(data) == {"adjust"}:
        data = data["adjust"]
    if not isinstance(data, dict) or not data:
        raise UsageError(f"--file {path}: expected a mapping of adjustments (checks, bake, ...)")
    return data


def approval_token(args: argparse.Namespace, operation: str) -> str:
    token = args.approval_token or os.environ.get(http.ENV_APPROVAL_TOKEN)
    if not token:
        raise UsageError(
            f"{operation} needs an approval token: --approval-token or "
            f"${http.ENV_APPROVAL_TOKEN} (`powerx approval issue` makes one for development)"
        )
    return token


# ---------------------------------------------------------------------------------------------
# the run's status: one model, from the control plane or from Airflow's REST API
# ---------------------------------------------------------------------------------------------


@dataclass
class BatchRow:
    index: int
    name: str
    tenants: str = "-"
    deployed: str = "-"
    failed: str = "-"
    verdict: str = "-"
    decision: str = "-"
    reason: str = ""


@dataclass
class RunStatus:
    """What `status` shows of a run, whichever API it came from.

    :param source: `control-plane` (GET /runs/{id}) or `airflow` (REST API only).
    """

    run_id: str
    dag_id: str
    plan_id: str | None = None
    state: str | None = None
    outcome: str | None = None
    target_version: str | None = None
    batches: list[BatchRow] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)
    approvals: list[dict[str, Any]] = field(default_factory=list)
    takeover: bool = False
    waiting: list[str] = field(default_factory=list)
    source: str = "control-plane"

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL_STATES


def _count(value: Any) -> str:
    if value is None:
        return "-"
    return str(len(value)) if isinstance(value, list | tuple) else str(value)


def _who(item: Mapping[str, Any]) -> str:
    actor, via = item.get("actor"), item.get("via")
    if not actor or via in (None, "auto"):
        return ""
    return f" ({actor} via {via})" if via else f" ({actor})"


def status_from_api(
    payload: Mapping[str, Any], *, state: str | None = None, waiting: Sequence[str] = ()
) -> RunStatus:
    """The status from the control plane's `GET /runs/{run_id}` answer.

    :param payload: the answer.
    :param state: the Airflow run state (the API's `status` is the ledger's).
    :param waiting: the run's pending human prompts.
    """
    decisions = list(payload.get("decisions") or [])
    last: dict[int, Mapping[str, Any]] = {}
    for decision in decisions:
        index = decision.get("batch_index", decision.get("batch"))
        if isinstance(index, int):
            last[index] = decision
    rows = []
    for batch in payload.get("batches") or []:
        index = int(batch["index"])
        decided = last.get(index)
        rows.append(
            BatchRow(
                index=index,
                name=str(batch.get("name") or f"batch {index}"),
                tenants=_count(batch.get("tenants")),
                deployed=_count(batch.get("deployed")),
                failed=_count(batch.get("failed")),
                verdict=str(batch.get("verdict") or "-"),
                decision=f"{decided['decision']}{_who(decided)}" if decided else "-",
                reason=str(batch.get("summary") or batch.get("reason") or ""),
            )
        )
    return RunStatus(
        run_id=str(payload["run_id"]),
        dag_id=str(payload.get("dag_id") or ""),
        plan_id=payload.get("plan_id"),
        state=state or payload.get("status"),
        outcome=payload.get("outcome"),
        target_version=payload.get("target_version"),
        batches=rows,
        decisions=decisions,
        controls=list(payload.get("controls") or []),
        approvals=list(payload.get("approvals") or []),
        takeover=bool(payload.get("takeover")),
        waiting=list(waiting),
    )


_DECISION_TASKS = (
    ("pause_rollback", "rollback (after pause)"),
    ("pause_stop", "stop (after pause)"),
    ("resume", "resume (after pause)"),
    ("rejected", "rejected"),
    ("promote", "promote"),
    ("rollback", "rollback"),
    ("pause", "pause"),
)


def status_from_airflow(
    run: Mapping[str, Any],
    task_instances: Sequence[Mapping[str, Any]],
    *,
    plan_summary: Mapping[str, Any] | None = None,
    gates: Mapping[int, Mapping[str, Any]] | None = None,
    record: Mapping[str, Any] | None = None,
    waiting: Sequence[str] = (),
) -> RunStatus:
    """The status from Airflow's REST API alone (no control plane): batches from the
    `preflight.plan` XCom, verdicts from each `batch_N.gate` XCom, the decision from the branch
    task that ran, the outcome from the `finalize.record` XCom.

    :param run: `GET .../dagRuns/{run_id}`.
    :param task_instances: the run's task instances.
    :param plan_summary: `preflight.plan`'s XCom (None before it ran).
    :param gates: batch index -> that gate's XCom (its verdict).
    :param record: `finalize.record`'s XCom (None before it ran).
    :param waiting: the run's pending human prompts.
    """
    tasks: dict[int, dict[str, list[str | None]]] = {}
    for ti in task_instances:
        match = _BATCH_TASK.match(ti["task_id"])
        if match:
            by_name = tasks.setdefault(int(match[1]), {})
            by_name.setdefault(match[2], []).append(ti.get("state"))
    planned = {int(b["index"]): b for b in (plan_summary or {}).get("batches") or []}
    rows = [
        _airflow_row(k, planned.get(k), tasks.get(k, {}), (gates or {}).get(k))
        for k in sorted(set(planned) | set(tasks))
    ]
    conf = run.get("conf") or {}
    return RunStatus(
        run_id=str(run["dag_run_id"]),
        dag_id=str(run["dag_id"]),
        plan_id=plan_id_of(str(run["dag_id"])),
        state=run.get("state"),
        outcome=(record or {}).get("outcome"),
        target_version=conf.get("target_version"),
        batches=rows,
        waiting=list(waiting),
        source="airflow",
    )


def _airflow_row(
    index: int,
    planned: Mapping[str, Any] | None,
    tasks: Mapping[str, list[str | None]],
    gate: Mapping[str, Any] | None,
) -> BatchRow:
    row = BatchRow(index=index, name=str((planned or {}).get("name") or ""))
    if planned and planned.get("size") is not None:
        row.tenants = str(planned["size"])
    shards = tasks.get("deploy") or []
    if shards and any(s is not None for s in shards):
        row.deployed = f"{sum(1 for s in shards if s == 'success')}/{len(shards)} shards"
        row.failed = str(sum(1 for s in shards if s == "failed"))
    if gate:
        row.verdict = str(gate.get("phase") or "-")
        row.reason = str(gate.get("summary") or gate.get("reason") or "")
    elif (tasks.get("gate") or [None])[0] in ("deferred", "running", "queued"):
        row.verdict = "baking"
    for task, label in _DECISION_TASKS:
        if (tasks.get(task) or [None])[0] == "success":
            row.decision = label
            break
    else:
        if (tasks.get("pause") or tasks.get("approve") or [None])[0] == "deferred":
            row.decision = "waiting for a human"
    return row


def waiting_prompts(details: Sequence[Mapping[str, Any]]) -> list[str]:
    """Pending human-in-the-loop requests as one line each: task, subject, options."""
    lines = []
    for detail in details:
        ti = detail.get("task_instance") or {}
        task = ti.get("task_id") or detail.get("task_id") or "?"
        options = ", ".join(detail.get("options") or [])
        lines.append(f"{task}: {detail.get('subject') or ''} [{options}]".strip())
    return lines


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------


def render_status(status: RunStatus) -> RenderableType:
    """A Rich view of a run: header, one row per batch, controls and human prompts."""
    outcome = status.outcome or "-"
    header = Text.assemble(
        (f"{status.plan_id or status.dag_id}", "bold"),
        f"  run {status.run_id}  ",
        f"-> {status.target_version or '?'}  ",
        f"state {status.state or '?'}  outcome ",
        (outcome, OUTCOME_STYLE.get(outcome, "bold red" if status.outcome else "")),
    )
    table = Table(title_justify="left", expand=False)
    for column in ("batch", "tenants", "deployed", "failed", "verdict", "decision", "why"):
        table.add_column(column, overflow="fold")
    for row in status.batches:
        table.add_row(
            f"{row.index} {row.name}".strip(),
            row.tenants,
            row.deployed,
            row.failed,
            Text(row.verdict, style=VERDICT_STYLE.get(row.verdict, "")),
            row.decision,
            row.reason[:400],
        )
    parts: list[RenderableType] = [header, table]
    if status.takeover:
        parts.append(Text("manual takeover: every batch waits for a human decision", "bold"))
    parts += [Text(f"waiting for a human: {line}", style="yellow") for line in status.waiting]
    if status.controls:
        parts.append(_controls_table(status.controls))
    if status.approvals:
        parts.append(
            Text(
                "approvals: "
                + "; ".join(
                    f"{a.get('action')} by {a.get('subject')} ({a.get('via')}, "
                    f"jti {str(a.get('jti'))[:8]})"
                    for a in status.approvals
                ),
                style="dim",
            )
        )
    if status.source == "airflow":
        parts.append(
            Text("(from Airflow's REST API: the control-plane API is not available)", "dim")
        )
    return Group(*parts)


def _controls_table(controls: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="operator requests", title_justify="left")
    for column in ("kind", "batch", "by", "requested", "outcome"):
        table.add_column(column, overflow="fold")
    for control in controls:
        table.add_row(
            str(control.get("kind")),
            str(control.get("batch_index") or "-"),
            f"{control.get('actor') or '?'} via {control.get('via') or '?'}",
            str(control.get("requested_at") or "-")[:19],
            str(control.get("outcome") or ("pending" if not control.get("applied_at") else "-")),
        )
    return table


def runs_table(runs: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="latest plan runs", title_justify="left")
    for column in ("plan", "run", "state", "version", "started"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(
            plan_id_of(str(run["dag_id"])) or str(run["dag_id"]),
            str(run["dag_run_id"]),
            str(run.get("state")),
            str((run.get("conf") or {}).get("target_version") or "-"),
            str(run.get("start_date") or "-")[:19],
        )
    return table


# ---------------------------------------------------------------------------------------------
# reading a run (control plane first, Airflow's REST API as the fallback)
# ---------------------------------------------------------------------------------------------


class RunReader:
    """Reads a run's status: `GET /runs/{id}` of the control plane when it is installed and
    knows the run, else Airflow's REST API (run state, task instances, XComs).

    :param api: the REST client.
    :param run_id: the run.
    :param dag_id: its DAG when known (else looked up once).
    """

    def __init__(self, api: AirflowClient, run_id: str, dag_id: str | None = None):
        self.api = api
        self.control = ControlPlane(api)
        self.run_id = run_id
        self.dag_id = dag_id
        self.control_plane = True
        self._plan: Mapping[str, Any] | None = None
        self._gates: dict[int, Mapping[str, Any]] = {}
        self._in_ledger_seen = False

    def read(self) -> RunStatus:
        if self.dag_id is None:
            payload = self._from_control_plane()
            self.dag_id = (payload or {}).get("dag_id") or self.api.find_run(self.run_id)["dag_id"]
        else:
            payload = self._from_control_plane() if self._in_ledger() else None
        run = self.api.run(self.dag_id, self.run_id)
        waiting = waiting_prompts(self.api.hitl_details(self.dag_id, self.run_id, pending=True))
        if payload is not None:
            return status_from_api(payload, state=run.get("state"), waiting=waiting)
        return self._from_airflow(run, waiting)

    def _in_ledger(self) -> bool:
        """Whether the run is in the ledger yet (`preflight.validate` starts it there): until
        then the control plane would only answer 404, and audit each one as a refusal."""
        if not self._in_ledger_seen and self.control_plane:
            try:
                ti = self.api.task_instance(str(self.dag_id), self.run_id, "preflight.validate")
            except http.NotFound:  # a DAG without that task: ask the control plane directly
                ti = {"state": "success"}
            self._in_ledger_seen = ti.get("state") == "success"
        return self._in_ledger_seen

    def _from_control_plane(self) -> dict[str, Any] | None:
        if not self.control_plane:
            return None
        try:
            return self.control.run(self.run_id)
        except ControlPlaneMissing:
            self.control_plane = False
            return None
        except http.NotFound:  # not in the ledger (yet): the run may not have started
            return None

    def _from_airflow(self, run: Mapping[str, Any], waiting: Sequence[str]) -> RunStatus:
        dag_id, run_id = str(self.dag_id), self.run_id
        tis = self.api.task_instances(dag_id, run_id)
        done = {ti["task_id"] for ti in tis if ti.get("state") in ("success", "failed")}
        if self._plan is None and "preflight.plan" in done:
            self._plan = self.api.xcom(dag_id, run_id, "preflight.plan")
        for task in sorted(done):
            match = _BATCH_TASK.match(task)
            if match and match[2] == "gate" and int(match[1]) not in self._gates:
                self._gates[int(match[1])] = self.api.xcom(dag_id, run_id, task) or {}
        record = (
            self.api.xcom(dag_id, run_id, "finalize.record")
            if ("finalize.record" in done)
            else None
        )
        return status_from_airflow(
            run, tis, plan_summary=self._plan, gates=self._gates, record=record, waiting=waiting
        )

    def outcome(self, status: RunStatus) -> str | None:
        """The run's outcome: the control plane's, else `finalize.record`'s XCom."""
        if status.outcome:
            return status.outcome
        record = self.api.xcom(str(self.dag_id), self.run_id, "finalize.record")
        return record.get("outcome") if isinstance(record, Mapping) else None


def follow(
    reader: RunReader,
    *,
    timeout: float,
    poll: float,
    sleep: Callable[[float], None] = time.sleep,
) -> RunStatus:
    """Read the run until Airflow says it ended; live table on a terminal, a line per change
    elsewhere (CI logs). Raises TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            return _poll(reader, deadline, poll, sleep, lambda s: live.update(render_status(s)))
    seen: dict[str, str] = {}
    status = _poll(reader, deadline, poll, sleep, lambda s: _print_changes(s, seen))
    console.print(render_status(status))
    return status


def _poll(
    reader: RunReader,
    deadline: float,
    poll: float,
    sleep: Callable[[float], None],
    show: Callable[[RunStatus], None],
) -> RunStatus:
    state, trouble = "unknown", None
    while True:
        try:
            status = reader.read()
        except (http.Unreachable, http.ServerError) as exc:
            # A long rollout outlives an api-server restart: keep looking until the deadline.
            if trouble is None:
                err_console.print(f"[yellow]cannot read the run, retrying:[/] {escape(str(exc))}")
            trouble = exc
        else:
            trouble, state = None, str(status.state)
            show(status)
            if status.ended:
                return status
        if time.monotonic() >= deadline:
            last = f"; last error: {trouble}" if trouble else ""
            raise TimeoutError(f"run {reader.run_id} did not end in time (state {state}){last}")
        sleep(poll)


def _print_changes(status: RunStatus, seen: dict[str, str]) -> None:
    lines = {"run": f"run {status.run_id}: {status.state}"}
    for row in status.batches:
        if row.verdict == "-" and row.decision == "-":
            continue  # nothing to say about this batch yet
        lines[f"batch {row.index}"] = (
            f"batch {row.index} {row.name}".strip()
            + f": verdict {row.verdict}, decision {row.decision}"
            + (f" ({row.reason[:400]})" if row.reason else "")
        )
    for line in status.waiting:
        lines[f"waiting {line}"] = f"waiting for a human: {line}"
    for key, line in lines.items():
        if seen.get(key) != line:
            seen[key] = line
            console.print(escape(line))


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


def connect(args: argparse.Namespace) -> AirflowClient:
    settings = ConnectionSettings.from_env(
        url=args.airflow_url,
        token=args.token,
        username=args.username,
        password=args.password,
        timeout=args.http_timeout,
    )
    return AirflowClient.from_settings(settings)


def guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Expected failures become a clear message and an exit code, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except UsageError as exc:
            err_console.print(f"[red]usage error:[/] {escape(str(exc))}")
            return EXIT_USAGE
        except ApiError as exc:
            kind = "refused" if exit_code_for_error(exc) == EXIT_REFUSED else "error"
            code = f" [{exc.code}]" if exc.code else ""
            err_console.print(f"[red]{kind}{escape(code)}:[/] {escape(str(exc))}")
            return exit_code_for_error(exc)
        except TimeoutError as exc:
            err_console.print(f"[red]timeout:[/] {escape(str(exc))}")
            return EXIT_NOT_PROMOTED
        except KeyboardInterrupt:
            err_console.print("interrupted (the run goes on in Airflow)")
            return 130

    run.__name__ = command.__name__
    run.__doc__ = command.__doc__
    return run


@guarded
def cmd_upgrade(args: argparse.Namespace) -> int:
    conf = upgrade_conf(args)
    timeout = timeout_seconds(args.timeout) if args.wait else 0.0
    dag_id = dag_id_of(args.plan)
    with connect(args) as api:
        run_id = api.trigger(dag_id, conf, run_id=args.run_id, note="powerx plugin upgrade")
        console.print(
            f"triggered [bold]{escape(dag_id)}[/] run [bold]{escape(run_id)}[/] -> "
            f"{escape(args.target_version)}" + (" (dry run)" if args.dry_run else "")
        )
        console.print(f"run in the UI: {api.base_url}/dags/{dag_id}/runs/{run_id}")
        if not args.wait:
            return EXIT_OK
        reader = RunReader(api, run_id, dag_id)
        status = follow(reader, timeout=timeout, poll=args.poll)
        outcome = reader.outcome(status)
    code = exit_code_for_outcome(outcome, dry_run=args.dry_run)
    style = "green" if code == EXIT_OK else "red"
    console.print(
        f"outcome [bold {style}]{escape(str(outcome))}[/] (Airflow run {status.state}); exit {code}"
    )
    return code


@guarded
def cmd_status(args: argparse.Namespace) -> int:
    if args.watch and args.format == "json":
        raise UsageError("--watch shows a live table; --format json gives one look without it")
    with connect(args) as api:
        run_id, dag_id = args.run_id, dag_id_of(args.plan) if args.plan else None
        if run_id is None:
            runs = api.runs(dag_id or "~", dag_id_prefix=None if dag_id else http.DAG_PREFIX)
            if not runs:
                console.print(f"no runs of {escape(dag_id or 'any plan')} yet")
                return EXIT_OK
            if dag_id is None:
                console.print(runs_table(runs[:10]))
                return EXIT_OK
            run_id = runs[0]["dag_run_id"]
        reader = RunReader(api, run_id, dag_id)
        if args.watch:
            status = follow(reader, timeout=float("inf"), poll=args.poll)
        else:
            status = reader.read()
            if args.format == "table":
                console.print(render_status(status))
    if args.format == "json":
        print(json.dumps(_status_json(status), indent=2, default=str))
    return EXIT_OK


def _status_json(status: RunStatus) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(status)


@guarded
def cmd_rollback(args: argparse.Namespace) -> int:
    token = approval_token(args, "rollback")
    body: dict[str, Any] = {"reason": args.reason}
    for key in ("run_id", "plan_id", "scope"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    with connect(args) as api:
        answer = ControlPlane(api).rollback(body, approval=token)
    what = answer.get("run_id") or args.run_id or args.plan_id
    if answer.get("mode") == "active_run":
        detail = (
            f"the active run rolls back at its next gate poke (control {answer.get('control_id')})"
        )
    else:
        detail = f"plugin_upgrade_rollback run {answer.get('dag_run_id')} rolls it back"
    console.print(f"rollback of run [bold]{escape(str(what))}[/] accepted: {escape(detail)}")
    return EXIT_OK


@guarded
def cmd_decide(args: argparse.Namespace) -> int:
    token = approval_token(args, args.decision)
    reason = args.reason or f"{args.decision} from the powerx CLI"
    with connect(args) as api:
        answer = ControlPlane(api).decide(
            args.run_id, args.decision, reason=reason, batch=args.batch, approval=token
        )
    batch = f" batch {args.batch}" if args.batch else ""
    console.print(
        f"{args.decision} of run [bold]{escape(args.run_id)}[/]{batch} accepted: "
        f"{escape(json.dumps(answer, default=str))}"
    )
    return EXIT_OK


@guarded
def cmd_adjust(args: argparse.Namespace) -> int:
    adjustment = parse_settings(args.settings) if args.settings else load_adjustment(args.file)
    token = approval_token(args, "adjust")
    reason = args.reason or "adjusted from the powerx CLI"
    with connect(args) as api:
        answer = ControlPlane(api).adjust(args.run_id, adjustment, reason, approval=token)
    console.print(
        f"adjustment of run [bold]{escape(args.run_id)}[/] accepted: "
        f"{escape(json.dumps(answer, default=str))}"
    )
    return EXIT_OK


@guarded
def cmd_report_show(args: argparse.Namespace) -> int:
    with connect(args) as api:
        try:
            text = ControlPlane(api).report(args.run_id, args.format)
        except ControlPlaneMissing as missing:
            text = _report_from_xcom(api, args, missing)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def _report_from_xcom(api: AirflowClient, args: argparse.Namespace, missing: ApiError) -> str:
    """Without the control plane: the report file named in `finalize.report`'s XCom, when it
    is on a filesystem this machine can read."""
    dag_id = dag_id_of(args.plan) if args.plan else api.find_run(args.run_id)["dag_id"]
    stored = api.xcom(dag_id, args.run_id, "finalize.report") or {}
    uri = (stored.get("files") or {}).get(f"report.{args.format}")
    if not uri:
        raise http.NotFound(
            missing.method, missing.url, 404, f"run {args.run_id} has no report.{args.format} yet"
        )
    parsed = urlparse(uri)
    path = Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None
    if path is None or not path.is_file():
        raise ControlPlaneMissing(
            missing.method,
            missing.url,
            404,
            f"{missing.detail}; the report is stored at {uri}, which this machine cannot read",
        )
    return path.read_text(encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Run `plugin VERB ...` without the rest of the `powerx` CLI."""
    parser = argparse.ArgumentParser(prog="powerx plugin")
    add_verbs(parser)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
