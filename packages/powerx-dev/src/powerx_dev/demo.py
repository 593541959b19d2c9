"""`powerx demo`: the sandbox platform plus a live Airflow stack, running the demo plan end to end.

It starts the sandbox with a scenario, starts Airflow (api-server, scheduler, dag-processor,
triggerer; LocalExecutor; SQLite) with the PowerX connections pointing at the sandbox, waits
until both are healthy, unpauses the demo plan's DAG and triggers it through the REST API the
way a CI pipeline does, and follows the run live (batches, verdicts, rollback) until it ends.
Everything it started is stopped when it ends (also on Ctrl-C or an error).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from powerx_dev.paths import CONFIG_DIR, DAGS_DIR, SCENARIOS_DIR
from powerx_upgrade.ledger import Ledger, migrate

PLAN_ID = "crm-sync-demo"
DAG_ID = f"plugin_upgrade__{PLAN_ID}"
REPRESENTATIVE_PLAN_ID = "crm-sync-demo-representative"
"""The demo plan whose canary holds a tenant of every tier (`powerx demo --representative`)."""
DEMO_KEY_ID = "powerx-demo"


@dataclass(frozen=True)
class DemoCase:
    """A scenario the demo knows: which version to roll out and how the run must end."""

    scenario: str
    target_version: str
    expected: str
    story: str


CASES = {
    "bad-version": DemoCase(
        "bad-version",
        "2.5.0",
        "rolled_back",
        "2.5.0 fails 9 % of bronze requests: the bronze batch fails its gate and every "
        "upgraded tenant goes back to 2.3.1 automatically",
    ),
    "happy": DemoCase(
        "happy",
        "2.4.0",
        "promoted",
        "2.4.0 is healthy: every batch passes its gate and the whole fleet ends on 2.4.0",
    ),
    "silent-crash": DemoCase(
        "silent-crash",
        "2.5.0",
        "rolled_back",
        "2.5.0 crashes the plugin on silver tenants, which then send no data at all: the gate "
        "names them, counts their silence as failure and rolls every upgraded tenant back",
    ),
    "no-data": DemoCase(
        "no-data",
        "2.4.0",
        "rolled_back",
        "monitoring goes silent after the first upgrade: the gate never promotes without data "
        "and rolls back",
    ),
}


@dataclass
class DemoSettings:
    home: Path
    case: DemoCase
    scenario_path: Path
    config: Path = CONFIG_DIR
    dags_folder: Path = DAGS_DIR
    api_port: int | None = None
    sandbox_port: int | None = None
    timeout: float = 900
    metrics: str = "powerx"
    """Where the gate reads its metrics: `powerx` (the sandbox's monitoring query) or
    `prometheus` (a Prometheus server scraping the sandbox's /metrics, queried with PromQL)."""
    plan_id: str = PLAN_ID
    engine: str = "local"
    """`local` (LocalExecutor, SQLite) or `celery` (the distributed profile: CeleryExecutor with
    two workers and two schedulers on PostgreSQL and Redis; the ledger on PostgreSQL)."""
    ledger_override: str | None = None
    """The ledger the stack writes to when it is not the home's SQLite file (set by
    `running_demo` for the celery engine)."""
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    """The admin password of this start's Airflow (printed with the UI's address)."""

    @property
    def dag_id(self) -> str:
        return f"plugin_upgrade__{self.plan_id}"

    @property
    def ledger_url(self) -> str:
        return self.ledger_override or f"sqlite:///{self.home / 'powerx_ledger.db'}"

    def ledger_ready(self) -> bool:
        """Whether the ledger exists yet (the SQLite file appears with the run's first task;
        the distributed stack makes its PostgreSQL ledger before it starts)."""
        return self.ledger_override is not None or (self.home / "powerx_ledger.db").exists()

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def signing_keys(self) -> Path:
        """The stack's trusted keys directory ($POWERX_UPGRADE_SIGNING_KEYS): the demo key."""
        return self.home / "signing_keys"

    @property
    def approval_secret_file(self) -> Path:
        """The shared secret of the demo's `powerx_approval` connection (approval tokens)."""
        return self.home / "approval.secret"


def demo_approval_secret(settings: DemoSettings) -> str:
    """The demo's approval-token secret: made on the first start (0600), kept for the next."""
    path = settings.approval_secret_file
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


@dataclass(frozen=True)
class DemoSigning:
    """The demo's own release key: it signs the demo artifact as a CI pipeline would."""

    key_id: str
    private_key: Path
    public_key: Path

    def conf(self, config: Path, version: str, plan_id: str = PLAN_ID) -> dict[str, str]:
        """The run conf's `artifact_signature` for the demo plan's default artifact at
        `version` (the plan's plugin and sha256, read from the config)."""
        from powerx_upgrade.config import load_config
        from powerx_upgrade.security.artifacts import sign_artifact

        plan = load_config([config]).plans[plan_id]
        if plan.artifact is None:
            raise ValueError(f"plan {plan_id} has no default artifact to sign")
        signature = sign_artifact(
            self.private_key.read_bytes(), plan.plugin, version, plan.artifact.sha256
        )
        return {"artifact_signature": signature}


def demo_signing(settings: DemoSettings) -> DemoSigning:
    """A key pair under the demo home (made on the first start, kept for the next ones): the
    private key in `signing/` (0600), the public one in the stack's trusted keys directory."""
    from powerx_upgrade.security.artifacts import generate_keypair

    private = settings.home / "signing" / f"{DEMO_KEY_ID}.private.pem"
    public = settings.signing_keys / f"{DEMO_KEY_ID}.pub"
    if not (private.is_file() and public.is_file()):
        private.parent.mkdir(parents=True, exist_ok=True)
        settings.signing_keys.mkdir(parents=True, exist_ok=True)
        private_pem, public_pem = generate_keypair()
        private.unlink(missing_ok=True)
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem)
        public.write_bytes(public_pem)
    return DemoSigning(DEMO_KEY_ID, private, public)


@dataclass
class BatchView:
    index: int
    name: str
    tenants: int
    deployed: int = 0
    failed: int = 0
    verdict: str = "-"
    reason: str = ""
    decision: str = "-"


@dataclass
class RunView:
    """What the terminal shows of a run, read from the REST API, the ledger and the sandbox."""

    state: str = "queued"
    outcome: str | None = None
    batches: list[BatchView] = field(default_factory=list)
    rolled_back: int = 0
    rollback_targets: int = 0
    rollback_ms: int | None = None
    fleet: Counter[str] = field(default_factory=Counter)
    first_deploy_at: float | None = None
    alerts: list[str] = field(default_factory=list)


def wanted_ports(settings: DemoSettings) -> list[Any]:
    """The ports the demo will listen on that the user chose (None/0: any free one)."""
    from powerx_dev.ports import WantedPort

    return [
        WantedPort("the Airflow UI/API", settings.api_port or 0, "--api-port"),
        WantedPort("the sandbox platform", settings.sandbox_port or 0, "--sandbox-port"),
    ]


def scenario_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    return SCENARIOS_DIR / f"{name}.yaml"


@contextmanager
def running_demo(settings: DemoSettings, log: Callable[[str], None]) -> Iterator[tuple[Any, str]]:
    """Sandbox (+ Prometheus scraping it with `metrics="prometheus"`) + Airflow, healthy;
    yields (stack, sandbox URL) and stops them all at the end."""
    from powerx_dev.ports import check_ports
    from powerx_dev.sandbox.testing import running_sandbox

    check_ports(wanted_ports(settings))  # before anything starts: a busy port is named
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.reports.mkdir(parents=True, exist_ok=True)
    # what the compose file's init job does: a ledger kept in --home from an older release is
    # migrated, a new one created at the head (the tasks refuse an un-migrated ledger)
    ledger_schema = migrate.upgrade(settings.ledger_url)
    log(f"ledger {ledger_schema.url} at revision {ledger_schema.after}")
    with ExitStack() as stack:
        log(f"starting the sandbox platform ({settings.case.scenario})")
        sandbox = stack.enter_context(
            running_sandbox(settings.scenario_path, port=settings.sandbox_port)
        )
        metrics_env = _metrics_environment(settings, sandbox, stack, log)
        log(f"sandbox ready at {sandbox}; starting Airflow ({ENGINES[settings.engine]})")
        env = {
            f"AIRFLOW_CONN_POWERX_{name}": sandbox
            for name in ("PLATFORM", "MONITORING", "NOTIFY", "AUDIT")
        }
        env.update(metrics_env)
        if settings.engine == "local":  # the distributed profile has its PostgreSQL ledger
            env["AIRFLOW_CONN_POWERX_LEDGER"] = json.dumps(
                {"conn_type": "generic", "extra": {"url": settings.ledger_url}}
            )
        env.update(
            {
                "POWERX_UPGRADE_CONFIG": str(settings.config),
                "POWERX_UPGRADE_REPORTS": str(settings.reports),
                "POWERX_UPGRADE_SIGNING_KEYS": str(settings.signing_keys),
                "AIRFLOW_CONN_POWERX_APPROVAL": json.dumps(
                    {"conn_type": "generic", "password": demo_approval_secret(settings)}
                ),
            }
        )
        airflow = stack.enter_context(_running_engine(settings, env))
        if settings.engine == "celery":
            settings.ledger_override = airflow.ledger_url
        yield airflow, sandbox


ENGINES = {
    "local": "LocalExecutor on SQLite: migrate, api-server, scheduler, dag-processor, triggerer",
    "celery": "CeleryExecutor: PostgreSQL, Redis, migrate, api-server, 2 schedulers, "
    "dag-processor, triggerer, 2 Celery workers",
}
"""The engines of `powerx demo --engine`, as the demo announces them."""


def _running_engine(settings: DemoSettings, env: dict[str, str]) -> Any:
    if settings.engine not in ENGINES:
        raise ValueError(f"unknown engine {settings.engine!r}; known: {', '.join(ENGINES)}")
    if settings.engine == "celery":
        from powerx_dev.devstack.distributed import running_distributed_airflow

        return running_distributed_airflow(
            settings.home / "distributed",
            dags_folder=settings.dags_folder,
            env=env,
            api_port=settings.api_port,
            dag_ids=[settings.dag_id],
            # a password of this start only: a server the demo did not start (another
            # Airflow on the port) cannot answer the demo's login
            password=settings.password,
        )
    from powerx_dev.devstack import running_airflow

    return running_airflow(
        settings.home / "airflow",
        dags_folder=settings.dags_folder,
        env=env,
        api_port=settings.api_port,
        dag_ids=[settings.dag_id],
        password=settings.password,
    )


def _metrics_environment(
    settings: DemoSettings, sandbox: str, stack: ExitStack, log: Callable[[str], None]
) -> dict[str, str]:
    """The deployment's monitoring provider for the stack: the demo plan names none, so it
    follows `POWERX_MONITORING_PROVIDER`. With Prometheus, a server scrapes the sandbox every
    second and the `powerx_prometheus` connection points at it."""
    if settings.metrics != "prometheus":
        return {"POWERX_MONITORING_PROVIDER": "powerx"}
    from powerx_dev.prometheus_server import running_prometheus

    log("starting Prometheus (scraping the sandbox's /metrics every second)")
    prometheus = stack.enter_context(running_prometheus([sandbox], scrape_interval="1s"))
    log(f"Prometheus ready at {prometheus}: the gate reads PromQL range queries")
    return {
        "POWERX_MONITORING_PROVIDER": "prometheus",
        "AIRFLOW_CONN_POWERX_PROMETHEUS": prometheus,
    }


def observe(
    airflow: Any, sandbox: str, run_id: str, ledger: Ledger | None, dag_id: str = DAG_ID
) -> RunView:
    """One look at the run."""
    view = RunView(state=airflow.run_state(dag_id, run_id))
    with httpx.Client(base_url=sandbox, timeout=10) as client:
        tenants = client.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    view.fleet = Counter(t["version"] for t in tenants)
    if ledger is None:
        return view
    record = ledger.get_run(run_id)
    if record is None:
        return view
    view.outcome = record.outcome
    upgrades = ledger.actions(run_id, kind="upgrade")
    started = [a.started_at for a in upgrades if a.started_at]
    if started:
        view.first_deploy_at = min(started).timestamp()
    gates = {g.batch_index: g for g in ledger.gate_evaluations(run_id, final_only=True)}
    decisions = {d.batch_index: d for d in ledger.decisions(run_id) if d.kind == "decide"}
    for batch in record.batches or []:
        k = batch["index"]
        mine = [a for a in upgrades if a.batch_index == k]
        item = BatchView(
            k,
            batch["name"],
            len(batch["tenants"]),
            deployed=sum(1 for a in mine if a.state in ("succeeded", "skipped")),
            failed=sum(1 for a in mine if a.state == "failed"),
        )
        if k in gates:
            item.verdict, item.reason = gates[k].phase, gates[k].reason
        if k in decisions:
            item.decision = decisions[k].decision
        view.batches.append(item)
    rollbacks = ledger.actions(run_id, kind="rollback")
    view.rolled_back = sum(1 for a in rollbacks if a.state == "succeeded")
    detail = record.detail or {}
    view.rollback_targets = len(detail.get("rollback_targets") or [])
    view.rollback_ms = (detail.get("rollback_verification") or {}).get("duration_ms")
    view.alerts = [
        r.event.removeprefix("alert.")
        for r in ledger.audit_records(run_id)
        if r.event.startswith("alert.")
    ]
    return view


def report_paths(settings: DemoSettings, run_id: str) -> list[Path]:
    from powerx_upgrade.reporting.store import report_dir

    folder = report_dir(settings.plan_id, run_id, str(settings.reports))
    path = Path(folder.removeprefix("file://"))
    return sorted(path.glob("*")) if path.is_dir() else []


def wait_for_end(
    airflow: Any,
    sandbox: str,
    run_id: str,
    settings: DemoSettings,
    show: Callable[[RunView], None],
    poll: float = 2.0,
) -> RunView:
    """Follow the run until Airflow says it ended (or the timeout)."""
    deadline = time.monotonic() + settings.timeout
    ledger: Ledger | None = None
    view = RunView()
    while True:
        if ledger is None and settings.ledger_ready():
            ledger = Ledger(settings.ledger_url)
        view = observe(airflow, sandbox, run_id, ledger, settings.dag_id)
        show(view)
        if view.state in ("success", "failed"):
            return view
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo run did not end within {settings.timeout:.0f} s")
        airflow.check_alive()
        time.sleep(poll)
