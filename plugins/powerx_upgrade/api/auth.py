"""Who calls the API and what they may do: Airflow's own tokens, checked by Airflow's auth
manager, with a DAG-level permission on the plan's DAG.

The caller's token is the `Authorization: Bearer` header (as for Airflow's REST API), else the
UI's JWT cookie (so a report link opens from a logged-in browser). No token: 401; a token the
auth manager refuses: 403 (401 when it only expired); too little access: 403.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from fastapi import Request

from powerx_upgrade.api.errors import Refused

Method = Literal["GET", "POST", "PUT", "DELETE"]
Entity = Literal["run"] | None
COOKIE_NAME = "_token"
"""Airflow's UI cookie (`base_auth_manager.COOKIE_NAME_JWT_TOKEN`)."""


@dataclass(frozen=True)
class Caller:
    """An authenticated caller.

    :param name: the user's name (audit records, ledger actors).
    :param user: the auth manager's user object (what its `is_authorized_*` methods take).
    :param token: the Airflow token the caller presented, forwarded to Airflow's REST API on
        loopback so that Airflow checks the same user again; never logged or stored.
    :param source: where the token came from: `bearer` or `cookie`.
    :param via: the path the request came by, as the ledger records it: `api`, or `cli` for
        `powerx plugin ...`.
    """

    name: str
    user: Any = field(repr=False)
    token: str | None = field(default=None, repr=False)
    source: str = "bearer"
    via: str = "api"


class Authenticator(Protocol):
    """How the app learns who calls and what they may do (Airflow's auth manager in the
    api-server; tests hand the app their own)."""

    async def authenticate(self, request: Request) -> Caller: ...

    def may(self, caller: Caller, *, method: Method, dag_id: str, entity: Entity) -> bool: ...


def presented_token(request: Request) -> tuple[str | None, str]:
    """The token of a request and where it was: the bearer header wins over the cookie."""
    header = request.headers.get("authorization") or ""
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), "bearer"
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        return cookie, "cookie"
    return None, "none"


class AirflowAuth:
    """Airflow's auth manager (`get_auth_manager()` of the api-server process)."""

    async def authenticate(self, request: Request) -> Caller:
        from airflow.api_fastapi.core_api import security
        from fastapi import HTTPException

        token, source = presented_token(request)
        if source != "bearer":
            # An expired UI cookie that Airflow's refresh middleware already renewed: the user
            # it resolved (marked as coming from that trusted middleware) stands.
            user = getattr(request.state, "user", None)
            marker = getattr(security, "USER_INJECTED_BY_TRUSTED_MIDDLEWARE", None)
            trusted = getattr(request.state, "user_authenticated_via", None)
            if user is not None and marker is not None and trusted is marker:
                return Caller(name=_name_of(user), user=user, token=token, source="cookie")
        if token is None:
            raise Refused(
                401,
                "not_authenticated",
                "no Airflow token: send 'Authorization: Bearer <token>' (POST /auth/token) "
                "or log in to the Airflow UI",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            user = await security.resolve_user_from_token(token)
        except HTTPException as exc:
            expired = exc.status_code == 401
            raise Refused(
                401 if expired else 403,
                "token_expired" if expired else "invalid_token",
                f"the Airflow token ({source}) was refused: {exc.detail}",
                headers={"WWW-Authenticate": "Bearer"} if expired else None,
            ) from None
        return Caller(name=_name_of(user), user=user, token=token, source=source)

    def may(self, caller: Caller, *, method: Method, dag_id: str, entity: Entity) -> bool:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import (
            DagAccessEntity,
            DagDetails,
        )

        return bool(
            get_auth_manager().is_authorized_dag(
                method=method,
                access_entity=DagAccessEntity.RUN if entity == "run" else None,
                details=DagDetails(id=dag_id),
                user=caller.user,
            )
        )


def _name_of(user: Any) -> str:
    for getter in ("get_name", "get_id"):
        method = getattr(user, getter, None)
        if callable(method):
            value = method()
            if value:
                return str(value)
    return str(getattr(user, "username", None) or "unknown")


def require(
    auth: Authenticator, caller: Caller, *, method: Method, dag_id: str, entity: Entity = "run"
) -> None:
    """403 unless the caller has `method` access to the DAG (its runs, when `entity` is run)."""
    if not auth.may(caller, method=method, dag_id=dag_id, entity=entity):
        what = f"{'runs of ' if entity == 'run' else ''}DAG {dag_id}"
        raise Refused(
            403,
            "forbidden",
            f"user {caller.name!r} may not {method} {what} (Airflow's auth manager said no)",
        )
