"""`powerx plugin rollback`, `powerx plugin decide` (pause, resume, approve, ...) and
`powerx plugin adjust`: steer a run through the control-plane API, with an approval token."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape

from powerx_upgrade.airflow_client import ROLLBACK_DAG_ID, ControlPlane
from powerx_upgrade.cli.plugin.common import EXIT_OK, console
from powerx_upgrade.cli.plugin.guard import connect, guarded
from powerx_upgrade.cli.plugin.inputs import approval_token, load_adjustment, parse_settings


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
        detail = f"{ROLLBACK_DAG_ID} run {answer.get('dag_run_id')} rolls it back"
    if answer.get("scope"):
        detail += f"; scope {answer['scope']} ({answer.get('scope_source', 'requested')})"
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
