"""The UI's routes: `GET /ui/grey-upgrades` (the navigation page), `GET /ui/rollout` (a DAG run's
Rollout tab; `/ui/rollout/live` is its part that the page's script fetches every few seconds) and
the pages' stylesheet and script. Actions go through the control plane's own endpoints."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from powerx_upgrade.api.auth import Caller
from powerx_upgrade.api.deps import current_caller, settings_of
from powerx_upgrade.api.errors import Refused
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.api.ui import model
from powerx_upgrade.api.ui.csrf import CSRF_HEADER, csrf_token
from powerx_upgrade.reporting.render import clock, duration, number, percent, when

log = logging.getLogger(__name__)
router = APIRouter(prefix="/ui", include_in_schema=False)
HERE = Path(__file__).resolve().parent.parent
STATIC = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}
POLL_SECONDS = 2.0


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates" / "ui")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pct=percent, num=number, when=when, clock=clock, duration=duration, **model.FILTERS
    )
    return env


ENV = _environment()


async def _who(request: Request) -> tuple[ApiSettings, Caller] | HTMLResponse:
    """The settings and the caller, or the page that says why there is none (not logged in,
    refused): a page in an iframe cannot show a JSON error usefully."""
    try:
        settings = await run_in_threadpool(settings_of, request)
        return settings, await current_caller(request)
    except Refused as exc:
        return _refusal_page(exc)


def _refusal_page(exc: Refused) -> HTMLResponse:
    html = ENV.get_template("refused.html").render(
        status=exc.status, code=exc.code, message=exc.message, root=model.ui_root()
    )
    return HTMLResponse(html, status_code=exc.status)


@router.get("/grey-upgrades", response_class=HTMLResponse)
async def fleet_page(request: Request) -> Response:
    who = await _who(request)
    if isinstance(who, HTMLResponse):
        return who
    settings, caller = who
    # the ledger, the platform and Airflow's REST API (the api-server itself, on loopback) are
    # blocking calls: never on the event loop, which must stay free to answer them
    page = await run_in_threadpool(model.fleet_page, settings, caller)
    return HTMLResponse(ENV.get_template("fleet.html").render(page=page, root=model.ui_root()))


@router.get("/rollout", response_class=HTMLResponse)
async def rollout_page(
    request: Request,
    dag_id: Annotated[str, Query(max_length=250)],
    run_id: Annotated[str, Query(max_length=250)],
) -> Response:
    who = await _who(request)
    if isinstance(who, HTMLResponse):
        return who
    settings, caller = who
    try:
        page = await run_in_threadpool(model.rollout_page, settings, caller, dag_id, run_id)
    except Refused as exc:
        return _refusal_page(exc)
    html = ENV.get_template("rollout.html").render(
        page=page,
        root=model.ui_root(),
        csrf=_csrf(caller),
        csrf_header=CSRF_HEADER,
        poll_ms=int(POLL_SECONDS * 1000),
    )
    return HTMLResponse(html)


@router.get("/rollout/live")
async def rollout_live(
    request: Request,
    dag_id: Annotated[str, Query(max_length=250)],
    run_id: Annotated[str, Query(max_length=250)],
) -> Response:
    """The live part of the Rollout tab as HTML in JSON, with the CSRF token for the current
    cookie (Airflow may renew the cookie while the page is open)."""
    settings = await run_in_threadpool(settings_of, request)
    caller = await current_caller(request)
    page = await run_in_threadpool(model.rollout_page, settings, caller, dag_id, run_id)
    html = ENV.get_template("live.html").render(page=page, root=model.ui_root())
    return JSONResponse(
        {
            "html": html,
            "csrf": _csrf(caller),
            "active": page["active"],
            "waiting": [w["task_id"] for w in page["waiting"]],
            "stamp": page["stamp"],
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC:
        raise Refused(404, "not_found", f"no UI file {name!r}")
    text = (HERE / "static" / name).read_text(encoding="utf-8")
    return Response(text, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})


def _csrf(caller: Caller) -> str | None:
    """Only a cookie session needs it (a bearer caller is no browser page)."""
    return csrf_token(caller.token) if caller.source == "cookie" and caller.token else None
