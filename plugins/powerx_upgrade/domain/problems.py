"""Validation problems as data: file, line, plan, severity, field path and an actionable message."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]
PathElement = str | int
Path = tuple[PathElement, ...]


def format_path(path: Sequence[PathElement]) -> str:
    """`("policies", "std", "batches", 2, "ratio")` -> `policies.std.batches[2].ratio`."""
    text = ""
    for element in path:
        if isinstance(element, int):
            text += f"[{element}]"
        else:
            text += f".{element}" if text else str(element)
    return text


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong (or worth a warning) in a config file, located precisely."""

    file: str
    line: int | None
    severity: Severity
    path: str
    message: str
    plan_id: str | None = None
    policy_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f"{self.path}: " if self.path else ""
        return f"{where}: {self.severity}: {field}{self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "severity": self.severity,
            "path": self.path,
            "message": self.message,
            "plan_id": self.plan_id,
            "policy_id": self.policy_id,
        }


def errors_of(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]
