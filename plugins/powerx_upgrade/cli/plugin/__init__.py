"""`powerx plugin ...`: trigger, follow, steer and roll back plan runs on a running Airflow,
through its REST API and the project's control-plane API (what a CI pipeline or an on-call
engineer uses instead of the UI).

Exit codes: 0 ok (with `upgrade --wait`: the run promoted), 1 the run did not promote or the
server refused the request (permission, approval token, state), 2 usage or connection error.

Modules: `parser` (the arguments), `run` (upgrade, status), `steer` (rollback, decide, adjust),
`report` (report show), `guard` (connection, error handling), `inputs` (what the flags turn
into), `status`, `render` and `follow` (a run's status, shown and followed), `common`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from powerx_upgrade.cli.plugin.common import (
    DECISION_VERBS,
    EXIT_NOT_PROMOTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    ROLLBACK_SCOPES,
    STRATEGIES,
    SUCCESS_OUTCOMES,
    TERMINAL_STATES,
    UsageError,
)
from powerx_upgrade.cli.plugin.follow import RunReader, _poll, _print_changes, follow
from powerx_upgrade.cli.plugin.guard import connect, guarded
from powerx_upgrade.cli.plugin.inputs import (
    approval_token,
    exit_code_for_error,
    exit_code_for_outcome,
    load_adjustment,
    parse_settings,
    timeout_seconds,
    upgrade_conf,
)
from powerx_upgrade.cli.plugin.parser import add_verbs, register
from powerx_upgrade.cli.plugin.render import render_status, runs_table
from powerx_upgrade.cli.plugin.report import _report_from_xcom, cmd_report_show
from powerx_upgrade.cli.plugin.run import cmd_status, cmd_upgrade
from powerx_upgrade.cli.plugin.status import (
    BatchRow,
    RunStatus,
    status_from_airflow,
    status_from_api,
    waiting_prompts,
)
from powerx_upgrade.cli.plugin.steer import cmd_adjust, cmd_decide, cmd_rollback


def main(argv: Sequence[str] | None = None) -> int:
    """Run `plugin VERB ...` without the rest of the `powerx` CLI."""
    parser = argparse.ArgumentParser(prog="powerx plugin")
    add_verbs(parser)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


__all__ = [
    "DECISION_VERBS",
    "EXIT_NOT_PROMOTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "ROLLBACK_SCOPES",
    "STRATEGIES",
    "SUCCESS_OUTCOMES",
    "TERMINAL_STATES",
    "BatchRow",
    "RunReader",
    "RunStatus",
    "UsageError",
    "_poll",
    "_print_changes",
    "_report_from_xcom",
    "add_verbs",
    "approval_token",
    "cmd_adjust",
    "cmd_decide",
    "cmd_report_show",
    "cmd_rollback",
    "cmd_status",
    "cmd_upgrade",
    "connect",
    "exit_code_for_error",
    "exit_code_for_outcome",
    "follow",
    "guarded",
    "load_adjustment",
    "main",
    "parse_settings",
    "register",
    "render_status",
    "runs_table",
    "status_from_airflow",
    "status_from_api",
    "timeout_seconds",
    "upgrade_conf",
    "waiting_prompts",
]
