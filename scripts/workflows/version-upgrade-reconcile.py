#!/usr/bin/env python3
"""Reconcile the grey-upgrade ledger with the platform, for auditors and on-call.

For one plugin it compares where the ledger says every tenant should be (the version its last
settled upgrade or rollback left it on) with where the platform says it is, and lists what the
ledger itself leaves unsettled: actions of finished runs that never finished (a tenant on an
unknown version), rollbacks that did not verify, tenants still claimed by finished runs, runs
active for too long, and audit records not yet delivered.

    uv run python scripts/workflows/version-upgrade-reconcile.py --plugin crm-sync \\
        --ledger-url postgresql+psycopg2://... --platform-url https://powerx.example.com

Exit 0: nothing found (warnings allowed with --warnings-ok); 1: findings; 2: usage error, the
ledger or the platform unreachable. `--json` prints the findings as JSON instead of a table.

Repairs (`powerx_upgrade.rollout.repair`): every run prints the fixes it could make ("would");
`--fix` makes them, each audited (`reconcile.fix.<kind>`): dead runs' claims released (a run
the ledger calls active is dead when its Airflow DAG run is success/failed/absent; give
`--airflow-url` so reconcile can ask, else only runs the ledger calls finished are dead),
unsettled actions of dead runs settled from the platform's tenant versions, and the audit
backlog delivered (to `--audit-url`, default the platform URL). `--dry-run` prints the fixes
and changes nothing, even with `--fix`. `--release-stale-claims` is the old name of a `--fix`
limited to releasing claims of finished runs.
It needs the installed package (`powerx_upgrade`) for the ledger; it imports no Airflow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.table import Table

from powerx_upgrade.domain.durations import parse_duration
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.errors import PowerXRejected
from powerx_upgrade.rollout.reconcile import ERROR, Finding, reconcile
from powerx_upgrade.rollout.repair import Fix, apply_fixes, plan_fixes

EXIT_OK, EXIT_FINDINGS, EXIT_SETUP = 0, 1, 2


class SetupError(RuntimeError):
    """The ledger or the platform cannot be read (exit 2)."""


def fetch_fleet(platform_url: str, plugin: str, token: str | None) -> list[dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{platform_url.rstrip('/')}/internal/plugins/{quote(plugin, safe='')}/tenants"
    try:
        answer = httpx.get(url, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise SetupError(f"platform unreachable at {url}: {exc}") from None
    if answer.status_code != 200:
        raise SetupError(f"platform answered {answer.status_code} for {url}: {answer.text[:300]}")
    return list(answer.json().get("tenants") or [])


def dag_run_states(
    airflow_url: str | None, token: str | None, runs: Sequence
) -> dict[str, str | None]:
    """The Airflow state of the DAG run of every run the ledger calls active (None: no such DAG
    run); empty without an Airflow URL (then no active run counts as dead)."""
    if not airflow_url:
        return {}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    states: dict[str, str | None] = {}
    for run in [r for r in runs if r.active]:
        url = (
            f"{airflow_url.rstrip('/')}/api/v2/dags/{quote(run.dag_id, safe='')}"
            f"/dagRuns/{quote(run.run_id, safe='')}"
        )
        try:
            answer = httpx.get(url, headers=headers, timeout=30)
        except httpx.HTTPError as exc:
            raise SetupError(f"Airflow unreachable at {url}: {exc}") from None
        if answer.status_code == 404:
            states[run.run_id] = None
        elif answer.status_code == 200:
            states[run.run_id] = str(answer.json().get("state"))
        else:
            raise SetupError(
                f"Airflow answered {answer.status_code} for {url}: {answer.text[:300]}"
            )
    return states


class HttpAudit:
    """`POST /internal/audit/version` on the audit service (idempotent by record id)."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.url = f"{base_url.rstrip('/')}/internal/audit/version"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def record(self, record: dict) -> dict:
        answer = httpx.post(self.url, json=record, headers=self.headers, timeout=30)
        if 400 <= answer.status_code < 500 and answer.status_code not in (404, 409, 429):
            # this record is wrong, not the service down: the outbox keeps it with the error
            raise PowerXRejected(
                answer.text[:300], method="POST", endpoint=self.url, status=answer.status_code
            )
        answer.raise_for_status()
        return answer.json() if answer.content else {}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--plugin", required=True, help="the plugin whose tenants to reconcile")
    p.add_argument(
        "--ledger-url",
        default=os.environ.get("POWERX_LEDGER_URL"),
        help="the ledger's SQLAlchemy URL (env POWERX_LEDGER_URL)",
    )
    p.add_argument(
        "--platform-url",
        default=os.environ.get("POWERX_PLATFORM_URL"),
        help="the platform (or sandbox) base URL (env POWERX_PLATFORM_URL)",
    )
    p.add_argument(
        "--platform-token-env",
        default="POWERX_PLATFORM_TOKEN",
        help="environment variable holding the platform's bearer token, if it needs one",
    )
    p.add_argument("--stuck-after", default="24h", help="an active run older than this is stuck")
    p.add_argument(
        "--audit-late-after", default="15m", help="an undelivered audit record older is late"
    )
    p.add_argument("--runs", type=int, default=500, help="how many recent runs to read")
    p.add_argument(
        "--release-stale-claims",
        action="store_true",
        help="old name of --fix, limited to releasing the claims of finished runs",
    )
    p.add_argument("--fix", action="store_true", help="make the repairs (each audited)")
    p.add_argument("--dry-run", action="store_true", help="print the repairs, change nothing")
    p.add_argument(
        "--airflow-url",
        default=os.environ.get("POWERX_AIRFLOW_URL"),
        help="Airflow's base URL, to ask whether active runs' DAG runs still exist "
        "(env POWERX_AIRFLOW_URL)",
    )
    p.add_argument("--airflow-token-env", default="POWERX_AIRFLOW_TOKEN")
    p.add_argument(
        "--audit-url",
        default=os.environ.get("POWERX_AUDIT_URL"),
        help="the audit service's base URL for --fix (default: the platform URL)",
    )
    p.add_argument("--audit-token-env", default="POWERX_AUDIT_TOKEN")
    p.add_argument("--warnings-ok", action="store_true", help="exit 0 when only warnings remain")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    return p


