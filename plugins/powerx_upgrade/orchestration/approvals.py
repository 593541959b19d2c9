"""How approval tokens are verified on this deployment: the Airflow connection `powerx_approval`
(password: the shared secret; extra: `public_key`, `audience`, `issuer`, `leeway_seconds`),
read in the api-server process as well as in a task."""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

from airflow.sdk.exceptions import AirflowNotFoundException

from powerx_upgrade.security.approval import DEFAULT_AUDIENCE, ApprovalRefused, ApprovalSettings

log = logging.getLogger(__name__)

APPROVAL_CONN_ID = "powerx_approval"
_EXTRA_KEYS = frozenset({"public_key", "audience", "issuer", "leeway_seconds"})
_MAX_LEEWAY_S = 600


def approval_settings(conn_id: str = APPROVAL_CONN_ID) -> ApprovalSettings | None:
    """The verification settings of the connection `conn_id`, or None when it does not exist
    (then `rollout.approvals.accept_approval` refuses every token as `not_configured`).

    A connection that exists but cannot be used (an unknown extra key, a bad leeway) gives
    settings whose `problem` names the field: every token is then refused (and audited) as
    `not_configured` with that message. The shared secret is registered with Airflow's secrets
    masker, so it never shows in a log.
    """
    conn = _connection(conn_id)
    if conn is None:
        log.warning("no Airflow connection %r: approval tokens cannot be verified", conn_id)
        return None
    secret = conn.password or None
    if secret:
        _mask(secret)
    try:
        extra = _extra(conn, conn_id)
        return ApprovalSettings(
            secret=secret,
            public_key=_text(extra, "public_key", conn_id),
            audience=_text(extra, "audience", conn_id) or DEFAULT_AUDIENCE,
            issuer=_text(extra, "issuer", conn_id),
            leeway_seconds=_leeway(extra.get("leeway_seconds", 30), conn_id),
        )
    except ApprovalRefused as broken:
        log.warning("approval tokens cannot be verified: %s", broken.message)
        return ApprovalSettings(problem=broken.message)


def _connection(conn_id: str) -> Any:
    # The api-server has no task context: Connection reads the metadata DB and secrets
    # backends directly. Where that model is unavailable the Task SDK's hook answers.
    try:
        from airflow.models.connection import Connection
    except ImportError:  # pragma: no cover - a Task SDK-only installation
        Connection = None
    if Connection is not None:
        try:
            return Connection.get_connection_from_secrets(conn_id)
        except AirflowNotFoundException:
            return None
        except Exception as exc:  # e.g. no metadata DB in this process: try the Task SDK
            log.debug("Connection lookup of %r failed (%s); trying BaseHook", conn_id, exc)
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def _mask(secret: str) -> None:
    # Two maskers may be active: the core one (api-server, scheduler) and the Task SDK's
    # (task processes, which also forward the mask to their supervisor).
    with suppress(Exception):
        from airflow._shared.secrets_masker import mask_secret

        mask_secret(secret)
    with suppress(Exception):
        from airflow.sdk.log import mask_secret as sdk_mask_secret

        sdk_mask_secret(secret)


def _extra(conn: Any, conn_id: str) -> dict[str, Any]:
    try:
        extra = conn.extra_dejson or {}
    except Exception:
        extra = None
    if not isinstance(extra, dict):
        raise ApprovalRefused(
            "not_configured", f"connection {conn_id!r}: the extra must be a JSON object"
        )
    unknown = sorted(set(extra) - _EXTRA_KEYS)
    if unknown:
        raise ApprovalRefused(
            "not_configured",
            f"connection {conn_id!r}: unknown extra key {unknown[0]!r};"
            f" expected some of {', '.join(sorted(_EXTRA_KEYS))}",
        )
    return extra


def _text(extra: dict[str, Any], key: str, conn_id: str) -> str | None:
    value = extra.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApprovalRefused(
            "not_configured", f"connection {conn_id!r}: extra {key!r} must be a string"
        )
    return value.strip() or None


def _leeway(value: Any, conn_id: str) -> int:
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        seconds = -1
    if isinstance(value, bool) or not 0 <= seconds <= _MAX_LEEWAY_S:
        raise ApprovalRefused(
            "not_configured",
            f"connection {conn_id!r}: extra 'leeway_seconds' is {value!r};"
            f" expected whole seconds from 0 to {_MAX_LEEWAY_S}",
        )
    return seconds
