"""How a benchmark hands its figures to `benchmarks/run.py`: one line `FIGURES {json}` on
stdout (the human-readable lines stay as they are)."""

from __future__ import annotations

import json
from typing import Any

PREFIX = "FIGURES "


def emit(**figures: Any) -> None:
    """Print the benchmark's figures (seconds as `*_s`, sizes as `*_bytes`, counts plain)."""
    print(PREFIX + json.dumps(figures, sort_keys=True), flush=True)


def parse(stdout: str) -> dict[str, Any]:
    """Every `FIGURES` line of a benchmark's output, merged (later lines win)."""
    found: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith(PREFIX):
            found.update(json.loads(line[len(PREFIX) :]))
    return found
