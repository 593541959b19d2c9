"""Draw the cost-growth curve (seconds against tenants, log-log) as a plain SVG file from the
JSON that `benchmarks/run.py` writes: no plotting library needed.

Run:
    uv run python benchmarks/plot_growth.py --series before=A.json --series after=B.json \
        --prefix rollback_execute_ --output docs/performance-growth.svg

Every row whose name starts with `--prefix` and whose figures name `tenants` is a point of its
file's series; the floor (tenants x latency / concurrency) of those rows is drawn as a dashed
line.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 150, 40, 50
COLOURS = ("#c0392b", "#2471a3", "#1e8449", "#7d3c98", "#b9770e")


def points(
    results: dict[str, Any], prefix: str
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(tenants, median seconds) and (tenants, floor seconds) of the matching rows."""
    measured, floor = [], []
    for name, row in results.items():
        tenants = (row.get("figures") or {}).get("tenants")
        if not name.startswith(prefix) or not tenants or row.get("median_s") is None:
            continue
        measured.append((int(tenants), float(row["median_s"])))
        if row.get("floor_s"):
            floor.append((int(tenants), float(row["floor_s"])))
    return sorted(measured), sorted(floor)


def svg(
    series: dict[str, list[tuple[int, float]]], floor: list[tuple[int, float]], title: str
) -> str:
    everything = [p for line in [*series.values(), floor] for p in line]
    if not everything:
        raise SystemExit("no points: check --prefix and the JSON files")
    xs = [math.log10(x) for x, _ in everything]
    ys = [math.log10(y) for _, y in everything]
    x0, x1 = math.floor(min(xs)), math.ceil(max(xs))
    y0, y1 = math.floor(min(ys)), math.ceil(max(ys))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)

    def at(x: float, y: float) -> tuple[float, float]:
        px = LEFT + (math.log10(x) - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT)
        py = HEIGHT - BOTTOM - (math.log10(y) - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM)
        return round(px, 1), round(py, 1)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for e in range(x0, x1 + 1):
        px, _ = at(10**e, 10**y0)
        out.append(f'<line x1="{px}" y1="{TOP}" x2="{px}" y2="{HEIGHT - BOTTOM}" stroke="#ddd"/>')
        out.append(
            f'<text x="{px}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{10**e:,}</text>'
        )
    for e in range(y0, y1 + 1):
        _, py = at(10**x0, 10**e)
        out.append(f'<line x1="{LEFT}" y1="{py}" x2="{WIDTH - RIGHT}" y2="{py}" stroke="#ddd"/>')
        label = f"{10**e:g} s"
        out.append(f'<text x="{LEFT - 6}" y="{py + 4}" text-anchor="end">{label}</text>')
    out.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 12}" text-anchor="middle">'
        "tenants</text>"
    )
    lines = [
        *(
            (name, line, COLOURS[i % len(COLOURS)], "")
            for i, (name, line) in enumerate(series.items())
        )
    ]
    if floor:
        lines.append(("floor", floor, "#555", ' stroke-dasharray="6 4"'))
    for i, (name, line, colour, dash) in enumerate(lines):
        coords = " ".join(f"{px},{py}" for px, py in (at(x, y) for x, y in line))
        out.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        for x, y in line:
            px, py = at(x, y)
            out.append(f'<circle cx="{px}" cy="{py}" r="3" fill="{colour}"/>')
            out.append(f'<text x="{px + 5}" y="{py - 6}" fill="{colour}">{y:.2f} s</text>')
        ly = TOP + 10 + i * 18
        out.append(
            f'<line x1="{WIDTH - RIGHT + 15}" y1="{ly}" x2="{WIDTH - RIGHT + 40}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{WIDTH - RIGHT + 45}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--series", action="append", required=True, metavar="LABEL=FILE.json[,MORE.json]"
    )
    parser.add_argument("--prefix", default="rollback_execute_")
    parser.add_argument("--title", default="In-process rollback execute: seconds by fleet size")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    series: dict[str, list[tuple[int, float]]] = {}
    floor: list[tuple[int, float]] = []
    for item in args.series:
        label, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--series {item!r}: expected LABEL=FILE.json")
        results: dict[str, Any] = {}
        for file in path.split(","):  # one series may come from several runs (1k, 10k, ...)
            for name, row in json.loads(Path(file).read_text())["results"].items():
                results[f"{name}@{file}"] = row
        series[label], found = points(results, args.prefix)
        floor = sorted(set(floor) | set(found))
    args.output.write_text(svg(series, floor, args.title))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
