#!/usr/bin/env python3
"""Smoke test of a running grey-upgrade deployment, through Airflow's REST API only.

Runs a happy path (a version the platform takes well: the run must succeed, outcome
`promoted`, with a report) and a failure path (a version that fails its gate: the run must
fail, outcome `rolled_back`, rollback verified) of a plan DAG, one after the other, prints a
pass/fail table and exits 0 only when every check passed (1: a check failed; 2: usage error,
Airflow or the platform unreachable, login refused). With --platform-url (the sandbox, or any
platform serving the PowerX contract) it also checks tenant versions: after the failure path
every tenant is back on the version it had before.

    python scripts/workflows/version-upgrade-smoke.py \\
        --airflow-url http://localhost:8080 --username airflow --password airflow \\
        --platform-url http://localhost:8700

Preflight refuses an unsigned artifact: with --signing-key (the release pipeline's Ed25519
private key) each path's run is signed for its plugin, target version and artifact SHA-256 (the
conf's, else the DAG's trigger-form defaults), unless its conf already has artifact_signature.

Every option also reads an environment variable (see --help). Imports no Airflow: it talks to
Airflow through the package's REST client (`powerx_upgrade.airflow_client`), so it runs wherever
the powerx-grey-upgrade package is installed (`uv run scripts/workflows/version-upgrade-smoke.py`
from the repository uses the project's environment).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.table import Table

from powerx_upgrade.airflow_client import AirflowClient, ApiError, Unreachable
from powerx_upgrade.security.artifacts import artifact_message

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_SETUP = 2

DEFAULT_DAG = "plugin_upgrade__crm-sync-demo"
DEFAULT_HAPPY_CONF = {"target_version": "2.4.0", "reason": "smoke test: happy path"}
DEFAULT_FAILURE_CONF = {"target_version": "2.5.0", "reason": "smoke test: failure path"}
TERMINAL_STATES = frozenset({"success", "failed"})


class SetupError(RuntimeError):
    """The smoke test cannot talk to the deployment (exit 2): unreachable, login refused."""


@dataclass
class Check:
    path: str
    name: str
    passed: bool
    detail: str = ""


@dataclass
class PathSpec:
    """One path to run: the DAG, its conf, and what its end must look like.

    :param name: `happy` or `failure`.
    :param dag_id: the plan's DAG.
    :param conf: the run's conf.
    :param state: the DAG run state expected at the end.
    :param outcome: the rollout outcome expected (finalize.record's XCom).
    """

    name: str
    dag_id: str
    conf: dict[str, Any]
    state: str
    outcome: str


@dataclass
class Options:
    dag_timeout: float = 120.0
    run_timeout: float = 900.0
    poll_interval: float = 2.0
    plugin: str = "crm-sync"
    signing_key: bytes | None = None
    """PEM of the Ed25519 private key that signs each run's artifact (None: confs as given)."""


# -- Airflow REST API ------------------------------------------------------------------------


class AirflowApi:
    """The `/api/v2` calls the smoke test makes, through the package's REST client with a
    bearer token from `/auth/token` (renewed once on 401); every failure is a SetupError.

    :param base_url: the api-server, e.g. http://localhost:8080.
    :param username: a user allowed to trigger DAGs.
    :param password: that user's password.
    :param timeout: seconds per HTTP request.
    """

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0):
        self.client = AirflowClient(base_url, username=username, password=password, timeout=timeout)
        self.base_url = self.client.base_url

    def close(self) -> None:
        self.client.close()

    def login(self) -> None:
        try:
            self.client.token(refresh=True)
        except Unreachable as exc:
            raise SetupError(f"cannot reach Airflow at {self.base_url}: {exc.detail}") from exc
        except ApiError as exc:
            raise SetupError(
                f"login refused: POST {self.base_url}/auth/token answered {exc.status}: "
                f"{exc.detail[:300]}"
            ) from exc
        except (ValueError, KeyError) as exc:
            raise SetupError(f"POST /auth/token gave no access_token: {exc}") from exc

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Unreachable as exc:
            raise SetupError(f"{exc.method} {exc.url} failed: {exc.detail}") from exc
        except ApiError as exc:
            raise SetupError(f"{what} answered {exc.status}: {exc.detail[:500]}") from exc

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        return self._call(f"GET dag {dag_id}", lambda: self.client.dag_or_none(dag_id))

    def dag_params(self, dag_id: str) -> dict[str, Any]:
        """The DAG's trigger-form defaults (its Params' values)."""
        return self._call(f"GET dag {dag_id} details", lambda: self.client.dag_params(dag_id))

    def import_errors(self) -> list[dict[str, Any]]:
        return self._call("GET /api/v2/importErrors", self.client.import_errors)

    def unpause(self, dag_id: str) -> dict[str, Any]:
        return self._call(f"PATCH dag {dag_id}", lambda: self.client.unpause(dag_id))

    def trigger(self, dag_id: str, conf: Mapping[str, Any]) -> str:
        return self._call(
            f"POST dag {dag_id} dagRuns",
            lambda: self.client.trigger(dag_id, conf, unpause=False),
        )

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._call(f"GET run {run_id}", lambda: self.client.run(dag_id, run_id))

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return self._call(
            f"GET run {run_id} taskInstances", lambda: self.client.task_states(dag_id, run_id)
        )

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """A task's return value, or None when it has none."""
        return self._call(
            f"GET {task_id} XCom of {run_id}", lambda: self.client.xcom(dag_id, run_id, task_id)
        )


