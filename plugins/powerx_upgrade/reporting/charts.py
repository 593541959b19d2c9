"""Chart geometry for the HTML report: numbers and labels only; the template draws the SVG, so
every label passes through Jinja's autoescaping."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

GATE_W, GATE_H = 460, 170
GATE_LEFT, GATE_RIGHT, GATE_TOP, GATE_BOTTOM = 58, 14, 14, 28
LINE_W = 980
LINE_LABEL, LINE_RIGHT, LINE_TOP, LINE_LANE = 150, 16, 10, 26
PHASE_CLASS = {
    "pass": "pass",
    "fail": "fail",
    "no_data": "warn",
    "error": "fail",
    "inconclusive": "warn",
    "running": "muted",
    "pause_requested": "warn",
    "rollback_requested": "fail",
}


def format_metric(metric: str | None, value: float | None, *, relative: bool = False) -> str:
    """A measured value in its unit: error rates as percent, latencies in ms."""
    if value is None:
        return "-"
    if relative:
        return f"{value * 100:.0f}%"
    if metric == "error_rate":
        return f"{value * 100:.2f}%"
    if metric and metric.endswith("_ms"):
        return f"{value:,.0f} ms"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}"


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5, 5 x 10^k at or above `value`: axis tops people read at a glance."""
    if value <= 0:
        return 1.0
    scale = 10 ** math.floor(math.log10(value))
    return next(
        m * scale for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * scale >= value * 0.999999
    )


