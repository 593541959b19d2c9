"""Render a report document to its files: report.json, report.md, report.html and, when the run
went wrong, postmortem.md, from the Jinja2 templates in include/templates/."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from powerx_upgrade.reporting.charts import format_metric, gate_charts, timeline_chart
from powerx_upgrade.reporting.findings import needs_postmortem

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
    """The templates to use: an explicit directory (the report tasks and the control plane pass
    Airflow's `[powerx_upgrade] templates` here: reporting itself never imports Airflow), else
    $POWERX_UPGRADE_TEMPLATES, else `include/templates/` of the project checkout the package was
    installed from, else a copy shipped inside the package (`reporting/templates/`). Never the
    working directory."""
    if explicit:
        return _existing(Path(explicit), "the given templates directory")
    from_env = os.environ.get(TEMPLATES_ENV)
    if from_env:
        return _existing(Path(from_env), f"${TEMPLATES_ENV}")
    for candidate in (_PACKAGE_ROOT / "include" / "templates", _BUNDLED):
        if (candidate / TEMPLATES["report.html"]).is_file():
            return candidate
    raise TemplatesNotFound(
        f"no report templates found: set ${TEMPLATES_ENV} (or [powerx_upgrade] templates) "
        f"to a directory with {', '.join(TEMPLATES.values())}"
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
def _environment(directory: str, markdown: bool) -> jinja2.Environment:
    """One environment per kind of output: HTML autoescapes; Markdown passes every printed value
    through `markdown_text` (no raw tags, no table-breaking pipes), except `| code` spans."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        autoescape=_autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_markdown_finalize if markdown else None,
    )
    env.filters.update(
        pct=percent,
        num=number,
        metric=metric_filter,
        when=when,
        clock=clock,
        duration=duration,
        code=code_span,
        judged=judged,
        within_limits=within_limits,
    )
    return env


def render_reports(
    report: Mapping[str, Any], *, templates: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """File name -> content; `postmortem.md` only when the outcome calls for one."""
    return {
        name: "".join(chunks)
        for name, chunks in stream_reports(report, templates=templates).items()
    }


def stream_reports(
    report: Mapping[str, Any], *, templates: str | os.PathLike[str] | None = None
) -> dict[str, Iterator[str]]:
    """File name -> the file's text in chunks, produced only as they are read: a writer
    (`store_reports`) never holds a whole file in memory. report.json (every tenant's row)
    grows with the fleet: about 4 MB per 10,000 tenants, 40+ MB at 100,000 (issue 16). The
    templates are loaded and the charts built here, so a missing template fails before any
    file is written."""
    directory = str(templates_location(templates))
    markdown, html = _environment(directory, True), _environment(directory, False)
    context = {"report": report, "listed_rows": LISTED_ROWS}
    charts = {
        "timeline": timeline_chart(report),
        "gates": {b["index"]: gate_charts(b) for b in report["batches"]},
    }
    files = {
        "report.json": json_chunks(report),
        "report.md": markdown.get_template(TEMPLATES["report.md"]).generate(context),
        "report.html": html.get_template(TEMPLATES["report.html"]).generate(context, charts=charts),
    }
    if needs_postmortem(report["run"]["outcome"]):
        files["postmortem.md"] = markdown.get_template(TEMPLATES["postmortem.md"]).generate(context)
    return files


_COMPACT = json.JSONEncoder(ensure_ascii=False, default=str)
"""C-accelerated (no indent): the pure-Python encoder that `indent` needs costs seconds over a
fleet's rows (issue 16)."""
BIG = 50
"""A list or object with more entries than this (per-tenant rows) is written compact, in lines
of ROWS_PER_LINE entries; smaller ones are indented like `json.dumps(indent=2)`."""
ROWS_PER_LINE = 500
_INDENT = "  "


def json_chunks(report: Mapping[str, Any]) -> Iterator[str]:
    """report.json in chunks (the same text as `to_json`): the document's outline indented by
    2, each per-tenant list or object (more than BIG entries) as compact lines of ROWS_PER_LINE
    entries, each line one C-encoder call. It parses to the document itself."""
    yield from _json_value(report, 0)
    yield "\n"


def to_json(report: Mapping[str, Any]) -> str:
    return "".join(json_chunks(report))


def _json_value(value: Any, level: int) -> Iterator[str]:
    if isinstance(value, dict):
        entries: list[Any] = list(value.items())
        opening, closing = "{", "}"
    elif isinstance(value, list | tuple):
        entries, opening, closing = list(value), "[", "]"
    else:
        yield _COMPACT.encode(value)
        return
    if not entries:
        yield opening + closing
        return
    inner = "\n" + _INDENT * (level + 1)
    yield opening
    if len(entries) > BIG:
        for start in range(0, len(entries), ROWS_PER_LINE):
            part = entries[start : start + ROWS_PER_LINE]
            text = _COMPACT.encode(dict(part) if opening == "{" else part)
            yield ("," if start else "") + inner + text[1:-1]
    else:
        for number, entry in enumerate(entries):
            yield "," + inner if number else inner
            if opening == "{":
                key, entry = entry
                yield _COMPACT.encode(_json_key(key)) + ": "
            yield from _json_value(entry, level + 1)
    yield "\n" + _INDENT * level + closing


def _json_key(key: Any) -> str:
    """An object key as `json.dumps` writes it: text, or a number, true, false, null as text."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    if isinstance(key, int | float):
        return _COMPACT.encode(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


# -- filters ------------------------------------------------------------------------------------


def number(value: float | None) -> str:
    """`12,345` and `342,616.1`: thousands separated, at most one decimal."""
    if value is None:
        return "-"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


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


def judged(measurements: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """`{{ ms | judged }}`: the batch-wide measurements, then the per-tenant ones not within
    their limits, in their order (one pass in Python: a batch has a row per tenant)."""
    pooled = [m for m in measurements if m.get("tenant") is None]
    return pooled + [
        m for m in measurements if m.get("tenant") is not None and m.get("phase") != "pass"
    ]


def within_limits(measurements: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """`{{ ms | within_limits }}`: the per-tenant measurements that passed, in their order."""
    return [m for m in measurements if m.get("tenant") is not None and m.get("phase") == "pass"]


class _Code(str):
    """Text already made into a Markdown code span: printed as is."""


def code_span(value: Any) -> str:
    """`{{ value | code }}`: a code span that no backtick, pipe or line break inside breaks."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    ticks = 1 + max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * ticks
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return _Code(f"{fence}{pad}{text}{pad}{fence}")


def markdown_text(value: Any) -> str:
    """Any value printed into Markdown: one line, pipes escaped (tables), no raw HTML tags
    (a Markdown viewer would pass `<script>` through); None as `-`."""
    if value is None:
        return "-"
    text = " ".join(str(value).split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def _markdown_finalize(value: Any) -> Any:
    return value if isinstance(value, _Code) else markdown_text(value)