class Platform:
    """Tenant versions from a platform serving the PowerX contract (the sandbox included).

    :param base_url: e.g. http://localhost:8700.
    :param timeout: seconds per HTTP request.
    """

    def __init__(self, base_url: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def versions(self, plugin: str) -> dict[str, str]:
        path = f"/internal/plugins/{quote(plugin, safe='')}/tenants"
        try:
            response = self._http.get(path)
        except httpx.HTTPError as exc:
            raise SetupError(f"cannot reach the platform at {self.base_url}: {exc}") from exc
        if response.is_error:
            raise SetupError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
        return {t["id"]: t["version"] for t in response.json()["tenants"]}


# -- signing ---------------------------------------------------------------------------------


def sign(private_key_pem: bytes, plugin: str, version: str, sha256: str) -> str:
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SetupError(f"--signing-key is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SetupError(f"--signing-key is a {type(key).__name__}, not an Ed25519 key")
    signature = key.sign(artifact_message(plugin, version, sha256))
    return base64.b64encode(signature).decode("ascii")


def signed_conf(api: AirflowApi, spec: PathSpec, options: Options) -> dict[str, Any]:
    """The path's conf, signed when a signing key is given and the conf carries no signature."""
    conf = dict(spec.conf)
    if options.signing_key is None or conf.get("artifact_signature"):
        return conf
    defaults = api.dag_params(spec.dag_id)
    version = conf.get("target_version") or defaults.get("target_version")
    sha256 = conf.get("artifact_sha256") or defaults.get("artifact_sha256")
    if not version or not sha256:
        raise SetupError(
            f"{spec.name}: cannot sign: no target_version/artifact_sha256 in the conf or in "
            f"the defaults of {spec.dag_id}"
        )
    conf["artifact_signature"] = sign(options.signing_key, options.plugin, version, sha256)
    return conf


# -- the paths -------------------------------------------------------------------------------


def wait_until(
    probe: Callable[[], Any], timeout: float, interval: float, sleep: Callable[[float], None]
) -> Any:
    """`probe()`'s first truthy value within `timeout` seconds, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() >= deadline:
            return value or None
        sleep(interval)


def prepare_dag(api: AirflowApi, spec: PathSpec, options: Options, sleep=time.sleep) -> list[Check]:
    """The DAG is parsed (waiting up to dag_timeout) and unpaused."""
    dag = wait_until(lambda: api.dag(spec.dag_id), options.dag_timeout, 2.0, sleep)
    if dag is None:
        errors = [e.get("filename", "?") for e in api.import_errors()]
        detail = f"not found after {options.dag_timeout:g}s"
        if errors:
            detail += f"; import errors in {', '.join(errors[:3])}"
        return [Check(spec.name, f"DAG {spec.dag_id} exists", False, detail)]
    checks = [Check(spec.name, f"DAG {spec.dag_id} exists", True)]
    if dag.get("is_paused"):
        dag = api.unpause(spec.dag_id)
    checks.append(
        Check(
            spec.name,
            "DAG unpaused",
            dag.get("is_paused") is False,
            f"is_paused={dag.get('is_paused')}",
        )
    )
    return checks


def follow_run(
    api: AirflowApi, spec: PathSpec, run_id: str, options: Options, sleep=time.sleep
) -> tuple[str | None, float]:
    """Poll the run until a terminal state; returns (state or None on timeout, seconds)."""
    started = time.monotonic()
    state = wait_until(
        lambda: (s := api.run(spec.dag_id, run_id).get("state")) in TERMINAL_STATES and s,
        options.run_timeout,
        options.poll_interval,
        sleep,
    )
    return state, time.monotonic() - started


def outcome_checks(api: AirflowApi, spec: PathSpec, run_id: str) -> list[Check]:
    """What the run itself says: its outcome, and the report (happy) or rollback (failure)."""
    record = api.xcom(spec.dag_id, run_id, "finalize.record") or {}
    outcome = record.get("outcome") if isinstance(record, Mapping) else None
    checks = [Check(spec.name, f"outcome is {spec.outcome}", outcome == spec.outcome, f"{outcome}")]
    if spec.name == "failure":
        verify = api.task_states(spec.dag_id, run_id).get("rollback.verify")
        checks.append(
            Check(spec.name, "rollback verified", verify == "success", f"rollback.verify: {verify}")
        )
    report = api.xcom(spec.dag_id, run_id, "finalize.report")
    link = report.get("link") if isinstance(report, Mapping) else None
    checks.append(Check(spec.name, "report written", bool(link), link or "no finalize.report XCom"))
    return checks


def tenant_checks(
    spec: PathSpec, before: Mapping[str, str], after: Mapping[str, str]
) -> list[Check]:
    """Happy: tenants that moved went to the target, at least one is on it. Failure: every
    tenant is back on the version it had before the run."""
    target = str(spec.conf.get("target_version", ""))
    if spec.name == "happy":
        moved = {t: v for t, v in after.items() if before.get(t) != v}
        astray = sorted(t for t, v in moved.items() if v != target)
        on_target = sum(1 for v in after.values() if v == target)
        ok = not astray and on_target > 0
        detail = f"{on_target}/{len(after)} tenants on {target}"
        if astray:
            detail += f"; moved elsewhere: {', '.join(astray[:5])}"
        return [Check(spec.name, f"tenants upgraded to {target}", ok, detail)]
    changed = sorted(t for t in before if after.get(t) != before[t])
    detail = (
        f"all {len(before)} tenants on their old versions"
        if not changed
        else f"{len(changed)} not back: "
        + ", ".join(f"{t} {before[t]}->{after.get(t)}" for t in changed[:5])
    )
    return [Check(spec.name, "every tenant back on its old version", not changed, detail)]


def run_path(
    api: AirflowApi,
    platform: Platform | None,
    spec: PathSpec,
    options: Options,
    console: Console,
    sleep=time.sleep,
) -> list[Check]:
    """Run one path end to end; returns its checks (stops at the first one that makes the
    rest meaningless)."""
    checks = prepare_dag(api, spec, options, sleep)
    if not all(c.passed for c in checks):
        return checks
    before = platform.versions(options.plugin) if platform else {}
    conf = signed_conf(api, spec, options)
    run_id = api.trigger(spec.dag_id, conf)
    console.print(
        f"[bold]{spec.name}[/]: triggered {spec.dag_id} run {run_id} conf {json.dumps(conf)}"
    )
    state, seconds = follow_run(api, spec, run_id, options, sleep)
    detail = (
        f"{state or f'not finished after {options.run_timeout:g}s'} in {seconds:.0f}s ({run_id})"
    )
    checks.append(Check(spec.name, f"run ends {spec.state}", state == spec.state, detail))
    if state is None:
        return checks
    checks += outcome_checks(api, spec, run_id)
    if platform:
        checks += tenant_checks(spec, before, platform.versions(options.plugin))
    return checks


# -- command line ----------------------------------------------------------------------------


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"POWERX_SMOKE_{name}", default)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="version-upgrade-smoke",
        description="Run a happy and a failure path of a grey-upgrade plan on a running "
        "deployment through Airflow's REST API; exit 0 only when every check passed.",
        epilog="Every option defaults to the environment variable POWERX_SMOKE_<NAME> "
        "(e.g. POWERX_SMOKE_AIRFLOW_URL, POWERX_SMOKE_PASSWORD), then to the compose demo.",
    )
    p.add_argument(
        "--airflow-url",
        default=_env("AIRFLOW_URL", "http://localhost:8080"),
        help="Airflow api-server base URL (default %(default)s)",
    )
    p.add_argument("--username", default=_env("USERNAME", "airflow"), help="Airflow user")
    p.add_argument("--password", default=_env("PASSWORD", "airflow"), help="Airflow password")
    p.add_argument(
        "--happy-dag",
        default=_env("HAPPY_DAG", DEFAULT_DAG),
        help="DAG of the happy path (default %(default)s)",
    )
    p.add_argument(
        "--happy-conf",
        type=_json_object,
        default=_env("HAPPY_CONF") or json.dumps(DEFAULT_HAPPY_CONF),
        help="run conf of the happy path, JSON (default: target_version 2.4.0)",
    )
    p.add_argument(
        "--failure-dag",
        default=_env("FAILURE_DAG"),
        help="DAG of the failure path (default: the happy path's DAG)",
    )
    p.add_argument(
        "--failure-conf",
        type=_json_object,
        default=_env("FAILURE_CONF") or json.dumps(DEFAULT_FAILURE_CONF),
        help="run conf of the failure path, JSON (default: target_version 2.5.0, "
        "which the sandbox's bad-version scenario fails)",
    )
    p.add_argument(
        "--platform-url",
        default=_env("PLATFORM_URL"),
        help="the sandbox (or platform) URL: also check tenant versions",
    )
    p.add_argument(
        "--plugin",
        default=_env("PLUGIN", "crm-sync"),
        help="plugin whose tenants --platform-url lists (default %(default)s)",
    )
    p.add_argument(
        "--signing-key",
        default=_env("SIGNING_KEY"),
        help="Ed25519 private key (PEM file) that signs each run's artifact (powerx artifact "
        "keygen; its .pub must be trusted by the deployment)",
    )
    p.add_argument(
        "--paths",
        default=_env("PATHS", "happy,failure"),
        help="which paths to run, comma-separated (default %(default)s)",
    )
    p.add_argument(
        "--run-timeout",
        type=float,
        default=_env("RUN_TIMEOUT", "900"),
        help="seconds a run may take (default %(default)s)",
    )
    p.add_argument(
        "--dag-timeout",
        type=float,
        default=_env("DAG_TIMEOUT", "120"),
        help="seconds to wait for a DAG to be parsed (default %(default)s)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=_env("POLL_INTERVAL", "2"),
        help="seconds between run state polls (default %(default)s)",
    )
    return p  # fmt: skip


def path_specs(args: argparse.Namespace) -> list[PathSpec]:
    wanted = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = sorted(set(wanted) - {"happy", "failure"})
    if unknown or not wanted:
        raise SetupError(f"--paths: expected happy and/or failure, got {args.paths!r}")
    specs = {
        "happy": PathSpec("happy", args.happy_dag, args.happy_conf, "success", "promoted"),
        "failure": PathSpec(
            "failure",
            args.failure_dag or args.happy_dag,
            args.failure_conf,
            "failed",
            "rolled_back",
        ),
    }
    return [specs[name] for name in ("happy", "failure") if name in wanted]


def render(checks: Sequence[Check], console: Console) -> None:
    table = Table(title="grey-upgrade smoke test")
    table.add_column("path")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for check in checks:
        result = "[green]PASS[/]" if check.passed else "[red]FAIL[/]"
        table.add_row(check.path, check.name, result, check.detail)
    console.print(table)
    passed = sum(c.passed for c in checks)
    colour = "green" if passed == len(checks) else "red"
    console.print(f"[{colour}]{passed}/{len(checks)} checks passed[/]")


@dataclass
class Outcome:
    checks: list[Check] = field(default_factory=list)
    error: str | None = None

    @property
    def exit_code(self) -> int:
        if self.error:
            return EXIT_SETUP
        return EXIT_OK if self.checks and all(c.passed for c in self.checks) else EXIT_CHECK_FAILED


def smoke(args: argparse.Namespace, console: Console, sleep=time.sleep) -> Outcome:
    """Run the chosen paths in order; a setup error stops everything (exit 2)."""
    outcome = Outcome()
    options = Options(args.dag_timeout, args.run_timeout, args.poll_interval, args.plugin)
    if args.signing_key:
        try:
            options.signing_key = Path(args.signing_key).read_bytes()
        except OSError as exc:
            outcome.error = f"--signing-key {args.signing_key}: {exc.strerror or exc}"
            return outcome
    api = AirflowApi(args.airflow_url, args.username, args.password)
    platform = Platform(args.platform_url) if args.platform_url else None
    try:
        specs = path_specs(args)
        api.login()
        for spec in specs:
            outcome.checks += run_path(api, platform, spec, options, console, sleep)
    except SetupError as exc:
        outcome.error = str(exc)
    finally:
        api.close()
        if platform:
            platform.close()
    return outcome


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    args = parser().parse_args(argv)
    console = console or Console()
    started = time.monotonic()
    outcome = smoke(args, console)
    if outcome.checks:
        render(outcome.checks, console)
    if outcome.error:
        console.print(f"[red]error:[/] {outcome.error}")
    console.print(f"smoke test took {time.monotonic() - started:.0f}s; exit {outcome.exit_code}")
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
