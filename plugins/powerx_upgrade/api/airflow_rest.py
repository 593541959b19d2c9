"""Airflow's REST API on loopback, called with the caller's own token through the one REST
client (`powerx_upgrade.airflow_client`): waiting human decisions (HITL), answering them,
triggering the rollback DAG. Airflow checks the caller's permissions again on each call, so the
API can never do more than the caller could do directly. Every failure is a `Refused`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

from powerx_upgrade.airflow_client import (
    HITL_SETTLE_SECONDS,
    ROLLBACK_DAG_ID,
    AirflowClient,
    ApiError,
    Forbidden,
    NotAuthenticated,
    Unreachable,
)
from powerx_upgrade.api.errors import Refused

ROLLBACK_DAG = ROLLBACK_DAG_ID
T = TypeVar("T")


class AirflowRest:
    """A few calls of Airflow's REST API as one caller.

    :param base_url: the api-server's address (loopback).
    :param token: the caller's Airflow token.
    :param timeout: seconds per call.
    """

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 30) -> None:
        self.client = AirflowClient(base_url, token=token, timeout=timeout)
        self.base_url = self.client.base_url

    def _call(self, method: str, call: Callable[[], T]) -> T:
        with _refusals(method, self.base_url):
            return call()

    def waiting(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's unanswered human-in-the-loop requests."""
        return self._call("GET", lambda: self.client.waiting(dag_id, run_id))

    def answer(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        chosen: Sequence[str],
        *,
        map_index: int = -1,
        created_at: str | None = None,
        settle: float = HITL_SETTLE_SECONDS,
    ) -> dict[str, Any]:
        """Answer a waiting request (`PATCH .../taskInstances/{task}/{map}/hitlDetails`)."""
        return self._call(
            "PATCH",
            lambda: self.client.patch_hitl(
                dag_id,
                run_id,
                task_id,
                chosen,
                map_index=map_index,
                created_at=created_at,
                settle=settle,
            ),
        )

    def reparse_file_of(self, dag_id: str) -> None:
        """Ask the dag-processor to parse the file that defines `dag_id` now."""
        self._call("PUT", lambda: self.client.reparse_file_of(dag_id))

    def dag_paused(self, dag_id: str) -> bool:
        """Whether a DAG is paused; refuses (403/404/502) when the caller may not see it or
        Airflow does not know it, so callers check this before anything is used up."""
        return bool(self._call("GET", lambda: self.client.dag(dag_id)).get("is_paused"))

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any], *, note: str | None = None, paused: bool
    ) -> dict[str, Any]:
        """Trigger a run now; a paused DAG is unpaused first, since its runs would wait in the
        queue: a rollback must not."""
        run_id = self._call(
            "POST", lambda: self.client.trigger(dag_id, conf, note=note, unpause=paused)
        )
        return {"dag_run_id": run_id, "unpaused": paused}


@contextmanager
def _refusals(method: str, base_url: str) -> Iterator[None]:
    """The client's typed failures as the API's refusals (unreachable: 502; Airflow refused
    the caller: 403; a 404 or 409 passes through; anything else: 502)."""
    try:
        yield
    except ApiError as exc:
        path = _api_path(exc.url, base_url)
        if isinstance(exc, Unreachable):
            reason = exc.detail.split(":", 1)[0]
            raise Refused(
                502,
                "airflow_unreachable",
                f"Airflow's REST API ({exc.method} {path}) did not answer: {reason}",
            ) from None
        if isinstance(exc, NotAuthenticated | Forbidden):
            raise Refused(
                403,
                "forbidden",
                f"Airflow refused {exc.method} {path} for this user ({exc.status}): {exc.detail}",
            ) from None
        raise Refused(
            exc.status if exc.status in (404, 409) else 502,
            "airflow_refused",
            f"Airflow answered {exc.status} to {exc.method} {path}: {exc.detail}",
        ) from None


def _api_path(url: str, base_url: str) -> str:
    """A request's path under `/api/v2` (what the refusal names)."""
    path = url.removeprefix(base_url) if url.startswith(base_url) else urlsplit(url).path
    return path.split("?", 1)[0].removeprefix("/api/v2")
