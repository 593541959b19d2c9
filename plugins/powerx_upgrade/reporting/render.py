"""Render a report document to its files: report.json, report.md, report.html and, when the run
went wrong, postmortem.md, from the Jinja2 templates in include/templates/."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from powerx_upgrade.reporting.charts import format_metric, gate_charts, timeline_chart
from powerx_upgrade.reporting.model import needs_postmortem

TEMPLATES_ENV = "POWERX_UPGRADE_TEMPLATES"
TEMPLATES = {
    "report.md": "report.md.j2",
    "report.html": "report.html.j2",
    "postmortem.md": "postmortem.md.j2",
}
LISTED_ROWS = 200
"""Per-tenant tables in the Markdown and HTML stop here; report.json always has every row."""
_PACKAGE_ROOT = Path(__file__).resolve().parents[3]
_BUNDLED = Path(__file__).resolve().parent / "templates"


class TemplatesNotFound(FileNotFoundError):
    """No report templates at the place the user (or the environment) named."""


def templates_location(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The templates to use: an explicit directory, else $POWERX_UPGRADE_TEMPLATES, else
    `include/templates/` in the working directory, then in the project checkout the package
    was installed from, then a copy shipped inside the package (`reporting/templates/`)."""
    if explicit:
        return _existing(Path(explicit), "the given templates directory")
    from_env = os.environ.get(TEMPLATES_ENV)
    if from_env:
        return _existing(Path(from_env), f"${TEMPLATES_ENV}")
    for candidate in (
        Path.cwd() / "include" / "templates",
        _PACKAGE_ROOT / "include" / "templates",
        _BUNDLED,
    ):
        if (candidate / TEMPLATES["report.html"]).is_file():
            return candidate
    raise TemplatesNotFound(
        f"no report templates found: set ${TEMPLATES_ENV} to a directory with "
        f"{', '.join(TEMPLATES.values())}, or run from a project with include/templates/"
    )


def _existing(path: Path, what: str) -> Path:
    missing = [name for name in TEMPLATES.values() if not (path / name).is_file()]
    if missing:
        raise TemplatesNotFound(f"{what} {str(path)!r} lacks {', '.join(missing)}")
    return path


def _autoescape(name: str | None) -> bool:
    """HTML (and SVG inside it) is escaped; Markdown is not (it is not markup a browser runs)."""
    return bool(name) and name.removesuffix(".j2").endswith((".html", ".htm", ".svg", ".xml"))  # type: ignore[union-attr]


@functools.cache
def _environment(directory: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        autoescape=_autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        pct=percent,
        metric=metric_filter,
        when=when,
        clock=clock,
        duration=duration,
        md=markdown_cell,
    )
    return env


def render_reports(
    report: Mapping[str, Any], *, templates: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """File name -> content; `postmortem.md` only when the outcome calls for one."""
    env = _environment(str(templates_location(templates)))
    context = {"report": report, "listed_rows": LISTED_ROWS}
    files = {"report.json": to_json(report)}
    files["report.md"] = env.get_template(TEMPLATES["report.md"]).render(context)
    charts = {
        "timeline": timeline_chart(report),
        "gates": {b["index"]: gate_charts(b) for b in report["batches"]},
    }
    files["report.html"] = env.get_template(TEMPLATES["report.html"]).render(context, charts=charts)
    if needs_postmortem(report["run"]["outcome"]):
        files["postmortem.md"] = env.get_template(TEMPLATES["postmortem.md"]).render(context)
    return files


def to_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n"


# -- filters ------------------------------------------------------------------------------------


def percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def metric_filter(value: float | None, metric: str | None, relative: bool = False) -> str:
    """`{{ value | metric(name) }}`: the value in its metric's unit."""
    return format_metric(metric, value, relative=relative)


def when(value: str | None) -> str:
    """An ISO timestamp as `2026-03-07 02:04:05 UTC`."""
    if not value:
        return "-"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(value: str | None) -> str:
    return datetime.fromisoformat(value).strftime("%H:%M:%S") if value else "-"


def duration(seconds: float | None) -> str:
    """`2h 05m`, `4m 12s`, `8.4s`."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def markdown_cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: no pipes or line breaks, no raw HTML tags."""
    if value is None or value == "":
        return "-"
    text = " ".join(str(value).split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
