"""What every route depends on: the API's settings and the authenticated caller."""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated

from fastapi import Depends, Header, Request

from powerx_upgrade.airflow_client import APPROVAL_HEADER, CLIENT_HEADER
from powerx_upgrade.api.auth import Caller, presented_token
from powerx_upgrade.api.errors import Refused
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.api.ui.csrf import CSRF_HEADER, ui_request_is_genuine

log = logging.getLogger(__name__)

SAFE_METHODS = ("GET", "HEAD")


def settings_of(request: Request) -> ApiSettings:
    settings = request.app.state.powerx_settings
    if settings is None:
        settings = request.app.state.powerx_settings = ApiSettings.from_airflow()
    return settings


async def current_caller(request: Request) -> Caller:
    token, source = presented_token(request)
    from_ui = source == "cookie" and ui_request_is_genuine(request, token)
    if source == "cookie" and request.method not in SAFE_METHODS and not from_ui:
        # a browser sends the cookie with any cross-site request: it only ever reads, unless
        # the request carries the UI page's CSRF token (docs/ui.md)
        raise Refused(
            401,
            "not_authenticated",
            "the Airflow UI's cookie is accepted for reading only: send "
            f"'Authorization: Bearer <token>' to change anything (or {CSRF_HEADER} from the "
            "plugin's UI page)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    caller = await settings_of(request).auth.authenticate(request)
    if request.headers.get(CLIENT_HEADER, "").strip().lower() == "cli":
        caller = dataclasses.replace(caller, via="cli")
    elif from_ui and request.method not in SAFE_METHODS:
        caller = dataclasses.replace(caller, via="ui")
    request.state.powerx_caller = caller
    return caller


def settings_or_none(request: Request) -> ApiSettings | None:
    try:
        return settings_of(request)
    except Exception:  # not even the settings resolve: answer without an audit record
        log.exception("the API's settings could not be resolved")
        return None


CallerDep = Annotated[Caller, Depends(current_caller)]
SettingsDep = Annotated[ApiSettings, Depends(settings_of)]
ApprovalHeader = Annotated[str | None, Header(alias=APPROVAL_HEADER)]