def show(findings: Sequence[Finding], console: Console) -> None:
    if not findings:
        console.print("[green]ledger and platform agree; nothing unsettled[/green]")
        return
    table = Table(title="reconcile findings")
    for column in ("severity", "kind", "run", "tenant", "finding"):
        table.add_column(column, overflow="fold")
    for f in findings:
        colour = "red" if f.severity == ERROR else "yellow"
        table.add_row(
            f"[{colour}]{f.severity}[/{colour}]",
            f.kind,
            f.run_id or "-",
            f.tenant or "-",
            f.message,
        )
    console.print(table)


def show_fixes(fixes: Sequence[Fix], done: Sequence[dict], console: Console) -> None:
    for item in done:
        console.print(f"[green]fixed[/green] {item['kind']}: {item['message']} -> {item['result']}")
    if not done:
        for fix in fixes:
            console.print(f"[cyan]would fix[/cyan] {fix.kind}: {fix.message} (--fix makes it)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(stderr=False)
    try:
        if not args.ledger_url or not args.platform_url:
            raise SetupError("--ledger-url and --platform-url are required (or their env vars)")
        stuck: timedelta = parse_duration(args.stuck_after)
        late: timedelta = parse_duration(args.audit_late_after)
        fleet = fetch_fleet(args.platform_url, args.plugin, os.environ.get(args.platform_token_env))
        ledger = Ledger(args.ledger_url)
        findings = reconcile(
            ledger,
            args.plugin,
            fleet,
            stuck_after=stuck,
            audit_late_after=late,
            run_limit=args.runs,
        )
        runs = ledger.runs(plugin=args.plugin, limit=args.runs)
        states = dag_run_states(args.airflow_url, os.environ.get(args.airflow_token_env), runs)
        by_id = {str(t["id"]): t for t in fleet}
        fixes = plan_fixes(ledger, runs, by_id, dag_run_states=states)
        if args.release_stale_claims and not args.fix:
            fixes = [f for f in fixes if f.kind == "release_claims"]
        done: list[dict] = []
        if (args.fix or args.release_stale_claims) and not args.dry_run and fixes:
            audit = HttpAudit(
                args.audit_url or args.platform_url, os.environ.get(args.audit_token_env)
            )
            done = apply_fixes(ledger, fixes, audit_client=audit)
            findings = reconcile(
                ledger,
                args.plugin,
                fetch_fleet(
                    args.platform_url, args.plugin, os.environ.get(args.platform_token_env)
                ),
                stuck_after=stuck,
                audit_late_after=late,
                run_limit=args.runs,
            )
    except (SetupError, ValueError) as exc:
        print(f"reconcile: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except Exception as exc:  # the ledger unreachable or of another schema
        print(f"reconcile: cannot read the ledger: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_SETUP
    if args.json:
        print(
            json.dumps(
                {
                    "plugin": args.plugin,
                    "findings": [f.as_dict() for f in findings],
                    "fixes": [f.as_dict() for f in fixes] if not done else [],
                    "fixed": done,
                },
                default=str,
            )
        )
    else:
        show_fixes(fixes, done, console)
        show(findings, console)
    blocking = [f for f in findings if f.severity == ERROR or not args.warnings_ok]
    return EXIT_FINDINGS if blocking else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
