"""HTTP clients of Airflow's REST API (`/api/v2`) and of the project's control-plane API
(`/internal/version/upgrade`), shared by the `powerx plugin` commands and the local stack
launcher (`devstack`). Every failure is a typed `ApiError` naming the request, the status and
the server's own detail; nothing here imports Airflow.

    api = AirflowClient.from_settings(ConnectionSettings.from_env())
    run_id = api.trigger("plugin_upgrade__crm-sync-standard", {"target_version": "2.4.0"})
    ControlPlane(api).run(run_id)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_AIRFLOW_URL = "http://localhost:8080"
CONTROL_PLANE_PREFIX = "/internal/version/upgrade"
CLIENT_HEADER = "X-PowerX-Client"
"""Sent as `cli` on every control-plane call: the ledger records such requests as via `cli`."""
DAG_PREFIX = "plugin_upgrade__"

ENV_URL = "POWERX_AIRFLOW_URL"
ENV_TOKEN = "POWERX_AIRFLOW_TOKEN"
ENV_USERNAME = "POWERX_AIRFLOW_USERNAME"
ENV_PASSWORD = "POWERX_AIRFLOW_PASSWORD"
ENV_APPROVAL_TOKEN = "POWERX_APPROVAL_TOKEN"

HITL_SETTLE_SECONDS = 5.0
"""How long `answer_hitl` lets a fresh request settle before answering it (see there)."""


def dag_id_of(plan_id: str) -> str:
    """The DAG id of a plan (one DAG per plan)."""
    return f"{DAG_PREFIX}{plan_id}"


def plan_id_of(dag_id: str) -> str | None:
    """The plan id of a plan's DAG id, None for any other DAG."""
    return dag_id.removeprefix(DAG_PREFIX) if dag_id.startswith(DAG_PREFIX) else None


# -- errors -----------------------------------------------------------------------------------


class ApiError(Exception):
    """A request failed: which one, the HTTP status (None when no answer came) and the
    server's detail.

    :param method: the HTTP method.
    :param url: the full URL.
    :param status: the HTTP status, None when the server could not be reached.
    :param detail: what the server (or the transport) said.
    :param code: a machine-readable reason when the server gave one (approval refusals).
    """

    def __init__(
        self, method: str, url: str, status: int | None, detail: str, *, code: str | None = None
    ):
        self.method, self.url, self.status, self.detail, self.code = (
            method,
            url,
            status,
            detail,
            code,
        )
        answered = f"answered {status}" if status is not None else "failed"
        super().__init__(f"{method} {url} {answered}: {detail}")


class Unreachable(ApiError):
    """No HTTP answer at all (connection refused, DNS, timeout)."""


class NotAuthenticated(ApiError):
    """401: no token, a bad login or an expired token."""


class Forbidden(ApiError):
    """403: the user lacks the permission (or, with `code`, an approval token was refused)."""


class NotFound(ApiError):
    """404: no such DAG, run, task or route."""


class Conflict(ApiError):
    """409 / 412 / 428: the request clashes with the current state."""


class Invalid(ApiError):
    """400 / 413 / 422: the request itself was refused as malformed."""


class ServerError(ApiError):
    """5xx."""


class ControlPlaneMissing(ApiError):
    """The Airflow at this URL does not serve the control-plane API (the plugin is not
    installed): its routes answer Starlette's bare `404 Not Found`."""


