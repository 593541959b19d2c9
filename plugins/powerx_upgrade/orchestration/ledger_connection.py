"""Which database the ledger is in: the one resolution the tasks (`runtime.ledger_url`), the
control plane (`api.settings.ledger_url_from_airflow`) and `powerx ledger upgrade` share.

Only "no secrets backend defines `powerx_ledger`" falls back to the SQLite file under
$AIRFLOW_HOME, logged once per process. Anything else fails with the reason: a backend that
raises, an execution API that answers with an error other than "not found", a definition that
does not parse (`AIRFLOW_CONN_POWERX_LEDGER='not a uri'`). Airflow's own lookup
(`BaseHook.get_connection`) turns all of these into "isn't defined", so the backends are asked
here one by one, in Airflow's order for the process (a task: env vars, then the execution API;
the api-server and the CLI: env vars, then the metadata database; plus configured backends).
"""

from __future__ import annotations

import logging
from typing import Any

from powerx_upgrade.ledger import default_ledger_url, normalize_url

LEDGER_CONN_ID = "powerx_ledger"
log = logging.getLogger(__name__)
_fallback_logged: set[str] = set()


class LedgerConnectionError(RuntimeError):
    """`powerx_ledger` is defined (or could not be looked up) but gives no usable URL."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"connection {LEDGER_CONN_ID!r}: {reason} (docs/ledger.md)")


def resolve_ledger_url() -> str:
    """The ledger's SQLAlchemy URL: the connection's extra `url`, else its URI (`postgres://`
    becomes `postgresql://`); the SQLite file only when no backend defines the connection.

    :raises LedgerConnectionError: a backend failed, or the definition is unusable.
    """
    conn = find_ledger_connection()
    if conn is None:
        url = default_ledger_url()
        if url not in _fallback_logged:
            _fallback_logged.add(url)
            log.warning(
                "no %r connection defined: the ledger is the SQLite file %s", LEDGER_CONN_ID, url
            )
        return url
    try:
        extra = conn.extra_dejson or {}
        url = str(extra.get("url") or conn.get_uri())
    except Exception as exc:
        raise LedgerConnectionError(f"no URL can be read from it: {exc}") from exc
    return _checked(normalize_url(url))


def _checked(url: str) -> str:
    """`url` when SQLAlchemy can parse it and has its dialect, else the reason (without the
    password)."""
    from sqlalchemy.engine import make_url

    try:
        make_url(url).get_dialect()
    except Exception as exc:
        shown = url.split("@")[-1] if "@" in url else url
        raise LedgerConnectionError(f"{shown!r} is not a database URL: {exc}") from exc
    return url


def find_ledger_connection() -> Any | None:
    """The connection from the first backend that defines it; None when none does."""
    for backend in _secrets_backends():
        name = type(backend).__name__
        try:
            if name == "ExecutionAPISecretsBackend":
                conn = _from_execution_api()
            else:
                conn = backend.get_connection(conn_id=LEDGER_CONN_ID)
        except LedgerConnectionError:
            raise
        except Exception as exc:
            raise LedgerConnectionError(f"secrets backend {name} failed: {exc}") from exc
        if conn:
            return conn
    return None


def _secrets_backends() -> list[Any]:
    from airflow.sdk.execution_time import task_runner

    if getattr(task_runner, "SUPERVISOR_COMMS", None) is not None:  # a task's process
        from airflow.sdk.execution_time.supervisor import ensure_secrets_backend_loaded

        return list(ensure_secrets_backend_loaded())
    from airflow.configuration import ensure_secrets_loaded

    return list(ensure_secrets_loaded())


def _from_execution_api() -> Any | None:
    """The execution API's answer, with "not found" told apart from a failure (Airflow's
    backend returns None for both)."""
    from airflow.sdk.exceptions import ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse, GetConnection
    from airflow.sdk.execution_time.context import _process_connection_result_conn
    from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

    msg = SUPERVISOR_COMMS.send(GetConnection(conn_id=LEDGER_CONN_ID))
    if isinstance(msg, ErrorResponse):
        if msg.error == ErrorType.CONNECTION_NOT_FOUND:
            return None
        raise LedgerConnectionError(f"the execution API answered {msg.error}: {msg.detail}")
    return _process_connection_result_conn(msg)