def format_offset(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"+{seconds}s"
    if seconds < 7200:
        return f"+{seconds // 60}m{seconds % 60:02d}s" if seconds % 60 else f"+{seconds // 60}m"
    return f"+{seconds / 3600:.1f}h"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def gate_charts(batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One chart per gate check of a batch: its value at each poke against its limit."""
    gate = batch["gate"]
    charts = []
    bake_start = _time(gate.get("bake_started_at"))
    for series in gate.get("series") or []:
        points = [p for p in series["points"] if p.get("at")]
        if not points:
            continue
        charts.append(_gate_chart(series, points, bake_start, batch.get("bake_seconds") or 0))
    return charts


def _gate_chart(
    series: Mapping[str, Any],
    points: list[Mapping[str, Any]],
    bake_start: datetime | None,
    bake_seconds: float,
) -> dict[str, Any]:
    times = [_time(p["at"]) for p in points]
    start = bake_start or min(t for t in times if t)
    end = max([t for t in times if t] + [start])
    span = max((end - start).total_seconds(), float(bake_seconds), 1.0)
    relative = bool(series.get("per_tenant"))
    thresholds = [p["threshold"] for p in points if p.get("threshold") is not None]
    limit = thresholds[-1] if thresholds else None
    values = [p["value"] for p in points if p.get("value") is not None]
    top = nice_ceiling(max([*values, limit or 0.0, 0.0]) * 1.15)
    plot_w = GATE_W - GATE_LEFT - GATE_RIGHT
    plot_h = GATE_H - GATE_TOP - GATE_BOTTOM

    def x(at: datetime) -> float:
        return round(GATE_LEFT + plot_w * max(0.0, (at - start).total_seconds()) / span, 1)

    def y(value: float) -> float:
        return round(GATE_TOP + plot_h * (1 - value / top), 1)

    dots = []
    for point, at in zip(points, times, strict=True):
        if at is None or point.get("value") is None:
            continue
        label = format_metric(series["metric"], point["value"], relative=relative)
        if relative and point.get("tenant"):
            label += (
                f" of its limit (worst: {point['tenant']}, {point.get('breaching', 0)} breaching)"
            )
        dots.append(
            {
                "x": x(at),
                "y": y(point["value"]),
                "cls": PHASE_CLASS.get(point.get("phase") or "", "muted"),
                "final": bool(point.get("final")),
                "title": f"{format_offset((at - start).total_seconds())}: {label}",
            }
        )
    metric = series["metric"]
    return {
        "title": f"{metric} ({series['scope']})",
        "subtitle": "worst tenant, as a share of its own limit"
        if relative
        else f"{series.get('op') or ''} {series.get('limit') or ''}".strip(),
        "width": GATE_W,
        "height": GATE_H,
        "plot": {
            "left": GATE_LEFT,
            "right": GATE_W - GATE_RIGHT,
            "top": GATE_TOP,
            "bottom": GATE_H - GATE_BOTTOM,
        },
        "polyline": " ".join(f"{d['x']},{d['y']}" for d in dots),
        "dots": dots,
        "limit_y": y(limit) if limit is not None else None,
        "limit_label": "each tenant's own limit"
        if relative
        else f"limit {format_metric(metric, limit)}"
        if limit is not None
        else None,
        "y_ticks": [
            {"y": y(v), "label": format_metric(metric, v, relative=relative)}
            for v in (0.0, top / 2, top)
        ],
        "x_ticks": [
            {"x": round(GATE_LEFT + plot_w * f, 1), "label": format_offset(span * f)}
            for f in (0.0, 0.25, 0.5, 0.75, 1.0)
        ],
        "empty": not dots,
    }


def timeline_chart(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """Lanes for each batch (deploy, then bake coloured by the verdict), pauses, the rollback
    and alerts, over the run's wall-clock time."""
    lanes: list[dict[str, Any]] = []
    for b in report["batches"]:
        if b["started_at"] or b["approval"]:
            lanes.append({"label": f"batch {b['index']} · {b['name']}", "items": _batch_items(b)})
    pauses = [
        _bar(
            p["started_at"],
            p["answered_at"] or report["run"]["ended_at"],
            "pause",
            f"batch {p['batch']} paused: {p['answer'] or 'no answer'}",
        )
        for p in report["pauses"]
        if p["started_at"]
    ]
    if pauses:
        lanes.append({"label": "pauses", "items": pauses})
    rollback = report["rollback"]
    if rollback and rollback["started_at"]:
        end = rollback["ended_at"] or report["run"]["ended_at"]
        cls = "fail" if rollback["counts"]["broken"] or rollback["counts"]["failed"] else "rollback"
        lanes.append(
            {
                "label": "rollback",
                "items": [
                    _bar(
                        rollback["started_at"],
                        end,
                        cls,
                        f"rollback of {rollback['counts']['targets']} tenants",
                    )
                ],
            }
        )
    alerts = [
        {"kind": "marker", "at": a["at"], "cls": "fail", "title": f"{a['rule']}: {a['message']}"}
        for a in report["alerts"]
        if a.get("at")
    ]
    if alerts:
        lanes.append({"label": "alerts", "items": alerts})
    return _layout(report, lanes) if lanes else None


def _batch_items(b: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = []
    if b["started_at"]:
        end = b["deploy_ended_at"] or b["started_at"]
        items.append(
            _bar(
                b["started_at"],
                end,
                "deploy",
                f"deploy: {b['deploy']['succeeded']} upgraded, {b['deploy']['failed']} failed",
            )
        )
    gate = b["gate"]
    if b["deploy_ended_at"] and gate["evaluated_at"]:
        items.append(
            _bar(
                b["deploy_ended_at"],
                gate["evaluated_at"],
                PHASE_CLASS.get(gate["verdict"] or "", "muted"),
                f"bake, gate {gate['verdict']}: {gate['reason']}",
            )
        )
    if b["approval"] and b["approval"]["at"]:  # drawn last: on top of the bars
        items.append(
            {
                "kind": "marker",
                "at": b["approval"]["at"],
                "cls": "muted",
                "title": f"approval: {b['approval']['decision']}",
            }
        )
    return items


def _bar(start: str | None, end: str | None, cls: str, title: str) -> dict[str, Any]:
    return {"kind": "bar", "start": start, "end": end or start, "cls": cls, "title": title}


def _layout(report: Mapping[str, Any], lanes: list[dict[str, Any]]) -> dict[str, Any]:
    stamps = [
        _time(s)
        for lane in lanes
        for item in lane["items"]
        for s in (item.get("start"), item.get("end"), item.get("at"))
        if s
    ]
    stamps += [
        t for t in (_time(report["run"]["started_at"]), _time(report["run"]["ended_at"])) if t
    ]
    start, end = min(stamps), max(stamps)
    span = max((end - start).total_seconds(), 1.0)
    plot_w = LINE_W - LINE_LABEL - LINE_RIGHT

    def x(value: str) -> float:
        return round(LINE_LABEL + plot_w * (_time(value) - start).total_seconds() / span, 1)  # type: ignore[operator]

    rows = []
    for n, lane in enumerate(lanes):
        top = LINE_TOP + n * LINE_LANE
        shapes = []
        for item in lane["items"]:
            if item["kind"] == "marker":
                shapes.append({**item, "x": x(item["at"]), "y": top + LINE_LANE / 2})
                continue
            left = x(item["start"])
            shapes.append(
                {
                    **item,
                    "x": left,
                    "w": max(2.0, round(x(item["end"]) - left, 1)),
                    "y": top + 5,
                    "h": LINE_LANE - 10,
                }
            )
        rows.append(
            {"label": lane["label"], "y": top, "mid": top + LINE_LANE / 2 + 4, "shapes": shapes}
        )
    height = LINE_TOP + len(lanes) * LINE_LANE + 26
    same_day = start.date() == end.date()
    ticks = []
    for f in (0.0, 0.25, 0.5, 0.75, 1.0):
        moment = start + (end - start) * f
        ticks.append(
            {
                "x": round(LINE_LABEL + plot_w * f, 1),
                "label": moment.strftime("%H:%M:%S" if same_day else "%m-%d %H:%M"),
            }
        )
    return {
        "width": LINE_W,
        "height": height,
        "label_x": LINE_LABEL - 8,
        "plot_left": LINE_LABEL,
        "plot_right": LINE_W - LINE_RIGHT,
        "axis_y": height - 20,
        "rows": rows,
        "ticks": ticks,
        "span_label": format_offset(span).lstrip("+"),
        "start": start.isoformat(),
    }
