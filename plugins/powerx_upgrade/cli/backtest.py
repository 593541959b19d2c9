"""`powerx plan backtest`: replay recorded gate series through the plan's (edited) policy."""

from __future__ import annotations

import argparse
import json
import os

from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from powerx_upgrade.config import ConfigNotFound, load_config
from powerx_upgrade.domain.backtest import EditError, edit_policy, replay_run, run_lines
from powerx_upgrade.domain.monitoring import pools
from powerx_upgrade.ledger import Ledger, LedgerError
from powerx_upgrade.rollout.history import RunNotFound, recorded_run

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2

console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


def backtest_parser(verbs: argparse._SubParsersAction) -> None:
    backtest = verbs.add_parser(
        "backtest",
        help="replay runs' recorded gate series through the plan's (edited) policy",
        description="Evaluate each recorded gate poke of the runs again with the plan's current "
        "policy, or with it edited by --set, and print per batch what the gate would have "
        "decided and when, next to what happened.",
    )
    backtest.add_argument("plan_id", metavar="PLAN")
    backtest.add_argument(
        "--run", dest="runs", action="append", required=True, metavar="RUN_ID", help="repeatable"
    )
    backtest.add_argument(
        "--set",
        dest="edits",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="edit the plan's policy first, e.g. policies.standard-grey.gate.checks[0].limit=0.03 "
        "(repeatable; the value is YAML)",
    )
    backtest.add_argument(
        "--ledger",
        metavar="URL",
        default=os.environ.get("POWERX_LEDGER_URL"),
        help="the ledger holding the runs (default $POWERX_LEDGER_URL; required)",
    )
    backtest.add_argument("--config", metavar="PATH", help="config file or directory")
    backtest.add_argument("--format", choices=("text", "json"), default="text")
    backtest.set_defaults(func=cmd_backtest)


def cmd_backtest(args: argparse.Namespace) -> int:
    if not args.ledger:
        err_console.print("[red]error:[/] --ledger URL (or $POWERX_LEDGER_URL) is required")
        return EXIT_USAGE
    try:
        result = load_config([args.config] if args.config else None)
    except ConfigNotFound as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_USAGE
    plan = result.plans.get(args.plan_id)
    if plan is None:
        known = ", ".join(sorted(result.plans)) or "none"
        err_console.print(
            f"[red]error:[/] unknown or invalid plan '{escape(args.plan_id)}' (valid: "
            f"{escape(known)}); `powerx plan validate` says why"
        )
        return EXIT_INVALID
    try:
        policy, edits = edit_policy(plan.policy, plan.policy_id, args.edits)
        with Ledger(args.ledger) as ledger:
            runs = [recorded_run(ledger, run_id) for run_id in args.runs]
    except (EditError, RunNotFound, LedgerError, SQLAlchemyError) as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_USAGE
    metric_pools = pools(plan.monitoring)
    replays = [(run, replay_run(policy, run, metric_pools)) for run in runs]
    if args.format == "json":
        document = {
            "plan": plan.id,
            "policy": plan.policy_id,
            "edits": [{"path": e.path, "before": e.before, "after": e.after} for e in edits],
            "runs": [
                {
                    "run_id": run.run_id,
                    "plan": run.plan_id,
                    "outcome": run.outcome,
                    "batches": [b.as_dict() for b in replayed],
                }
                for run, replayed in replays
            ],
        }
        print(json.dumps(document, indent=2))
        return EXIT_OK
    for run, replayed in replays:
        for line in run_lines(run, plan.id, plan.policy_id, edits, replayed):
            console.print(escape(line))
    return EXIT_OK
