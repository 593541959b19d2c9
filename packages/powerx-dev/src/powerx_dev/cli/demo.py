"""`powerx demo`: a live Airflow stack and the sandbox platform running the demo plan end to end."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from powerx_dev import demo
from powerx_dev.demo import CASES, DemoCase, DemoSettings, RunView

console = Console(highlight=False, soft_wrap=True)

VERDICT_STYLE = {
    "pass": "green",
    "fail": "bold red",
    "no_data": "yellow",
    "error": "bold red",
    "inconclusive": "yellow",
    "running": "cyan",
}


def register(nouns: argparse._SubParsersAction) -> None:
    parser = nouns.add_parser(
        "demo",
        help="run the demo plan on a live Airflow stack against the sandbox platform",
        description="Start the sandbox platform and a local Airflow (api-server, scheduler, "
        "dag-processor, triggerer), trigger the demo plan through the REST API and follow it "
        "live. Without --once the stack stays up for the UI until Ctrl-C.",
    )
    parser.add_argument(
        "--scenario",
        default="bad-version",
        help=f"sandbox scenario: {', '.join(CASES)} or a scenario file "
        "(default: bad-version: the gate catches a bad version and rolls "
        "back)",
    )
    parser.add_argument(
        "--version", dest="target_version", help="version to roll out (default: the scenario's)"
    )
    parser.add_argument(
        "--expect", help="outcome that counts as success with --once (default: the scenario's)"
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="run the plan to its end, print the summary, stop everything, exit "
        "0 if the outcome is the expected one",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(".powerx-demo"),
        help="where the stack, ledger and reports live (default .powerx-demo/)",
    )
    parser.add_argument(
        "--api-port", type=int, default=8080, help="Airflow UI/API port (0: any free port)"
    )
    parser.add_argument(
        "--sandbox-port", type=int, default=0, help="sandbox port (0: any free port)"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the whole run")
    parser.add_argument(
        "--metrics",
        choices=("powerx", "prometheus"),
        default="powerx",
        help="where the gate reads its metrics: powerx (the sandbox's monitoring service) or "
        "prometheus (a real Prometheus scraping the sandbox, read with PromQL; installed if "
        "missing)",
    )
    parser.add_argument(
        "--engine",
        choices=tuple(demo.ENGINES),
        default="local",
        help="local: LocalExecutor on SQLite (default); celery: the production topology as "
        "native processes (PostgreSQL, Redis, CeleryExecutor with 2 workers, 2 schedulers; the "
        "ledger on PostgreSQL; docs/deployment.md)",
    )
    parser.add_argument(
        "--representative",
        action="store_true",
        help=f"run {demo.REPRESENTATIVE_PLAN_ID}: its canary holds a tenant of every tier "
        "(tenants.represent), so case B fails at batch 1",
    )
    parser.set_defaults(func=cmd_demo)


def case_for(args: argparse.Namespace) -> DemoCase:
    known = CASES.get(args.scenario)
    if known is None and not (args.target_version and args.expect):
        raise SystemExit(
            f"powerx demo: unknown scenario {args.scenario!r}; known: {', '.join(CASES)} "
            "(a scenario file needs --version and --expect)"
        )
    return DemoCase(
        scenario=args.scenario,
        target_version=args.target_version or known.target_version,
        expected=args.expect or known.expected,
        story=known.story if known else "your scenario",
    )


def cmd_demo(args: argparse.Namespace) -> int:
    case = case_for(args)
    path = demo.scenario_path(args.scenario)
    if not path.exists():
        console.print(f"[red]error:[/] no scenario file {escape(str(path))}")
        return 2
    settings = DemoSettings(
        home=args.home.resolve(),
        case=case,
        scenario_path=path,
        api_port=args.api_port or None,
        sandbox_port=args.sandbox_port or None,
        timeout=args.timeout,
        metrics=args.metrics,
        plan_id=demo.REPRESENTATIVE_PLAN_ID if args.representative else demo.PLAN_ID,
        engine=args.engine,
    )
    from powerx_dev.ports import PortBusy, check_ports

    try:
        check_ports(demo.wanted_ports(settings))
    except PortBusy as busy:
        console.print(f"[red]powerx demo:[/] {escape(str(busy))}")
        return 2
    began = time.time()
    # A terminal closing or `kill` ends the demo like Ctrl-C: every process it started stops.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    console.rule("[bold]PowerX grey upgrade: demo")
    console.print(f"scenario [bold]{escape(case.scenario)}[/]: {escape(case.story)}")
    console.print(f"metrics: the gate reads [bold]{args.metrics}[/]")
    console.print(f"engine [bold]{args.engine}[/]: {escape(demo.ENGINES[args.engine])}")
    try:
        signing = demo.demo_signing(settings)
        signature = signing.conf(settings.config, case.target_version, settings.plan_id)
        console.print(
            f"signing key [bold]{signing.key_id}[/] (public key {escape(str(signing.public_key))}, "
            "trusted by the stack): the demo artifact is signed for "
            f"{case.target_version}"
        )
        with demo.running_demo(settings, lambda m: console.print(f"[dim]{escape(m)}[/]")) as (
            airflow,
            sandbox,
        ):
            user, password = airflow.login
            console.print(
                f"Airflow UI: [bold link={airflow.base_url}]{airflow.base_url}[/] "
                f"(login {user} / {password})   sandbox: {sandbox}"
            )
            run_id = airflow.trigger(
                settings.dag_id,
                {
                    "target_version": case.target_version,
                    **signature,
                    "reason": f"powerx demo: scenario {case.scenario}",
                },
                note="powerx demo",
            )
            console.print(
                f"triggered [bold]{settings.dag_id}[/] run {escape(run_id)} -> "
                f"{case.target_version} through the REST API; following it live"
            )
            with Live(render(RunView(), case), console=console, refresh_per_second=2) as live:
                view = demo.wait_for_end(
                    airflow, sandbox, run_id, settings, lambda v: live.update(render(v, case))
                )
            summary(view, case, settings, run_id, airflow, began)
            ok = view.outcome == case.expected
            if args.once:
                console.print("stopping everything the demo started ...")
                return 0 if ok else 1
            console.print(
                f"The stack stays up for the UI at {airflow.base_url}; "
                "[bold]Ctrl-C[/] stops everything."
            )
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        console.print("\nstopped; every process the demo started is gone")
        return 130
    except Exception as exc:
        console.print(f"[red]demo failed:[/] {escape(str(exc))}")
        return 1


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def render(view: RunView, case: DemoCase) -> Group:
    table = Table(
        title=f"run: {view.state}" + (f", outcome {view.outcome}" if view.outcome else ""),
        title_justify="left",
    )
    for column in ("batch", "tenants", "deployed", "failed", "verdict", "decision", "why"):
        table.add_column(column, overflow="fold")
    for b in view.batches:
        style = VERDICT_STYLE.get(b.verdict, "")
        table.add_row(
            f"{b.index} {b.name}",
            str(b.tenants),
            str(b.deployed),
            str(b.failed),
            Text(b.verdict, style=style),
            b.decision,
            b.reason[:70],
        )
    lines = [table]
    if view.rollback_targets:
        done = f"{view.rolled_back}/{view.rollback_targets} rolled back"
        took = f" in {view.rollback_ms / 1000:.1f} s (verified)" if view.rollback_ms else ""
        lines.append(Text(f"rollback: {done}{took}", style="bold yellow"))
    if view.alerts:
        lines.append(Text(f"alerts: {', '.join(view.alerts)}", style="red"))
    fleet = ", ".join(f"{v}: {n}" for v, n in sorted(view.fleet.items()))
    lines.append(Text(f"fleet on the platform: {fleet or '-'}", style="dim"))
    return Group(*lines)


def exposure_line(exposure: dict[str, Any]) -> str:
    """The run's exposure in one line (report.json's `exposure`)."""
    if not exposure:
        return "exposure: not in the report"
    before = (
        f"before the first failing verdict (batch {exposure['detected_batch']}, "
        f"{exposure['detected_phase']})"
        if exposure["detected"]
        else "with no failing verdict"
    )
    return (
        f"exposure {before}: {exposure['tenants_before_detection']} tenant(s), "
        f"{exposure['tenant_minutes_before_detection']} tenant-minutes; in all "
        f"{exposure['tenants']} tenant(s), {exposure['tenant_minutes']} tenant-minutes"
    )


def summary(
    view: RunView, case: DemoCase, settings: DemoSettings, run_id: str, airflow: Any, began: float
) -> None:
    console.rule("[bold]summary")
    ok = view.outcome == case.expected
    colour = "green" if ok else "red"
    console.print(
        f"outcome [bold {colour}]{view.outcome}[/] (expected {case.expected}); "
        f"Airflow run state {view.state}"
    )
    if view.first_deploy_at:
        console.print(f"time from command to first batch: {view.first_deploy_at - began:.0f} s")
    reports = demo.report_paths(settings, run_id)
    for path in reports:
        console.print(f"report: {path}")
    if not reports:
        console.print(f"[yellow]no report found under {settings.reports}[/]")
    for path in reports:
        if path.name == "report.json":
            console.print(exposure_line(json.loads(path.read_text()).get("exposure") or {}))
    console.print(f"ledger: {_hide_password(settings.ledger_url)}")
    console.print(f"run in the UI: {airflow.base_url}/dags/{settings.dag_id}/runs/{run_id}")
    user, password = airflow.login
    secret = settings.approval_secret_file
    console.print(
        "control plane (docs/control-plane.md), from another terminal while the stack is up:\n"
        f"  export POWERX_AIRFLOW_URL={airflow.base_url} POWERX_AIRFLOW_USERNAME={user} "
        f"POWERX_AIRFLOW_PASSWORD={password} POWERX_APPROVAL_SECRET=$(cat {secret})\n"
        f"  uv run powerx plugin status {run_id}\n"
        f"  uv run powerx plugin report show {run_id}\n"
        f"  uv run powerx plugin rollback --run {run_id} --reason 'demo' --approval-token "
        f'"$(uv run powerx approval issue --action rollback --plan {settings.plan_id} '
        '--subject you@example.com)"',
        markup=False,
    )
    sys.stdout.flush()