class AlreadyAnswered(Exception):
    """A human-in-the-loop request was answered before us."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: Invalid,
    401: NotAuthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: Conflict,
    413: Invalid,
    422: Invalid,
    428: Conflict,
}


def error_detail(response: httpx.Response) -> tuple[str, str | None]:
    """The server's detail of an error answer, readable, and its code if it gave one.

    Handles FastAPI's shapes: `{"detail": "text"}`, `{"detail": {"code", "message"}}`,
    `{"detail": [{"loc"|"path", "msg"|"message"}, ...]}` (validation errors).
    """
    try:
        body = response.json()
    except ValueError:
        return (response.text.strip()[:500] or response.reason_phrase), None
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, str):
        return detail, None
    if isinstance(detail, dict):
        message = detail.get("message") or detail.get("msg") or json.dumps(detail)
        return str(message), detail.get("code")
    if isinstance(detail, list):
        return "; ".join(_problem(item) for item in detail), None
    return json.dumps(detail)[:500], None


def _problem(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = item.get("path") or ".".join(str(p) for p in item.get("loc") or ())
    message = item.get("message") or item.get("msg") or json.dumps(item)
    line = f" (line {item['line']})" if item.get("line") else ""
    return f"{where}: {message}{line}" if where else f"{message}{line}"


def raise_for(method: str, response: httpx.Response) -> None:
    """Raise the typed ApiError of an error answer; nothing for a success."""
    if not response.is_error:
        return
    detail, code = error_detail(response)
    kind = _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else ApiError
    raise kind(method, str(response.request.url), response.status_code, detail, code=code)


# -- connection settings ----------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionSettings:
    """Where Airflow is and how to log in: a ready token, or a username and password that
    `POST /auth/token` turns into one.

    :param url: the api-server's base URL.
    :param token: a bearer token for the REST API.
    :param username: login for `POST /auth/token` (when no token is given).
    :param password: its password.
    :param timeout: seconds per HTTP request.
    """

    url: str = DEFAULT_AIRFLOW_URL
    token: str | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
    ) -> ConnectionSettings:
        """Flags first, then `POWERX_AIRFLOW_*` variables, then the defaults."""
        env = os.environ if env is None else env
        return cls(
            url=(url or env.get(ENV_URL) or DEFAULT_AIRFLOW_URL).rstrip("/"),
            token=token or env.get(ENV_TOKEN) or None,
            username=username or env.get(ENV_USERNAME) or None,
            password=password or env.get(ENV_PASSWORD) or None,
            timeout=timeout,
        )


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

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{_q(dag_id)}", json={"is_paused": False})

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
        path = hitl_path(dag_id, run_id, task_id, map_index)
        request = self.get(path)
        if request.get("response_received"):
            raise AlreadyAnswered(
                f"{task_id} of {run_id} was already answered: {request.get('chosen_options')} "
                f"by {request.get('responded_by_user')}"
            )
        age = _age_seconds(request.get("created_at"))
        if age is not None and age < settle:
            time.sleep(settle - age)
        options = [chosen] if isinstance(chosen, str) else list(chosen)
        body = {"chosen_options": options, "params_input": dict(params_input or {})}
        return self.request("PATCH", path, json=body).json()

    # -- pools ----------------------------------------------------------------------------

    def pool(self, name: str = "default_pool") -> dict[str, Any]:
        """A pool's slots: `running_slots`, `deferred_slots`, `queued_slots`, `open_slots`."""
        return self.get(f"/api/v2/pools/{_q(name)}")


# -- the control-plane API --------------------------------------------------------------------


class ControlPlane:
    """The project's API at `/internal/version/upgrade` (mounted in Airflow's api-server by the
    `powerx_upgrade` plugin), with the same bearer token as the REST API. Operations that need
    an approval token send it as `X-Approval-Token`; every call says `X-PowerX-Client: cli`.

    :param api: the REST client whose address and token are used.
    """

    def __init__(self, api: AirflowClient):
        self.api = api

    def _call(
        self,
        method: str,
        path: str,
        *,
        approval: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {CLIENT_HEADER: "cli"}
        if approval:
            headers["X-Approval-Token"] = approval
        response = self.api.send(method, f"{CONTROL_PLANE_PREFIX}{path}", headers=headers, **kwargs)
        if response.status_code == 404 and error_detail(response)[0] == "Not Found":
            raise ControlPlaneMissing(
                method,
                str(response.request.url),
                404,
                f"Airflow at {self.api.base_url} does not serve the control-plane API "
                f"({CONTROL_PLANE_PREFIX}): is the powerx-grey-upgrade package installed in its "
                "api-server?",
            )
        raise_for(method, response)
        return response

    def run(self, run_id: str) -> dict[str, Any]:
        """`GET /runs/{run_id}`: batches, verdicts, decisions, controls, outcome."""
        return self._call("GET", f"/runs/{_q(run_id)}").json()

    def rollback(self, body: Mapping[str, Any], *, approval: str | None) -> dict[str, Any]:
        """`POST /rollback` `{run_id | plan_id, scope?, reason}`."""
        return self._call("POST", "/rollback", json=dict(body), approval=approval).json()

    def adjust(
        self, run_id: str, adjust: Mapping[str, Any], reason: str, *, approval: str | None
    ) -> dict[str, Any]:
        """`PATCH /runs/{run_id}` `{adjust, reason}`."""
        body = {"adjust": dict(adjust), "reason": reason}
        return self._call("PATCH", f"/runs/{_q(run_id)}", json=body, approval=approval).json()

    def decide(
        self,
        run_id: str,
        decision: str,
        *,
        reason: str,
        batch: int | None = None,
        approval: str | None,
    ) -> dict[str, Any]:
        """`POST /runs/{run_id}/decisions` `{decision, batch?, reason}`."""
        body: dict[str, Any] = {"decision": decision, "reason": reason}
        if batch is not None:
            body["batch"] = batch
        path = f"/runs/{_q(run_id)}/decisions"
        return self._call("POST", path, json=body, approval=approval).json()

    def report(self, run_id: str, fmt: str = "md") -> str:
        """`GET /runs/{run_id}/report?format=...`: the stored report's text."""
        return self._call("GET", f"/runs/{_q(run_id)}/report", params={"format": fmt}).text


# -- helpers ----------------------------------------------------------------------------------


def _q(part: str) -> str:
    return quote(part, safe="~")


def hitl_path(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    return (
        f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/"
        f"{_q(task_id)}/{map_index}/hitlDetails"
    )


def _age_seconds(timestamp: str | None) -> float | None:
    """Seconds since an ISO-8601 timestamp of the API (None when there is none)."""
    if not timestamp:
        return None
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (datetime.now(UTC) - moment).total_seconds()
