"""Command-line input of `powerx plugin`: the upgrade's conf, timeouts, `--set` adjustments, the
approval token, and the exit code of an outcome or an error."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from powerx_upgrade import airflow_client as http
from powerx_upgrade.airflow_client import ApiError
from powerx_upgrade.cli.plugin.common import (
    EXIT_NOT_PROMOTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    STRATEGIES,
    SUCCESS_OUTCOMES,
    UsageError,
)
from powerx_upgrade.domain.durations import parse_duration

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


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
