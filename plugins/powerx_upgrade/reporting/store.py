"""Where reports live: `<base>/<plan_id>/<run folder>/report.{json,md,html}` (+ postmortem.md),
written through Airflow's ObjectStoragePath, so the base may be a local folder or object storage
(`s3://bucket/reports`, `gs://...`, with the matching Airflow provider and connection)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from powerx_upgrade.reporting.collector import collector_paused

REPORTS_ENV = "POWERX_UPGRADE_REPORTS"
REPORTS_URL_ENV = "POWERX_UPGRADE_REPORTS_URL"
WRITE_ORDER = ("report.html", "report.md", "postmortem.md", "report.json")
"""report.json goes last: once it is there, the other files of the run are too."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def reports_base(explicit: str | None = None) -> str:
    """The base URI: an explicit one, else $POWERX_UPGRADE_REPORTS, else `reports/` under
    $AIRFLOW_HOME (default `~/airflow`). A plain path becomes a `file://` URI."""
    base = explicit or os.environ.get(REPORTS_ENV)
    if not base:
        home = os.environ.get("AIRFLOW_HOME") or str(Path("~/airflow").expanduser())
        base = str(Path(home) / "reports")
    if "://" not in base:
        base = f"file://{Path(base).expanduser().resolve()}"
    return base.rstrip("/")


def safe_segment(text: str) -> str:
    """One path segment from an id: manual run ids carry `:` and `+`, which some object stores
    and file systems refuse or read as something else (`manual__2026-03-07T02:00:00+00:00` ->
    `manual__2026-03-07T02_00_00_00_00`)."""
    cleaned = _UNSAFE.sub("_", text).lstrip(".")
    return cleaned or "_"


RUN_HASH_CHARS = 10
"""Hex digits of the run id's SHA-256 in its folder name (40 bits: a collision among one
plan's runs needs about a million runs before it is likely)."""


def run_segment(run_id: str) -> str:
    """A run's folder name, one per run id: the readable `safe_segment` plus a short hash of
    the raw id, so ids that differ only in characters `safe_segment` replaces (`:`, `+`, `_`)
    get different folders (`manual__2026-03-07T02:00:00+00:00` ->
    `manual__2026-03-07T02_00_00_00_00-<10 hex>`)."""
    digest = hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:RUN_HASH_CHARS]
    return f"{safe_segment(run_id)}-{digest}"


def report_dir(plan_id: str, run_id: str, base: str | None = None) -> str:
    """The URI of a run's report directory (no I/O)."""
    return f"{reports_base(base)}/{safe_segment(plan_id)}/{run_segment(run_id)}"


def legacy_report_dir(plan_id: str, run_id: str, base: str | None = None) -> str:
    """Where releases before the hashed folders wrote a run's reports (`safe_segment` only;
    two ids that differ only in `:`/`+`/`_` shared it). Readers look here when the run's
    own folder has no file, so reports written before the change stay readable."""
    return f"{reports_base(base)}/{safe_segment(plan_id)}/{safe_segment(run_id)}"


API_REPORT_PATH = "/internal/version/upgrade/runs/{run_id}/report"
"""The control-plane API's report view (behind Airflow's login), under the api-server's URL."""
_API_FORMATS = {"report.html": "html", "report.md": "md", "report.json": "json"}


def report_link(
    plan_id: str, run_id: str, name: str = "report.html", *, api_base_url: str | None = None
) -> str:
    """Where a person opens a report: under $POWERX_UPGRADE_REPORTS_URL when the base is served
    over HTTP (a static web server, a bucket website); else, when the api-server's URL is known
    (`api_base_url`: Airflow's `[api] base_url`), the control-plane API's report view, which
    asks for the same login as the Airflow UI; else the storage URI itself."""
    served = os.environ.get(REPORTS_URL_ENV)
    if served:
        return f"{served.rstrip('/')}/{safe_segment(plan_id)}/{run_segment(run_id)}/{name}"
    if api_base_url and name in _API_FORMATS:
        path = API_REPORT_PATH.format(run_id=quote(run_id, safe=""))
        query = "" if name == "report.html" else f"?format={_API_FORMATS[name]}"
        return f"{api_base_url.rstrip('/')}{path}{query}"
    return quote(f"{report_dir(plan_id, run_id)}/{name}", safe=":/")


WRITE_CHUNK = 1 << 16
"""Characters gathered before one write: a streamed file's small chunks (a JSON token, a
template line) written one by one would cost a call each (and a request each on object
storage)."""


def store_reports(
    files: Mapping[str, str | Iterable[str]], plan_id: str, run_id: str, *, base: str | None = None
) -> dict[str, str]:
    """Write the rendered files (whole texts, or chunks from `render.stream_reports`, written
    as they come: a file that grows with the fleet is never held whole); returns file name ->
    URI. Rewriting a run's report (a retried task) replaces the files."""
    from airflow.sdk import (
        ObjectStoragePath,
    )  # here, so that building and rendering stay Airflow-free

    directory = ObjectStoragePath(report_dir(plan_id, run_id, base))
    directory.mkdir(parents=True, exist_ok=True)
    order = [n for n in WRITE_ORDER if n in files] + [n for n in files if n not in WRITE_ORDER]
    written: dict[str, str] = {}
    for name in order:
        target = directory / name
        # streamed files are rendered here, chunk by chunk: see reporting.collector
        with collector_paused(), target.open("w", encoding="utf-8") as out:
            _write(out, files[name])
        written[name] = str(target)
    return {name: written[name] for name in files}


def _write(out: Any, text: str | Iterable[str]) -> None:
    if isinstance(text, str):
        out.write(text)
        return
    buffer: list[str] = []
    held = 0
    for chunk in text:
        buffer.append(chunk)
        held += len(chunk)
        if held >= WRITE_CHUNK:
            out.write("".join(buffer))
            buffer, held = [], 0
    out.write("".join(buffer))
