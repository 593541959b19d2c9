"""Which tenants a run would move to an older version than they run (a downgrade): compared as
PEP 440 versions (2.10.0 is newer than 2.9.1); a version that does not parse is not compared."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version


@dataclass(frozen=True)
class Downgrades:
    """The selected tenants on a newer version than the target, and those whose version could
    not be compared (named, never guessed)."""

    newer: tuple[tuple[str, str], ...]
    """(tenant, its version), in the order given."""
    unparsed: tuple[tuple[str, str], ...]

    def message(self, target: str, limit: int = 20) -> str:
        shown = ", ".join(f"{t} ({v})" for t, v in self.newer[:limit])
        more = f" and {len(self.newer) - limit} more" if len(self.newer) > limit else ""
        return (
            f"{len(self.newer)} selected tenant(s) run a newer version than the target "
            f"{target}: {shown}{more}; the run would downgrade them. Set allow_downgrade: true "
            "in the plan or the run's conf if that is intended"
        )


def _parse(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def downgrades(
    target: str, versions: Mapping[str, str | None], selected: Iterable[str]
) -> Downgrades:
    """The selected tenants whose current version is newer than `target`."""
    goal = _parse(target)
    newer: list[tuple[str, str]] = []
    unparsed: list[tuple[str, str]] = []
    for tenant in selected:
        current = versions.get(tenant)
        if not current or current == target:
            continue
        parsed = _parse(current)
        if parsed is None or goal is None:
            unparsed.append((tenant, current))
        elif parsed > goal:
            newer.append((tenant, current))
    return Downgrades(tuple(newer), tuple(unparsed))
