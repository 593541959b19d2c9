"""Scenario files: the fleet, traffic, version behaviour and faults a sandbox simulates, validated.

A bad scenario yields `ScenarioError` whose lines read `file:line field.path: message`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from powerx_dev.sandbox.faults import (
    FAULT_TYPES,
    Duration,
    Fault,
    LabelValue,
    TenantId,
    Version,
    selector_matches,
)

PLUGIN_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MAX_TENANTS = 100_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ExplicitTenant(_Strict):
    """One tenant spelled out."""

    id: TenantId
    labels: dict[str, LabelValue] = Field(default_factory=dict)
    version: Version | None = Field(default=None, description="defaults to the fleet's version")
    config_version: str | None = None


class TenantFleet(_Strict):
    """`count` generated tenants `t-0001`.. with labels drawn to the given shares."""

    count: int = Field(ge=1, le=MAX_TENANTS)
    id_prefix: str = Field(default="t-", max_length=64)
    id_width: int = Field(default=4, ge=1, le=12, description="zero padding of the number")
    version: Version
    config_version: str = "cfg-1"
    labels: dict[str, dict[LabelValue, float]] = Field(
        default_factory=dict, description="label -> {value: share}; shares sum to 1"
    )
    extra: list[ExplicitTenant] = Field(
        default_factory=list, description="named tenants added to the generated ones"
    )

    @field_validator("labels")
    @classmethod
    def _shares_sum_to_one(cls, labels: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for key, shares in labels.items():
            if not shares:
                raise ValueError(f"label {key!r} has no values")
            if any(share < 0 for share in shares.values()):
                raise ValueError(f"label {key!r} has a negative share")
            total = sum(shares.values())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"shares of label {key!r} sum to {total:g}, not 1")
        return labels


def _tenants_form(value: Any) -> str:
    return "list" if isinstance(value, list) else "count"


class LatencySpec(_Strict):
    """How long platform operations take."""

    upgrade_ms: float = Field(default=50, ge=0, le=600_000)
    rollback_ms: float = Field(default=50, ge=0, le=600_000)
    jitter: float = Field(default=0.2, ge=0, le=1, description="± share, seeded per operation")


class TrafficSpec(_Strict):
    """Per-tenant baseline traffic (the behaviour of any version not listed under `versions`)."""

    rps: float = Field(default=20, gt=0, le=100_000)
    error_rate: float = Field(default=0.01, ge=0, le=1)
    latency_p95_ms: float = Field(default=120, gt=0)
    rps_spread: float = Field(
        default=0.2, ge=0, lt=1, description="tenants differ in size by up to ± this share"
    )


class VersionBehaviour(_Strict):
    """How a version behaves once installed; omitted fields keep the traffic baseline."""

    error_rate: float | None = Field(default=None, ge=0, le=1)
    latency_p95_ms: float | None = Field(default=None, gt=0)
    rps_factor: float = Field(default=1.0, gt=0)
    resources: dict[str, int] | None = Field(
        default=None, description="what one tenant's install holds; default: top-level resources"
    )


class NoiseSpec(_Strict):
    """Bounded relative noise per bucket (± share); bounds keep verdicts exact."""

    requests: float = Field(default=0.1, ge=0, le=0.5)
    error_rate: float = Field(default=0.15, ge=0, le=0.5)
    latency: float = Field(default=0.05, ge=0, le=0.5)


class MonitoringSpec(_Strict):
    """Shape of the simulated monitoring series."""

    bucket: Duration = Field(default=timedelta(seconds=10))
    delay: Duration = Field(default=timedelta(0), description="baseline signal delay")
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    max_points: int = Field(
        default=5_000_000, ge=1000, description="tenants x buckets a single query may touch"
    )

    @field_validator("bucket")
    @classmethod
    def _bucket_positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("bucket must be at least 1s")
        return value


class Scenario(_Strict):
    """A whole scenario file."""

    name: str | None = None
    description: str | None = None
    seed: int = 0
    plugin: str = Field(pattern=PLUGIN_PATTERN)
    tenants: Annotated[
        Annotated[TenantFleet, Tag("count")] | Annotated[list[ExplicitTenant], Tag("list")],
        Discriminator(_tenants_form),
    ]
    latency: LatencySpec = Field(default_factory=LatencySpec)
    traffic: TrafficSpec = Field(default_factory=TrafficSpec)
    versions: dict[Version, VersionBehaviour] = Field(default_factory=dict)
    resources: dict[str, int] = Field(default_factory=lambda: {"memory_mb": 256, "workers": 1})
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    faults: list[Fault] = Field(default_factory=list)

    def build_tenants(self) -> list[TenantSeed]:
        """The fleet as plain values, the same for the same scenario every time."""
        if isinstance(self.tenants, list):
            return [
                TenantSeed(t.id, dict(t.labels), t.version or "", t.config_version or "cfg-1")
                for t in self.tenants
            ]
        fleet = self.tenants
        ids = [f"{fleet.id_prefix}{n:0{fleet.id_width}d}" for n in range(1, fleet.count + 1)]
        labels: list[dict[str, str]] = [{} for _ in ids]
        for key, shares in fleet.labels.items():
            for index, value in zip(
                _shuffled(range(len(ids)), f"{self.seed}:labels:{key}"),
                _spread(shares, len(ids)),
                strict=True,
            ):
                labels[index][key] = value
        seeds = [
            TenantSeed(tid, lab, fleet.version, fleet.config_version)
            for tid, lab in zip(ids, labels, strict=True)
        ]
        seeds.extend(
            TenantSeed(
                t.id, dict(t.labels), t.version or fleet.version, t.config_version or "cfg-1"
            )
            for t in fleet.extra
        )
        return seeds

    def resources_for(self, version: str) -> dict[str, int]:
        behaviour = self.versions.get(version)
        if behaviour is not None and behaviour.resources is not None:
            return dict(behaviour.resources)
        return dict(self.resources)


@dataclass
class TenantSeed:
    """A tenant as the scenario creates it."""

    id: str
    labels: dict[str, str] = field(default_factory=dict)
    version: str = ""
    config_version: str = "cfg-1"


def _spread(shares: dict[str, float], count: int) -> list[str]:
    """Values in exact proportions (largest remainder), in the order the shares were written."""
    exact = {value: share * count for value, share in shares.items()}
    counts = {value: int(amount) for value, amount in exact.items()}
    left = count - sum(counts.values())
    by_remainder = sorted(exact, key=lambda v: (-(exact[v] - counts[v]), list(shares).index(v)))
    for value in by_remainder[:left]:
        counts[value] += 1
    return [value for value in shares for _ in range(counts[value])]


def _shuffled(items: range, seed_text: str) -> list[int]:
    order = list(items)
    random.Random(seed_text).shuffle(order)  # local, seeded: same order on every run
    return order


# --------------------------------------------------------------------------------------------
# Loading with file/line/field-path errors


@dataclass(frozen=True)
class ScenarioProblem:
    """One thing wrong with a scenario file."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ScenarioError(ValueError):
    """A scenario that cannot be used; `problems` lists each issue with file, line and path."""

    def __init__(self, problems: list[ScenarioProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML would keep the last one silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)

# Segments pydantic adds to error locations that are not keys in the file: union tags.
_UNION_TAGS = {*FAULT_TYPES, "count", "list"}


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _format_path(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def _without_union_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the tags pydantic puts after a discriminated union field (tenants, faults[i])."""
    parts = list(loc)
    if parts[:1] == ["tenants"] and len(parts) > 1 and parts[1] in ("count", "list"):
        del parts[1]
    if parts[:1] == ["faults"] and len(parts) > 2 and parts[2] in FAULT_TYPES:
        del parts[2]
    return tuple(parts)


def _locate(root: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[int | None, list[str | int]]:
    """Walk the YAML node tree along a pydantic error location: (line, readable path)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    path: list[str | int] = []
    for part in _without_union_tags(loc):
        if part == "[key]":
            continue
        if isinstance(node, yaml.MappingNode):
            match = next(
                ((k, v) for k, v in node.value if str(getattr(k, "value", None)) == str(part)),
                None,
            )
            if match is None:
                if part in _UNION_TAGS:
                    continue
                path.append(str(part))
                node = None  # a missing key: point at its parent mapping
                continue
            key_node, node = match
            line = key_node.start_mark.line + 1
            path.append(str(part))
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            path.append(part)
        else:
            if part in _UNION_TAGS:
                continue
            path.append(part if isinstance(part, int) else str(part))
    return line, path


def _message(error: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        tag = ctx.get("tag")
        if ctx.get("discriminator") == "'type'":
            allowed = ", ".join(FAULT_TYPES)
            return (*loc, "type"), f"unknown fault type {tag!r} (allowed: {allowed})"
        return loc, f"unknown value {tag!r} (expected one of {ctx.get('expected_tags')})"
    if kind == "union_tag_not_found":
        return loc, f"missing `type` (allowed: {', '.join(FAULT_TYPES)})"
    if kind == "extra_forbidden":
        return loc, "unknown field (check the spelling)"
    if kind == "missing":
        return loc, "required field is missing"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return loc, message


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise ScenarioError naming file, line and field path."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(
            [ScenarioProblem(name, None, "", f"cannot read: {exc.strerror}")]
        ) from exc
    return parse_scenario(text, name)


def parse_scenario(text: str, name: str = "<scenario>") -> Scenario:
    """Validate scenario YAML text; `name` is used in error messages."""
    try:
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or str(exc)
        raise ScenarioError([ScenarioProblem(name, line, "", f"invalid YAML: {problem}")]) from exc
    except yaml.YAMLError as exc:
        raise ScenarioError([ScenarioProblem(name, None, "", f"invalid YAML: {exc}")]) from exc
    if not isinstance(data, dict):
        raise ScenarioError(
            [ScenarioProblem(name, 1, "", "a scenario is a mapping (seed, plugin, tenants, ...)")]
        )
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc, message = _message(error)
            line, path = _locate(root, loc)
            problems.append(ScenarioProblem(name, line, _format_path(path), message))
        problems.sort(key=lambda p: p.line or 0)
        raise ScenarioError(_dedupe(problems)) from exc
    problems = []
    for loc, message in cross_check(scenario):
        line, path = _locate(root, loc)
        problems.append(ScenarioProblem(name, line, _format_path(path), message))
    if problems:
        raise ScenarioError(problems)
    return scenario


def _dedupe(problems: list[ScenarioProblem]) -> list[ScenarioProblem]:
    seen: set[ScenarioProblem] = set()
    return [p for p in problems if not (p in seen or seen.add(p))]


def cross_check(scenario: Scenario) -> list[tuple[tuple[Any, ...], str]]:
    """Checks that span fields: unique ids, fault targets that exist. (location, message) pairs."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    if isinstance(scenario.tenants, list):
        if not scenario.tenants:
            return [(("tenants",), "the tenant list is empty")]
        for index, tenant in enumerate(scenario.tenants):
            if tenant.version is None:
                problems.append((("tenants", index, "version"), "required field is missing"))
        if problems:
            return problems
    seeds = scenario.build_tenants()
    ids: set[str] = set()
    for index, seed in enumerate(seeds):
        if seed.id in ids:
            loc: tuple[Any, ...] = ("tenants",)
            if isinstance(scenario.tenants, list):
                loc = ("tenants", index, "id")
            else:
                loc = ("tenants", "extra")
            problems.append((loc, f"duplicate tenant id {seed.id!r}"))
        ids.add(seed.id)
    for index, fault in enumerate(scenario.faults):
        problems.extend(check_fault_targets(fault, seeds, ("faults", index)))
    return problems


def check_fault_targets(
    fault: Any, seeds: list[TenantSeed], loc: tuple[Any, ...]
) -> list[tuple[tuple[Any, ...], str]]:
    """A fault naming tenants or labels that no tenant has is a typo, not a silent no-op."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    ids = {seed.id for seed in seeds}
    for position, tenant_id in enumerate(getattr(fault, "tenants", None) or []):
        if tenant_id not in ids:
            problems.append(((*loc, "tenants", position), f"unknown tenant {tenant_id!r}"))
    where = getattr(fault, "where", None)
    if where:
        for key, wanted in where.items():
            values = wanted if isinstance(wanted, list) else [wanted]
            for value in values:
                if not any(selector_matches({key: value}, seed.labels) for seed in seeds):
                    problems.append(((*loc, "where", key), f"no tenant has label {key}={value}"))
    return problems
