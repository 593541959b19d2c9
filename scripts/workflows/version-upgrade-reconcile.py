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
`--release-stale-claims` frees tenants held by finished runs (the only change it can make).
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
from powerx_upgrade.rollout.reconcile import ERROR, Finding, reconcile

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
    p.add_argument("--release-stale-claims", action="store_true")
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
        if args.release_stale_claims:
            for f in [f for f in findings if f.kind == "stale_claim"]:
                released = ledger.release_tenants(f.run_id or "")
                console.print(f"released {released} tenant(s) held by finished run {f.run_id}")
            findings = [f for f in findings if f.kind != "stale_claim"]
    except (SetupError, ValueError) as exc:
        print(f"reconcile: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except Exception as exc:  # the ledger unreachable or of another schema
        print(f"reconcile: cannot read the ledger: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_SETUP
    if args.json:
        print(json.dumps({"plugin": args.plugin, "findings": [f.as_dict() for f in findings]}))
    else:
        show(findings, console)
    blocking = [f for f in findings if f.severity == ERROR or not args.warnings_ok]
    return EXIT_FINDINGS if blocking else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
