"""A running stack: its address, login, components and the REST helpers the demo and the stack
tests drive it with (through the same client as `powerx plugin`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from powerx_dev.devstack.components import Component
from powerx_dev.devstack.environment import StackSettings
from powerx_dev.devstack.errors import AirflowStackError, AirflowStackTimeout
from powerx_dev.processes import tail
from powerx_upgrade.airflow_client import (
    HITL_SETTLE_SECONDS,
    AirflowClient,
    AlreadyAnswered,
    ApiError,
)

HEALTH_KEYS = {
    "scheduler": "scheduler",
    "triggerer": "triggerer",
    "dag-processor": "dag_processor",
}
"""Component -> its entry in `GET /api/v2/monitor/health`."""

TERMINAL_RUN_STATES = frozenset({"success", "failed"})

T = TypeVar("T")


class StackApi(AirflowClient):
    """The REST client of `powerx plugin`, raising AirflowStackError like the rest of the
    launcher (the message is the client's: request, status, the server's detail)."""

    def token(self, *, refresh: bool = False) -> str:
        try:
            return super().token(refresh=refresh)
        except ApiError as exc:
            raise AirflowStackError(str(exc)) from exc

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return super().send(method, path, **kwargs)
        except ApiError as exc:
            raise AirflowStackError(str(exc)) from exc

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return super().request(method, path, **kwargs)
        except ApiError as exc:
            raise AirflowStackError(str(exc)) from exc


@dataclass
class AirflowStack:
    """A running stack: its address, login, components and REST helpers.

    All helpers go through the public REST API (`/api/v2`) with a bearer token from
    `POST /auth/token`, exactly as a CI pipeline or a script would.

    :param settings: home, address and login of the stack.
    :param components: the running components by name.
    :param timings: seconds spent on `migrate`, `start` (to healthy) and `dags` (to parsed).
    """

    settings: StackSettings
    components: dict[str, Component] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _api: StackApi | None = field(default=None, init=False, repr=False)

    # -- address and login -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def login(self) -> tuple[str, str]:
        return self.settings.username, self.settings.password

    @property
    def api(self) -> StackApi:
        """The REST client (the same one the `powerx plugin` commands use), logged in as the
        stack's admin."""
        if self._api is None:
            username, password = self.login
            self._api = StackApi(self.base_url, username=username, password=password)
        return self._api

    def token(self, *, refresh: bool = False) -> str:
        """A JWT for the REST API (`POST /auth/token` with the admin login), cached."""
        return self.api.token(refresh=refresh)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An authenticated request (the token is renewed once on 401); raises on 4xx/5xx.

        :param method: HTTP method.
        :param path: path under the base URL, e.g. `/api/v2/dags`.
        :param kwargs: passed to `httpx.Client.request` (json, params, ...).
        """
        return self.api.request(method, path, **kwargs)

    def get(self, path: str, **params: Any) -> Any:
        return self.api.get(path, **params)

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    # -- health ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """`GET /api/v2/monitor/health` (needs no login)."""
        return httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()

    def unhealthy(self) -> list[str]:
        """Components that are not healthy yet (empty when the whole stack is)."""
        try:
            health = self.health()
        except (httpx.HTTPError, ValueError):
            return ["api-server"]
        kinds = {HEALTH_KEYS[c.kind] for c in self.components.values() if c.kind in HEALTH_KEYS}
        wanted = ["metadatabase", *sorted(kinds)]
        return [key for key in wanted if (health.get(key) or {}).get("status") != "healthy"]

    def check_alive(self) -> None:
        """Raise AirflowStackError with its log tail if any component has exited."""
        for component in self.components.values():
            code = component.process.poll()
            if code is not None:
                raise AirflowStackError(
                    f"airflow {component.name} exited with code {code}:\n{tail(component.log_path)}"
                )

    def wait_for(
        self,
        probe: Callable[[], T],
        *,
        timeout: float,
        interval: float = 1.0,
        what: str = "the condition",
        describe: Callable[[], str] | None = None,
    ) -> T:
        """Call `probe` until it returns something truthy and return that; a component dying
        or the timeout passing raises (with `describe()` in the message).

        :param probe: the check; its truthy result ends the wait.
        :param timeout: seconds to wait at most.
        :param interval: seconds between checks.
        :param what: the awaited thing, for the error message.
        :param describe: extra state for the error message.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = probe()
            if value:
                return value
            if time.monotonic() >= deadline:
                extra = f"\n{describe()}" if describe else ""
                raise AirflowStackTimeout(f"waited {timeout:g}s for {what}{extra}")
            time.sleep(interval)

    def wait_until_healthy(self, timeout: float = 180) -> None:
        """Wait until the metadatabase and every started component report healthy."""
        self.wait_for(
            lambda: not self.unhealthy(),
            timeout=timeout,
            interval=0.5,
            what=f"a healthy stack at {self.base_url}",
            describe=lambda: f"unhealthy: {self.unhealthy()}\n{self.log_tails()}",
        )

    def wait_for_dags(self, dag_ids: Sequence[str] = (), timeout: float = 120) -> list[str]:
        """Wait until the dag-processor has parsed the folder: every one of `dag_ids` is known
        to the API (or, without `dag_ids`, any DAG is). Returns the known DAG ids."""

        def known() -> list[str]:
            dags = [d["dag_id"] for d in self.get("/api/v2/dags", limit=1000)["dags"]]
            if dag_ids:
                return dags if set(dag_ids) <= set(dags) else []
            return dags

        return self.wait_for(
            known,
            timeout=timeout,
            interval=1.0,
            what=f"the DAGs {list(dag_ids) or '(any)'} to be parsed",
            describe=self._import_errors,
        )

    def _import_errors(self) -> str:
        try:
            errors = self.get("/api/v2/importErrors")["import_errors"]
        except AirflowStackError as exc:
            return str(exc)
        return "import errors:\n" + "\n".join(
            f"{e['filename']}: {e['stack_trace'][-800:]}" for e in errors
        )

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(
            f"--- {c.name} ({c.log_path}) ---\n{tail(c.log_path, lines)}"
            for c in self.components.values()
        )

    # -- DAGs and runs ---------------------------------------------------------------------

    def unpause(self, dag_id: str) -> None:
        self.api.unpause(dag_id)

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        note: str | None = None,
        unpause: bool = True,
    ) -> str:
        """Trigger a run like a CI pipeline; returns the run id (see `AirflowClient.trigger`)."""
        return self.api.trigger(dag_id, conf, run_id=run_id, note=note, unpause=unpause)

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api.run(dag_id, run_id)

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api.run_state(dag_id, run_id)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run, mapped ones included (one per map index)."""
        return self.api.task_instances(dag_id, run_id)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """`{task_id: state}`; a mapped task's instances appear as `task_id[map_index]`."""
        return self.api.task_states(dag_id, run_id)

    def task_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> dict[str, Any]:
        return self.api.task_instance(dag_id, run_id, task_id, map_index)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        """Wait until the run is `success` or `failed`; returns that state."""
        return self.wait_for(
            lambda: (s := self.run_state(dag_id, run_id)) in TERMINAL_RUN_STATES and s,
            timeout=timeout,
            what=f"run {run_id} of {dag_id} to finish",
            describe=lambda: self.describe_run(dag_id, run_id),
        )

    def wait_for_task(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: Iterable[str],
        *,
        timeout: float = 300,
        interval: float = 1.0,
    ) -> str:
        """Wait until `task_id` (every map index of it) is in one of `states`; returns the
        state of its first instance."""
        wanted = set(states)

        def probe() -> str | None:
            found = [
                ti["state"]
                for ti in self.task_instances(dag_id, run_id)
                if ti["task_id"] == task_id
            ]
            return found[0] if found and all(s in wanted for s in found) else None

        return self.wait_for(
            probe,
            timeout=timeout,
            interval=interval,
            what=f"{task_id} of {run_id} to be {sorted(wanted)}",
            describe=lambda: self.describe_run(dag_id, run_id),
        )

    def describe_run(self, dag_id: str, run_id: str) -> str:
        """The run's state and its task states, for error messages."""
        try:
            states = self.task_states(dag_id, run_id)
            run_state = self.run_state(dag_id, run_id)
        except AirflowStackError as exc:
            return f"(cannot read the run: {exc})"
        rows = "\n".join(f"  {task}: {state}" for task, state in states.items())
        return f"run {run_id}: {run_state}\n{rows}"

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, *, map_index: int = -1, lines: int = 60
    ) -> str:
        """The tail of a task's log files on disk (every try), for diagnostics."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            folder = folder / f"map_index={map_index}"
        files = sorted(folder.glob("attempt=*.log"))
        return "\n".join(f"--- {f.name} ---\n{tail(f, lines)}" for f in files) or (
            f"(no log under {folder})"
        )

    # -- human decisions (HITL) ------------------------------------------------------------

    def hitl_details(
        self,
        dag_id: str = "~",
        run_id: str = "~",
        *,
        pending: bool | None = None,
        task_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Human-in-the-loop requests (see `AirflowClient.hitl_details`)."""
        return self.api.hitl_details(dag_id, run_id, pending=pending, task_id=task_id)

    def hitl_detail(
        self, dag_id: str, run_id: str, task_id: str, *, map_index: int = -1
    ) -> dict[str, Any]:
        """One task's human-in-the-loop request."""
        return self.api.hitl_detail(dag_id, run_id, task_id, map_index=map_index)

    def wait_for_hitl(
        self, dag_id: str, run_id: str, task_id: str, *, timeout: float = 300
    ) -> dict[str, Any]:
        """Wait until `task_id` asks for a human answer (its task instance `awaiting_input`,
        its request written); returns the request. Raises at once if the run ends first."""

        def probe() -> dict[str, Any] | None:
            requests = self.hitl_details(dag_id, run_id, pending=True, task_id=task_id)
            if requests and self.task_instance(dag_id, run_id, task_id)["state"] == (
                "awaiting_input"
            ):
                return requests[0]
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL_RUN_STATES:
                raise AirflowStackError(
                    f"run {run_id} ended {state} before {task_id} asked for an answer\n"
                    f"{self.describe_run(dag_id, run_id)}"
                )
            return None

        return self.wait_for(
            probe,
            timeout=timeout,
            what=f"{task_id} of {run_id} to wait for an answer",
            describe=lambda: self.describe_run(dag_id, run_id),
        )

    def answer_hitl(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        chosen: str | Sequence[str],
        *,
        map_index: int = -1,
        params_input: Mapping[str, Any] | None = None,
        settle: float = HITL_SETTLE_SECONDS,
    ) -> dict[str, Any]:
        """Answer a human-in-the-loop request as the admin (see `AirflowClient.answer_hitl`,
        which also explains `settle`)."""
        try:
            return self.api.answer_hitl(
                dag_id,
                run_id,
                task_id,
                chosen,
                map_index=map_index,
                params_input=params_input,
                settle=settle,
            )
        except AlreadyAnswered as exc:
            raise AirflowStackError(str(exc)) from exc

    # -- pools -----------------------------------------------------------------------------

    def pool(self, name: str = "default_pool") -> dict[str, Any]:
        """A pool's slots: `running_slots`, `deferred_slots`, `queued_slots`, `open_slots`."""
        return self.api.pool(name)

    def describe(self) -> str:
        """Where the stack is and how to log in, for humans."""
        username, password = self.login
        return (
            f"Airflow UI and API: {self.base_url}  (login {username} / {password})\n"
            f"AIRFLOW_HOME: {self.home}  (component logs in {self.settings.log_dir})"
        )
