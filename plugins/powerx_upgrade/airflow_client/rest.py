"""Airflow's public REST API (`/api/v2`) as one caller: a bearer token given, or one a login
turns into (renewed once on 401). Every failure is a typed `errors.ApiError` naming the request,
the status and the server's detail; nothing here imports Airflow.

    api = AirflowClient.from_settings(ConnectionSettings.from_env())
    run_id = api.trigger(dag_id_of("crm-sync-standard"), {"target_version": "2.4.0"})
    ControlPlane(api).run(run_id)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from powerx_upgrade.airflow_client.constants import (
    DAG_PREFIX,
    ENV_PASSWORD,
    ENV_TOKEN,
    ENV_USERNAME,
    HITL_SETTLE_SECONDS,
)
from powerx_upgrade.airflow_client.errors import (
    AlreadyAnswered,
    Conflict,
    NotAuthenticated,
    NotFound,
    Unreachable,
    raise_for,
)
from powerx_upgrade.airflow_client.settings import ConnectionSettings

log = logging.getLogger(__name__)

# -- Airflow's REST API -----------------------------------------------------------------------


class AirflowClient:
    """Airflow's public REST API (`/api/v2`) with a bearer token, exactly as a CI pipeline
    uses it. A token obtained from a login is renewed once when a request answers 401.

    :param base_url: the api-server's base URL, e.g. http://localhost:8080.
    :param token: a ready bearer token (kept as is, never renewed).
    :param username: login for `POST /auth/token` when no token is given.
    :param password: its password.
    :param timeout: seconds per HTTP request.
    :param transport: an httpx transport (tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._fixed_token = token
        self._login = (username, password) if username else None
        self._token = token
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    @classmethod
    def from_settings(
        cls, settings: ConnectionSettings, *, transport: httpx.BaseTransport | None = None
    ) -> AirflowClient:
        return cls(
            settings.url,
            token=settings.token,
            username=settings.username,
            password=settings.password,
            timeout=settings.timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------

    def token(self, *, refresh: bool = False) -> str:
        """The bearer token: the given one, or one from `POST /auth/token` (cached)."""
        if self._fixed_token:
            return self._fixed_token
        if self._token is None or refresh:
            if self._login is None:
                raise NotAuthenticated(
                    "POST",
                    f"{self.base_url}/auth/token",
                    None,
                    f"no Airflow token: give --token or ${ENV_TOKEN}, or --username/--password "
                    f"(${ENV_USERNAME}/${ENV_PASSWORD})",
                )
            username, password = self._login
            response = self._send(
                "POST", "/auth/token", json={"username": username, "password": password}
            )
            raise_for("POST", response)
            self._token = response.json()["access_token"]
        return self._token

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unreachable(
                method, f"{self.base_url}{path}", None, f"{type(exc).__name__}: {exc}"
            ) from exc

    def send(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """An authenticated request; returns the answer whatever its status (a login token is
        renewed once on 401).

        :param method: HTTP method.
        :param path: path under the base URL, e.g. `/api/v2/dags`.
        :param headers: extra headers.
        :param kwargs: passed to `httpx.Client.request` (json, params, ...).
        """
        for attempt in (1, 2):
            sent = {
                **(headers or {}),
                "Authorization": f"Bearer {self.token(refresh=attempt == 2)}",
            }
            response = self._send(method, path, headers=sent, **kwargs)
            if response.status_code != 401 or self._fixed_token or self._login is None:
                break
        return response

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """`send`, raising the typed ApiError of any 4xx/5xx answer."""
        response = self.send(method, path, **kwargs)
        raise_for(method, response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        """The JSON of a GET that must succeed."""
        return self.request("GET", path, params=params or None).json()

    # -- DAGs and runs --------------------------------------------------------------------

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self.get(f"/api/v2/dags/{_q(dag_id)}")

    def dag_or_none(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG, None when Airflow does not know it (not parsed yet)."""
        response = self.send("GET", f"/api/v2/dags/{_q(dag_id)}")
        if response.status_code == 404:
            return None
        raise_for("GET", response)
        return response.json()

    def dag_params(self, dag_id: str) -> dict[str, Any]:
        """The DAG's trigger-form defaults (its Params' values, `GET .../details`)."""
        details = self.get(f"/api/v2/dags/{_q(dag_id)}/details")
        return {k: (v or {}).get("value") for k, v in (details.get("params") or {}).items()}

    def import_errors(self, limit: int = 20) -> list[dict[str, Any]]:
        """The dag-processor's import errors."""
        return self.get("/api/v2/importErrors", limit=limit)["import_errors"]

    def unpause(self, dag_id: str) -> dict[str, Any]:
        """Unpause a DAG; returns the DAG as Airflow now has it."""
        return self.request("PATCH", f"/api/v2/dags/{_q(dag_id)}", json={"is_paused": False}).json()

    def reparse_file_of(self, dag_id: str) -> None:
        """Ask the dag-processor to parse the file that defines `dag_id` now (a priority parsing
        request, `PUT /parseDagFile/{file_token}`) instead of at its next scheduled pass."""
        token = self.dag(dag_id).get("file_token")
        if not token:
            raise NotFound("GET", f"{self.base_url}/api/v2/dags/{dag_id}", None, "no file token")
        self.request("PUT", f"/api/v2/parseDagFile/{_q(token)}")

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        note: str | None = None,
        unpause: bool = True,
    ) -> str:
        """Trigger a run like a CI pipeline (`POST /api/v2/dags/{dag_id}/dagRuns`); returns
        the run id.

        :param dag_id: the DAG.
        :param conf: the run's conf (the plan's trigger form: target_version, artifact_*, ...).
        :param run_id: the run id; Airflow makes one when None.
        :param note: a note shown on the run in the UI.
        :param unpause: unpause the DAG first (a paused DAG's runs stay queued).
        """
        if unpause:
            self.unpause(dag_id)
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        if note:
            body["note"] = note
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns"
        return self.request("POST", path, json=body).json()["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.get(f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.run(dag_id, run_id)["state"])

    def runs(
        self,
        dag_id: str = "~",
        *,
        run_id: str | None = None,
        dag_id_prefix: str | None = None,
        limit: int = 20,
    ) -> list[dict[str, Any]]:
        """Runs, newest first (`GET /api/v2/dags/{dag_id}/dagRuns`, `~` for any DAG).

        :param dag_id: the DAG, or `~`.
        :param run_id: only runs whose id contains this (case-insensitive).
        :param dag_id_prefix: with `~`: only DAGs whose id starts with this.
        :param limit: at most this many.
        """
        params: dict[str, Any] = {"limit": limit, "order_by": "-run_after"}
        if run_id:
            params["run_id_pattern"] = run_id
        if dag_id_prefix:
            params["dag_id_prefix_pattern"] = dag_id_prefix
        return self.get(f"/api/v2/dags/{_q(dag_id)}/dagRuns", **params)["dag_runs"]

    def find_run(self, run_id: str) -> dict[str, Any]:
        """The plan run with exactly this id, whichever plan's DAG it belongs to."""
        found = [
            r
            for r in self.runs(run_id=run_id, dag_id_prefix=DAG_PREFIX, limit=50)
            if r["dag_run_id"] == run_id and r["dag_id"].startswith(DAG_PREFIX)
        ]
        if not found:
            raise NotFound(
                "GET",
                f"{self.base_url}/api/v2/dags/~/dagRuns?run_id_pattern={run_id}",
                404,
                f"no run {run_id!r} of any plan DAG ({DAG_PREFIX}*)",
            )
        if len(found) > 1:
            dags = ", ".join(sorted(r["dag_id"] for r in found))
            raise Conflict(
                "GET",
                f"{self.base_url}/api/v2/dags/~/dagRuns?run_id_pattern={run_id}",
                None,
                f"run id {run_id!r} exists in several plan DAGs ({dags}); give --plan",
            )
        return found[0]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run, mapped ones included (one per map index)."""
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances"
        found: list[dict[str, Any]] = []
        while True:
            page = self.get(path, limit=500, offset=len(found))
            found += page["task_instances"]
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """`{task_id: state}`; a mapped task's instances appear as `task_id[map_index]`."""
        return {
            ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]": ti[
                "state"
            ]
            for ti in self.task_instances(dag_id, run_id)
        }

    def task_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> dict[str, Any]:
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}"
        if map_index >= 0:
            path += f"/{map_index}"
        return self.get(path)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom value (decoded when Airflow hands it back as a JSON string), None
        when the task has none (yet)."""
        path = (
            f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}"
            f"/xcomEntries/{_q(key)}"
        )
        response = self.send("GET", path)
        if response.status_code == 404:
            return None
        raise_for("GET", response)
        value = response.json().get("value")
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    # -- human decisions (HITL) -----------------------------------------------------------

    def hitl_details(
        self,
        dag_id: str = "~",
        run_id: str = "~",
        *,
        pending: bool | None = None,
        task_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Human-in-the-loop requests (`GET /api/v2/dags/{dag_id}/dagRuns/{run_id}/hitlDetails`,
        `~` for any).

        :param dag_id: the DAG, or `~`.
        :param run_id: the run, or `~`.
        :param pending: True: only unanswered; False: only answered; None: all.
        :param task_id: only this task's request.
        """
        params: dict[str, Any] = {"limit": 100}
        if pending is not None:
            params["response_received"] = not pending
        if task_id:
            params["task_id"] = task_id
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/hitlDetails"
        return self.get(path, **params)["hitl_details"]

    def hitl_detail(
        self, dag_id: str, run_id: str, task_id: str, *, map_index: int = -1
    ) -> dict[str, Any]:
        """One task's human-in-the-loop request
        (`GET .../taskInstances/{task_id}/{map_index}/hitlDetails`)."""
        return self.get(hitl_path(dag_id, run_id, task_id, map_index))

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
        """Answer a human-in-the-loop request as the logged-in user
        (`PATCH .../taskInstances/{task_id}/{map_index}/hitlDetails`); returns Airflow's reply
        (`chosen_options`, `responded_by`, `responded_at`).

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the waiting task, e.g. `batch_2.pause`.
        :param chosen: the option(s) picked, e.g. "Resume".
        :param map_index: -1 for an unmapped task.
        :param params_input: values of the request's form fields, if it has any.
        :param settle: answer no sooner than this many seconds after the request was written.
            Airflow 3.3's scheduler can fail a task whose answer arrives before it has processed
            the exit of the worker that parked the task (the resumed try and the parked one share
            a key); humans never answer that fast, scripts do.
        """
        request = self.hitl_detail(dag_id, run_id, task_id, map_index=map_index)
        if request.get("response_received"):
            raise AlreadyAnswered(
                f"{task_id} of {run_id} was already answered: {request.get('chosen_options')} "
                f"by {request.get('responded_by_user')}"
            )
        options = [chosen] if isinstance(chosen, str) else list(chosen)
        return self.patch_hitl(
            dag_id,
            run_id,
            task_id,
            options,
            map_index=map_index,
            params_input=params_input,
            created_at=request.get("created_at"),
            settle=settle,
        )

    def patch_hitl(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        chosen: Sequence[str],
        *,
        map_index: int = -1,
        params_input: Mapping[str, Any] | None = None,
        created_at: str | None = None,
        settle: float = HITL_SETTLE_SECONDS,
    ) -> dict[str, Any]:
        """Answer a request known to wait, written at `created_at`, without reading it first
        (`PATCH .../taskInstances/{task_id}/{map_index}/hitlDetails`); see `answer_hitl`."""
        settle_after(created_at, settle)
        body = {"chosen_options": list(chosen), "params_input": dict(params_input or {})}
        path = hitl_path(dag_id, run_id, task_id, map_index)
        return dict(self.request("PATCH", path, json=body).json() or {})

    def waiting(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's unanswered human-in-the-loop requests, each with its task's id and map
        index at the top (`flat_hitl`)."""
        return [flat_hitl(item) for item in self.hitl_details(dag_id, run_id, pending=True)]

    # -- pools ----------------------------------------------------------------------------

    def pool(self, name: str = "default_pool") -> dict[str, Any]:
        """A pool's slots: `running_slots`, `deferred_slots`, `queued_slots`, `open_slots`."""
        return self.get(f"/api/v2/pools/{_q(name)}")


# -- helpers ----------------------------------------------------------------------------------


def quote_part(part: str) -> str:
    """One path segment of a URL (`~`, Airflow's "any", stays as it is)."""
    return quote(part, safe="~")


_q = quote_part


def hitl_path(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    return (
        f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/"
        f"{_q(task_id)}/{map_index}/hitlDetails"
    )


def flat_hitl(item: dict[str, Any]) -> dict[str, Any]:
    """A HITL request with its task's id and map index at the top (Airflow nests them in
    `task_instance`)."""
    task = item.get("task_instance") or {}
    map_index = item.get("map_index", task.get("map_index"))
    return {
        **item,
        "task_id": item.get("task_id") or task.get("task_id"),
        "map_index": -1 if map_index is None else int(map_index),
    }


def loopback_url(base_url: str | None, port: int | None, *, ssl: bool = False) -> str:
    """The api-server as seen from itself: 127.0.0.1 on its own port, under the path of
    `[api] base_url` (a server behind a proxy at `/airflow` still serves that path)."""
    path = urlsplit(base_url).path.rstrip("/") if base_url else ""
    return f"{'https' if ssl else 'http'}://127.0.0.1:{port or 8080}{path}"


def settle_after(created_at: str | None, settle: float) -> None:
    """Sleep until `settle` seconds after `created_at` (see `HITL_SETTLE_SECONDS`)."""
    age = _age_seconds(created_at)
    if age is not None and age < settle:
        time.sleep(min(settle, settle - age))


def _age_seconds(timestamp: str | None) -> float | None:
    """Seconds since an ISO-8601 timestamp of the API (None when there is none). A timestamp that
    does not parse is logged and taken as "just now", so the caller waits the whole settle time
    rather than none."""
    if not timestamp:
        return None
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        log.warning("Airflow sent an unreadable timestamp %r: waiting as if it were now", timestamp)
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (datetime.now(UTC) - moment).total_seconds()
