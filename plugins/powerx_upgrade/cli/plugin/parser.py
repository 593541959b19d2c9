"""The `powerx plugin` argument parser: connection options and one sub-command per verb."""

from __future__ import annotations

import argparse
from pathlib import Path

from powerx_upgrade import airflow_client as http
from powerx_upgrade.cli.plugin.common import DECISION_VERBS, ROLLBACK_SCOPES
from powerx_upgrade.cli.plugin.report import cmd_report_show
from powerx_upgrade.cli.plugin.run import cmd_status, cmd_upgrade
from powerx_upgrade.cli.plugin.steer import cmd_adjust, cmd_decide, cmd_rollback


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
