"""Exit codes, shared constants, the consoles and the usage error of `powerx plugin`."""

from __future__ import annotations

from rich.console import Console

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
