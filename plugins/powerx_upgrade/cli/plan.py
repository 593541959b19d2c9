"""`powerx plan ...`: validate, preview and describe upgrade plans."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from powerx_upgrade.cli.backtest import backtest_parser
from powerx_upgrade.config import ConfigNotFound, load_config
from powerx_upgrade.domain.config import ConfigResult, config_schema
from powerx_upgrade.domain.durations import format_duration
from powerx_upgrade.domain.estimate import Latency, deploy_latency, estimate
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.domain.planner import (
    BatchPlan,
    PlannedBatch,
    PlanningError,
    Tenant,
    plan_batches,
)
from powerx_upgrade.domain.problems import Problem
from powerx_upgrade.domain.windows import window_state
from powerx_upgrade.ledger import Ledger, LedgerError
from powerx_upgrade.rollout.history import measured_latency

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2

console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


def register(nouns: argparse._SubParsersAction) -> None:
    parser = nouns.add_parser("plan", help="validate and preview upgrade plans")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    validate = verbs.add_parser(
        "validate",
        help="check config files; compiler-style problems; exit 1 on any error",
        description="Validate upgrade_policies.yaml and plans/*.yaml. PATH is a file or a "
        "directory; default $POWERX_UPGRADE_CONFIG, else include/config/.",
    )
    validate.add_argument("paths", nargs="*", metavar="PATH")
    validate.add_argument("--format", choices=("text", "json"), default="text")
    validate.set_defaults(func=cmd_validate)

    preview = verbs.add_parser(
        "preview",
        help="show the batches a plan gives for a list of tenants, and the next window",
        description="Plan the batches of PLAN_ID for the tenants in FILE (a JSON array of "
        '{"id": ..., "labels": {...}} objects).',
    )
    preview.add_argument("plan_id", metavar="PLAN_ID")
    preview.add_argument("--tenants", required=True, type=Path, metavar="FILE")
    preview.add_argument("--format", choices=("table", "json"), default="table")
    preview.add_argument("--config", metavar="PATH", help="config file or directory")
    preview.add_argument(
        "--now", metavar="ISO8601", help="evaluate the window at this time (default: now)"
    )
    preview.add_argument(
        "--ledger",
        metavar="URL",
        default=os.environ.get("POWERX_LEDGER_URL"),
        help="ledger whose settled upgrades measure the deploy latency (default "
        "$POWERX_LEDGER_URL; none: a stated default of 30s per tenant)",
    )
    preview.add_argument(
        "--deploy-slots",
        type=int,
        default=1,
        metavar="N",
        help="deploy shards of a batch running at once (default 1: one after another)",
    )
    preview.set_defaults(func=cmd_preview)

    backtest_parser(verbs)

    schema = verbs.add_parser("schema", help="print the JSON Schema of the config files")
    schema.add_argument("--output", type=Path, metavar="FILE", help="write to FILE instead")
    schema.set_defaults(func=cmd_schema)


# ---------------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        result = load_config(args.paths or None)
    except ConfigNotFound as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_USAGE
    if args.format == "json":
        print(json.dumps(_validation_json(result), indent=2))
    else:
        _print_problems(result.problems)
        _print_summary(result)
    return EXIT_INVALID if result.errors else EXIT_OK


def _validation_json(result: ConfigResult) -> dict[str, Any]:
    return {
        "files": result.files,
        "valid_plans": sorted(result.plans),
        "invalid_plans": {pid: str(ref) for pid, ref in sorted(result.invalid_plans.items())},
        "policies": sorted(result.policies),
        "problems": [p.as_dict() for p in result.problems],
        "errors": len(result.errors),
        "warnings": len(result.warnings),
    }


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        colour = "red" if problem.severity == "error" else "yellow"
        where = f"{problem.file}:{problem.line}" if problem.line else problem.file
        path = f"{problem.path}: " if problem.path else ""
        console.print(
            f"[bold]{escape(where)}[/]: [{colour}]{problem.severity}[/]: "
            f"[cyan]{escape(path)}[/]{escape(problem.message)}"
        )


def _print_summary(result: ConfigResult) -> None:
    for plan_id, plan in sorted(result.plans.items()):
        window = (
            f"window '{plan.window.schedule}' +{format_duration(plan.window.duration)} "
            f"{plan.window.timezone}"
            if plan.window
            else "no window"
        )
        console.print(
            f"[green]ok[/] [bold]{escape(plan_id)}[/]: {escape(plan.plugin)} "
            f"{escape(plan.target_version or '-')}, policy {escape(plan.policy_id)} "
            f"({len(plan.policy.batches)} batches), {escape(window)}  "
            f"[dim]{escape(str(plan.source))}[/]"
        )
    for plan_id, ref in sorted(result.invalid_plans.items()):
        console.print(f"[red]invalid[/] [bold]{escape(plan_id)}[/]  [dim]{escape(str(ref))}[/]")
    errors, warnings = len(result.errors), len(result.warnings)
    status = "[red]invalid[/]" if errors else "[green]valid[/]"
    invalid = f", [red]{len(result.invalid_plans)} invalid[/]" if result.invalid_plans else ""
    console.print(
        f"{status}: {len(result.files)} file(s), {len(result.plans)} valid plan(s){invalid}, "
        f"{len(result.policies)} policies; {errors} error(s), {warnings} warning(s)"
    )


# ---------------------------------------------------------------------------------------------
# preview
# ---------------------------------------------------------------------------------------------


class _TenantIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    labels: dict[str, str | int | float | bool] = Field(default_factory=dict)


class TenantFileError(ValueError):
    """A tenants file that is not a JSON array of {"id", "labels"} objects."""


def read_tenants(path: Path) -> list[Tenant]:
    """Read a JSON array of `{"id": ..., "labels": {...}}`; errors name the file, line and entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TenantFileError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TenantFileError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    try:
        entries = TypeAdapter(list[_TenantIn]).validate_python(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise TenantFileError(
            f"{path}: {where or 'top level'}: {first['msg']}{more}; expected a JSON array of "
            '{"id": "t-0001", "labels": {"tier": "gold"}} objects'
        ) from None
    return [
        Tenant(
            e.id,
            {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in e.labels.items()},
        )
        for e in entries
    ]


def cmd_preview(args: argparse.Namespace) -> int:
    try:
        result = load_config([args.config] if args.config else None)
        tenants = read_tenants(args.tenants)
        now = _parse_now(args.now)
    except (ConfigNotFound, TenantFileError, ValueError) as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_USAGE
    plan = result.plans.get(args.plan_id)
    if plan is None:
        if args.plan_id in result.invalid_plans:
            err_console.print(f"[red]error:[/] plan '{escape(args.plan_id)}' is invalid:")
            for problem in result.problems_of_plan(args.plan_id):
                err_console.print(f"  {escape(str(problem))}")
        else:
            known = ", ".join(sorted(result.plans)) or "none"
            err_console.print(
                f"[red]error:[/] unknown plan '{escape(args.plan_id)}' (known: {escape(known)})"
            )
        return EXIT_INVALID
    try:
        batch_plan = plan_batches(plan, tenants)
    except PlanningError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_INVALID
    window = window_state(plan.window, now)
    warnings = representation_warnings(plan, batch_plan)
    try:
        latency = preview_latency(args.ledger, plan.plugin)
        timing = estimate(plan, batch_plan, latency, now, slots=args.deploy_slots)
    except (LedgerError, SQLAlchemyError, ValueError) as exc:
        err_console.print(f"[red]error:[/] the deploy latency: {escape(str(exc))}")
        return EXIT_USAGE
    document = {
        **batch_plan.as_dict(),
        "warnings": warnings,
        "plugin": plan.plugin,
        "policy": plan.policy_id,
        "target_version": plan.target_version,
        "source": str(plan.source),
        "evaluated_at": now.isoformat(),
        "window": window.as_dict(),
        "next_window_open": window.next_open.isoformat() if window.next_open else None,
        "estimate": timing.as_dict(),
    }
    if args.format == "json":
        print(json.dumps(document, indent=2))
        return EXIT_OK
    _print_preview(plan.id, plan.plugin, plan.target_version, batch_plan, window, len(tenants))
    for line in timing.lines():
        console.print(escape(line))
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    return EXIT_OK


def preview_latency(ledger_url: str | None, plugin: str) -> Latency:
    """The measured deploy latency of the plugin in the ledger at `ledger_url`, else the
    stated default; a ledger that cannot be read is an error, not a default."""
    if not ledger_url:
        return deploy_latency(
            plugin, [], 0, missing="no ledger given (--ledger or $POWERX_LEDGER_URL)"
        )
    with Ledger(ledger_url) as ledger:
        return measured_latency(ledger, plugin)


def representation_warnings(plan: Plan, batch_plan: BatchPlan) -> list[str]:
    """A warning per segment a batch leaves out, located at the plan (unless intended)."""
    if batch_plan.gaps_intended:
        return []
    path = "tenants.represent" if plan.tenants.represent else "tenants"
    return [f"{plan.source}: plans.{plan.id}.{path}: {gap}" for gap in batch_plan.gaps]


def segments_cell(batch: PlannedBatch, batch_plan: BatchPlan, shown: int = 4) -> str:
    """`gold 5, silver 1; no bronze`: the batch's tenants per segment (values of the segment
    labels, `/`-joined), then the selection's segments it leaves out (the first `shown`)."""
    if not batch_plan.segment_labels:
        return "-"
    held = dict(batch.segments)
    missing = [short(s) for s, _ in batch_plan.segments if s not in held]

    def listed(items: list[str]) -> str:
        more = f" +{len(items) - shown}" if len(items) > shown else ""
        return ", ".join(items[:shown]) + more

    text = listed([f"{short(s)} {n}" for s, n in batch.segments])
    return text + (f"; no {listed(missing)}" if missing else "")


def short(segment: str) -> str:
    """`tier=gold,region=eu` -> `gold/eu`."""
    return "/".join(part.split("=", 1)[1] for part in segment.split(","))


def _parse_now(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--now {text!r} is not an ISO 8601 time like 2026-12-05T02:00:00+08:00"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _print_preview(plan_id, plugin, target, batch_plan, window, fleet_size) -> None:
    console.print(
        f"[bold]{escape(plan_id)}[/]: {escape(plugin)} -> {escape(target or '(given per run)')}; "
        f"{len(batch_plan.selected)} of {fleet_size} tenants selected"
    )
    table = Table(title_justify="left")
    segments = f"segments ({'/'.join(batch_plan.segment_labels) or '-'})"
    columns = ("#", "batch", "tenants", "cumulative", "bake", "approval", segments)
    for column in (*columns, "first tenants"):
        table.add_column(column, justify="right" if column in ("#", "tenants") else "left")
    for batch in batch_plan.batches:
        shown = ", ".join(batch.tenants[:3]) + (" ..." if len(batch.tenants) > 3 else "")
        table.add_row(
            str(batch.index),
            batch.name,
            str(len(batch.tenants)),
            f"{batch.cumulative_count} ({batch.cumulative_ratio:.0%})",
            format_duration(batch.bake),
            "required" if batch.approval_required else "-",
            segments_cell(batch, batch_plan),
            shown,
        )
    console.print(table)
    for note in batch_plan.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    colour = "green" if window.open else "yellow"
    console.print(f"window: [{colour}]{escape(window.reason)}[/]")


# ---------------------------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------------------------


def schema_text() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"


def cmd_schema(args: argparse.Namespace) -> int:
    text = schema_text()
    if args.output:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            err_console.print(f"[red]error:[/] cannot write {escape(str(args.output))}: {exc}")
            return EXIT_USAGE
        err_console.print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK
