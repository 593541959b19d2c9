"""`running_distributed_airflow`: the distributed profile (see `profiles`): PostgreSQL, Redis,
CeleryExecutor with Celery workers, schedulers in HA mode, the dag-processor, the triggerer and
the api-server, all native processes on free ports; healthy before it yields, always stopped.

    with running_distributed_airflow(home, dags_folder=ROOT / "dags", env=connections) as stack:
        run_id = stack.trigger(DAG_ID, {"target_version": "2.4.0"})
        stack.kill("worker-1")          # SIGKILL the worker and every process under it
        stack.restart("worker-1")
        stack.stop("triggerer")         # SIGTERM, a grace period, then SIGKILL: a restart's stop
        stack.restart("triggerer")
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from powerx_dev.devstack.components import Component, start_component, stop_components
from powerx_dev.devstack.environment import StackSettings, migrate, prepare_home, stack_environment
from powerx_dev.devstack.errors import AirflowStackError
from powerx_dev.devstack.profiles import (
    LEDGER_DB,
    METADATA_DB,
    DistributedShape,
    distributed_settings,
)
from powerx_dev.devstack.stack import AirflowStack
from powerx_dev.processes import free_port, tail

CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"


@dataclass
class DistributedStack(AirflowStack):
    """A running distributed stack: the REST helpers of `AirflowStack`, plus its servers, the
    settings it runs with, and killing/restarting single components (the stack tests' faults).

    :param applied: the profile's settings every component runs with (`distributed_settings`).
    :param ledger_url: the ledger database (PostgreSQL).
    :param metadata_url: Airflow's metadata database (PostgreSQL).
    :param broker_url: the Celery broker (Redis).
    :param shape: how many schedulers and workers, their concurrency and timeouts.
    """

    applied: dict[str, str] = field(default_factory=dict)
    ledger_url: str = ""
    metadata_url: str = ""
    broker_url: str = ""
    shape: DistributedShape = field(default_factory=DistributedShape)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    launch: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict, repr=False)
    killed: dict[str, Component] = field(default_factory=dict, repr=False)

    @property
    def workers(self) -> list[str]:
        return sorted(n for n, c in self.components.items() if c.kind == "celery worker")

    @property
    def schedulers(self) -> list[str]:
        return sorted(n for n, c in self.components.items() if c.kind == "scheduler")

    def start(
        self, name: str, args: Sequence[str], extra_env: Mapping[str, str] | None = None
    ) -> None:
        """Start one component (`airflow <args>`) and remember how, for `restart`."""
        extra_env = dict(extra_env or {})
        self.launch[name] = (list(args), extra_env)
        self.components[name] = start_component(
            name, self.env, self.settings.log_dir, args=args, extra_env=extra_env
        )

    def kill(self, name: str) -> list[int]:
        """SIGKILL a component and every process under it (a worker's pool, task supervisors and
        tasks: what a machine or container dying does); returns the pids. The stack stops
        counting it as a component (`check_alive` ignores it) until `restart`."""
        component = self.components.pop(name)
        self.killed[name] = component
        pids = [component.pid, *descendants(component.pid)]
        _kill(pids)
        component.process.wait(timeout=10)
        return pids

    def stop(self, name: str, grace: float = 10.0) -> None:
        """Stop a component as an operator's restart does (SIGTERM to its process group, up to
        `grace` seconds to shut down cleanly, then SIGKILL): unlike `kill`, the component may
        deregister itself (a scheduler ends its job, a triggerer releases its triggers). The
        stack stops counting it until `restart`."""
        component = self.components.pop(name)
        self.killed[name] = component
        stop_components([component], None, grace=grace)

    def restart(self, name: str) -> None:
        """Start a killed component again, with its arguments and environment."""
        self.killed.pop(name, None)
        args, extra_env = self.launch[name]
        self.start(name, args, extra_env)

    def alive_jobs(self, job_type: str) -> list[dict[str, Any]]:
        """Airflow's alive jobs of a type (`SchedulerJob`, `TriggererJob`, ...), from REST."""
        return list(self.get("/api/v2/jobs", job_type=job_type, is_alive=True)["jobs"])

    def ping_workers(self, timeout: float = 1.0) -> list[str]:
        """The Celery workers that answer a broadcast ping through the broker (`celery@...`)."""
        from celery import Celery

        app = Celery(broker=self.broker_url)
        try:
            replies = app.control.ping(timeout=timeout) or []
        finally:
            app.close()
        return sorted(name for reply in replies for name in reply)

    def wait_until_distributed(self, timeout: float) -> None:
        """Every scheduler has an alive job, every worker answers the broker's ping."""
        expected_workers = set(self.workers)  # hostnames `worker-N@<host>`
        self.wait_for(
            lambda: (
                len(self.alive_jobs("SchedulerJob")) >= len(self.schedulers)
                and expected_workers <= {w.split("@")[0] for w in self.ping_workers()}
            ),
            timeout=timeout,
            what=f"{len(self.schedulers)} schedulers and the workers {sorted(expected_workers)}",
            describe=self.log_tails,
        )

    def worker_running(self, ti_id: str) -> str | None:
        """The worker whose process tree runs the task instance `ti_id` (Airflow titles the
        task's supervisor `airflow supervisor: <ti id>` and the task `airflow worker -- <ti
        id>`), or None."""
        needle = ti_id.encode()
        for name in self.workers:
            for pid in descendants(self.components[name].pid):
                with contextlib.suppress(OSError):
                    title = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if title.startswith(b"airflow ") and needle in title:
                        return name
        return None

    def task_processes(self, ti_id: str) -> tuple[str, int, list[int]] | None:
        """The processes running task instance `ti_id` on a worker: (worker, the task
        supervisor's pid, the pids under it: the task process itself), or None while no worker
        runs it. Airflow titles the supervisor `airflow supervisor: <ti id>`; the task process
        is its child (what a task's OOM kill or segfault hits, not the worker)."""
        needle = ti_id.encode()
        for name in self.workers:
            for pid in descendants(self.components[name].pid):
                with contextlib.suppress(OSError):
                    title = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if title.startswith(b"airflow supervisor") and needle in title:
                        under = descendants(pid)
                        return (name, pid, under) if under else None
        return None

    def kill_pids(self, pids: Sequence[int]) -> None:
        """SIGKILL single processes of the stack (e.g. a task process, see `task_processes`)."""
        _kill(list(pids))


def descendants(root: int) -> list[int]:
    """Every process under `root` (Linux /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    queue = list(children.get(root, []))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def running_distributed_airflow(
    home: str | os.PathLike[str],
    *,
    dags_folder: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    api_port: int | None = None,
    host: str = "127.0.0.1",
    username: str = "admin",
    password: str = "admin",
    dag_ids: Sequence[str] = (),
    shape: DistributedShape | None = None,
    postgres_dir: str | os.PathLike[str] | None = None,
    parallelism: int = 8,
    dag_refresh_seconds: int = 10,
    startup_timeout: float = 300,
    stop_grace: float = 10,
) -> Iterator[DistributedStack]:
    """Start the distributed profile, wait until it is healthy (REST health, an alive job per
    scheduler, a ping answer from every Celery worker) and its DAGs are parsed, yield it, and
    stop everything it started (Airflow, Redis, PostgreSQL) when the block ends, also on errors.

    The parameters are those of `running_airflow`, plus `shape` (counts and timeouts). The
    `powerx_ledger` connection points at the PostgreSQL ledger database unless `env` names
    another one. `home` holds the PostgreSQL cluster (`postgres/`), Redis (`redis/`) and
    AIRFLOW_HOME; a reused home keeps its databases (metadata and ledger). `postgres_dir`
    puts the cluster elsewhere: as root the server runs as the user `pgserver`, which must be
    able to reach it for as long as it runs (pytest makes /tmp/pytest-of-<user>/ 0700 again
    whenever another pytest session starts, so tests keep the cluster outside that tree).
    """
    from powerx_dev.servers.postgres import running_postgres
    from powerx_dev.servers.redis import running_redis

    shape = shape or DistributedShape()
    root = Path(home).resolve()
    settings = StackSettings(
        home=root / "airflow",
        host=host,
        api_port=api_port or free_port(host),
        username=username,
        password=password,
        stack_id=uuid.uuid4().hex,
    )
    prepare_home(settings)
    started = time.monotonic()
    with ExitStack() as servers:
        pg_dir = Path(postgres_dir).resolve() if postgres_dir else root / "postgres"
        postgres = servers.enter_context(running_postgres(pg_dir))
        redis = servers.enter_context(running_redis(root / "redis"))
        applied = distributed_settings(
            metadata_url=_database(postgres, METADATA_DB),
            broker_url=redis.url(0),
            ledger_url=_database(postgres, LEDGER_DB),
            shape=shape,
        )
        stack = DistributedStack(
            settings,
            applied=applied,
            ledger_url=postgres.url(LEDGER_DB),
            metadata_url=postgres.url(METADATA_DB),
            broker_url=redis.url(0),
            shape=shape,
        )
        _create_ledger(stack.ledger_url)
        stack.timings["servers"] = time.monotonic() - started
        stack.env = stack_environment(
            settings,
            dags_folder=Path(dags_folder).resolve(),
            env={**applied, **_log_ports(host), **(env or {})},
            parallelism=parallelism,
            dag_refresh_seconds=dag_refresh_seconds,
        )
        try:
            _start(stack, settings, shape, startup_timeout, started)
            stack.wait_for_dags(dag_ids, timeout=_left(startup_timeout, started))
            stack.timings["dags"] = time.monotonic() - started
            yield stack
        finally:
            stack.close()
            everything = [*stack.components.values(), *stack.killed.values()]
            # Celery workers, the api-server and task processes retitle themselves
            # (setproctitle), which overwrites the environment `sweep` looks for: their
            # descendants are collected by parentage before the stop, and killed after it.
            under = [pid for c in everything for pid in descendants(c.pid)]
            stop_components(everything, settings.stack_id, grace=stop_grace)
            _kill(under)


def _start(
    stack: DistributedStack,
    settings: StackSettings,
    shape: DistributedShape,
    startup_timeout: float,
    started: float,
) -> None:
    stack.timings["migrate"] = migrate(stack.env, settings.log_dir, timeout=startup_timeout)
    stack.start("api-server", ["api-server"])
    for n in range(1, shape.schedulers + 1):
        stack.start(f"scheduler-{n}", ["scheduler"])
    stack.start("dag-processor", ["dag-processor"])
    stack.start("triggerer", ["triggerer"], _log_ports(settings.host, "TRIGGERER"))
    for n in range(1, shape.workers + 1):
        name = f"worker-{n}"
        args = ["celery", "worker", "--celery-hostname", f"{name}@%h"]
        args += ["--concurrency", str(shape.worker_concurrency)]
        args += ["--pid", str(settings.home / f"{name}.pid")]  # default: one pid file for all
        stack.start(name, args, _log_ports(settings.host, "WORKER"))
    stack.wait_until_healthy(timeout=_left(startup_timeout, started))
    stack.token()
    stack.wait_until_distributed(timeout=_left(startup_timeout, started))
    stack.timings["start"] = time.monotonic() - started


def _database(postgres: Any, name: str) -> str:
    """The URL of database `name`, created unless a reused home has it already."""
    import psycopg

    try:
        return str(postgres.create_database(name))
    except psycopg.errors.DuplicateDatabase:
        return str(postgres.url(name))


def _create_ledger(url: str) -> None:
    """The ledger's schema, made before any task runs (the compose file's init step does the
    same), so that no two tasks on two workers race to create it."""
    from powerx_upgrade.ledger import Ledger

    Ledger(url).close()


def _log_ports(host: str, which: str = "") -> dict[str, str]:
    """Free ports for the log servers (Airflow's defaults, 8793/8794, would clash with another
    stack or between the two workers)."""
    kinds = [which] if which else ["WORKER", "TRIGGERER"]
    return {f"AIRFLOW__LOGGING__{k}_LOG_SERVER_PORT": str(free_port(host)) for k in kinds}


def _left(timeout: float, started: float) -> float:
    return max(10.0, timeout - (time.monotonic() - started))


def component_log(stack: DistributedStack, name: str, lines: int = 30) -> str:
    component = stack.components.get(name) or stack.killed.get(name)
    if component is None:
        raise AirflowStackError(f"no component {name!r}; known: {sorted(stack.components)}")
    return tail(component.log_path, lines)
