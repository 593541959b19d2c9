"""The policy engine: config texts -> validated plans plus every problem, located.

Pure: it takes (file name, text) pairs and returns data. Reading files and the environment
lives in `powerx_upgrade.config`. An invalid plan never hides the valid ones: each policy and
each plan is validated on its own, and only the ones with errors are left out.
"""

from __future__ import annotations

import copy
import difflib
import gc
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import BaseModel, ValidationError

from powerx_upgrade.domain import models
from powerx_upgrade.domain.checks import check_plan, check_policy
from powerx_upgrade.domain.models import ConfigFile, Plan, PlanSpec, Policy, SourceRef
from powerx_upgrade.domain.monitoring import check_checks, check_monitoring, resolve_monitoring
from powerx_upgrade.domain.problems import Path, Problem, Severity, errors_of, format_path
from powerx_upgrade.domain.represent import representation_findings
from powerx_upgrade.domain.validation import describe
from powerx_upgrade.domain.yaml_source import YamlSource, parse_yaml

log = logging.getLogger(__name__)

TOP_LEVEL_KEYS = ("version", "policies", "plans")
SUPPORTED_VERSIONS = (1,)


@dataclass
class ConfigResult:
    """What a config gives: the valid plans and policies, and every problem found."""

    plans: dict[str, Plan] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    invalid_plans: dict[str, SourceRef] = field(default_factory=dict)
    """Plans that were written but have errors: id -> where (so a UI can show them broken)."""
    files: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return errors_of(self.problems)

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def problems_of_plan(self, plan_id: str) -> list[Problem]:
        return [p for p in self.problems if p.plan_id == plan_id]


@dataclass
class _Entry:
    """A policy or plan as written, with where it came from."""

    kind: str  # "policies" | "plans"
    id: str
    raw: Any
    source: YamlSource

    @property
    def path(self) -> Path:
        return (self.kind, self.id)

    @property
    def ref(self) -> SourceRef:
        return SourceRef(file=self.source.file, line=self.source.line_of(self.path))


class _Collector:
    """Gathers problems, remembering which policies and plans they make invalid. Adding a
    problem and asking whether an entry has errors are O(1): a config with 50,000 problems is
    validated in linear time."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self._seen: set[Problem] = set()
        self._errors: set[tuple[str, str, str | None]] = set()

    def extend(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            self.record(problem)

    def record(self, problem: Problem) -> None:
        if problem in self._seen:
            return
        self._seen.add(problem)
        self.problems.append(problem)
        if problem.severity != "error":
            return
        for kind, entry_id in (("plans", problem.plan_id), ("policies", problem.policy_id)):
            if entry_id is not None:
                self._errors.add((kind, entry_id, None))
                self._errors.add((kind, entry_id, problem.file))

    def add(
        self,
        source: YamlSource,
        path: Path,
        message: str,
        severity: Severity = "error",
        line_path: Path | None = None,
    ) -> None:
        plan_id = policy_id = None
        if len(path) >= 2 and path[0] == "plans":
            plan_id = str(path[1])
        if len(path) >= 2 and path[0] == "policies":
            policy_id = str(path[1])
        line = source.line_of(line_path if line_path is not None else path)
        self.record(
            Problem(source.file, line, severity, format_path(path), message, plan_id, policy_id)
        )

    def has_errors(self, kind: str, entry_id: str, file: str | None = None) -> bool:
        return (kind, entry_id, file) in self._errors


def parse_config(
    files: Iterable[tuple[str, str | Problem]], default_provider: str | None = None
) -> ConfigResult:
    """Validate config files given as (display name, YAML text) pairs, all problems at once.

    A Problem in place of the text is a file that could not be read (`config.read_config_file`):
    it is reported and nothing of it is used. Whatever a file holds, it never takes another
    down: a file, policy or plan that fails unexpectedly becomes an error problem of its own
    (logged with its traceback), never an exception.

    `default_provider`: the deployment's monitoring provider (`config.deployment_provider()`),
    for policies and plans whose `monitoring` block names none; checks are validated against
    that provider's metric catalogue.
    """
    with _collector_paused():
        return _parse_config(files, default_provider)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Validation makes many small objects that live until the end; Python's cyclic collector
    would walk the growing heap again and again (half the time at 50,000 problems, with the same
    peak memory: benchmarks/validation_scaling.py). Paused for the call, then restored."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_config(
    files: Iterable[tuple[str, str | Problem]], default_provider: str | None
) -> ConfigResult:
    collector = _Collector()
    result = ConfigResult()
    entries: dict[str, list[_Entry]] = {"policies": [], "plans": []}

    for name, text in files:
        result.files.append(name)
        for entry in _read_file(name, text, collector):
            entries[entry.kind].append(entry)

    policies_raw = _unique(entries["policies"], "policy", collector)
    plans_raw = _unique(entries["plans"], "plan", collector)

    result.policies = _valid_policies(policies_raw, collector, default_provider)
    for plan_id, entry in plans_raw.items():
        plan = _guarded(
            entry,
            collector,
            partial(
                _resolve_plan, entry, policies_raw, result.policies, collector, default_provider
            ),
        )
        if plan is not None and not collector.has_errors("plans", plan_id):
            result.plans[plan_id] = plan
    for entry in entries["plans"]:
        if entry.id not in result.plans:
            result.invalid_plans.setdefault(entry.id, entry.ref)

    result.problems = sorted(
        collector.problems, key=lambda p: (p.file, p.line or 0, p.path, p.message)
    )
    return result


INTERNAL_ERROR_HINT = "an internal error, please report it with the file"


def _read_file(name: str, text: str | Problem, collector: _Collector) -> list[_Entry]:
    """One file's entries; an unreadable file or an unexpected failure is a problem of its own."""
    if isinstance(text, Problem):
        collector.record(text)
        return []
    try:
        source = parse_yaml(text, name)
        collector.extend(source.problems)
        return [] if source.data is None else _split(source, collector)
    except Exception as exc:  # isolation: one file never takes the others down
        log.exception("reading config file %s failed", name)
        collector.record(
            Problem(
                name,
                None,
                "error",
                "",
                f"cannot read this file ({type(exc).__name__}: {str(exc)[:200]}; "
                f"{INTERNAL_ERROR_HINT}); nothing in this file is used",
            )
        )
        return []


def _guarded(entry: _Entry, collector: _Collector, validate: Callable[[], Any]) -> Any:
    """`validate()` for one policy or plan; an unexpected failure is an error of that entry."""
    try:
        return validate()
    except Exception as exc:  # isolation: one entry never takes the others down
        log.exception("validating %s %s failed", entry.kind, entry.id)
        collector.add(
            entry.source,
            entry.path,
            f"cannot validate this {'policy' if entry.kind == 'policies' else 'plan'} "
            f"({type(exc).__name__}: {str(exc)[:200]}; {INTERNAL_ERROR_HINT})",
        )
        return None


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------


def _split(source: YamlSource, collector: _Collector) -> list[_Entry]:
    """Check a file's top level and cut it into its policy and plan entries."""
    data = source.data
    if not isinstance(data, Mapping):
        collector.add(
            source,
            (),
            f"the file must be a mapping with keys {', '.join(TOP_LEVEL_KEYS)}; "
            f"found {type(data).__name__}",
        )
        return []
    for key in data:
        if key not in TOP_LEVEL_KEYS and not str(key).startswith("x-"):
            collector.add(
                source,
                (str(key),),
                f"unknown top-level key '{key}' (allowed: {', '.join(TOP_LEVEL_KEYS)}, "
                "and x-* keys for YAML anchors)",
            )
    version = data.get("version", 1)
    if version not in SUPPORTED_VERSIONS:
        collector.add(
            source,
            ("version",),
            f"unsupported version {version!r} "
            f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})",
        )
        return []
    entries: list[_Entry] = []
    for kind in ("policies", "plans"):
        section = data.get(kind)
        if section is None:
            continue
        if not isinstance(section, Mapping):
            collector.add(
                source, (kind,), f"'{kind}' must be a mapping of id -> {kind[:-1]}, not a list"
            )
            continue
        for key, raw in section.items():
            entry_id = str(key)
            entry = _Entry(kind, entry_id, raw, source)
            problems = _check_id(entry_id)
            if problems:
                collector.add(source, entry.path, problems)
            entries.append(entry)
    return entries


def _valid_policies(
    policies_raw: Mapping[str, _Entry], collector: _Collector, default_provider: str | None
) -> dict[str, Policy]:
    valid: dict[str, Policy] = {}
    for policy_id, entry in policies_raw.items():
        policy = _guarded(
            entry, collector, partial(_checked_policy, entry, collector, default_provider)
        )
        if policy is not None and not collector.has_errors("policies", policy_id):
            valid[policy_id] = policy
    return valid


def _checked_policy(
    entry: _Entry, collector: _Collector, default_provider: str | None
) -> Policy | None:
    policy: Policy | None = _validate(Policy, entry.raw, entry.source, entry.path, collector)
    if policy is not None:
        for rel, message, severity in check_policy(policy, default_provider):
            collector.add(entry.source, (*entry.path, *rel), message, severity)
    return policy


def _check_id(entry_id: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", entry_id) or len(entry_id) > 200:
        return (
            f"invalid id {entry_id!r}: use letters, digits, '-', '_' and '.', "
            "starting with a letter or digit"
        )
    return None


def _unique(entries: list[_Entry], noun: str, collector: _Collector) -> dict[str, _Entry]:
    """Ids must be unique across all files; a duplicated id is an error at every definition."""
    by_id: dict[str, list[_Entry]] = {}
    for entry in entries:
        by_id.setdefault(entry.id, []).append(entry)
    unique: dict[str, _Entry] = {}
    for entry_id, group in by_id.items():
        if len(group) == 1:
            unique[entry_id] = group[0]
            continue
        # Within one file the YAML parser already reported the duplicate key.
        if len({e.source.file for e in group}) == 1:
            unique[entry_id] = group[-1]
            continue
        for entry in group:
            others = ", ".join(str(o.ref) for o in group if o is not entry)
            collector.add(
                entry.source,
                entry.path,
                f"duplicate {noun} id '{entry_id}' (also defined at {others}); ids must be unique "
                "across the config, so neither definition is used",
            )
        unique[entry_id] = group[0]
    return unique


def _resolve_plan(
    entry: _Entry,
    policies_raw: Mapping[str, _Entry],
    valid_policies: Mapping[str, Policy],
    collector: _Collector,
    default_provider: str | None = None,
) -> Plan | None:
    spec = _validate(PlanSpec, entry.raw, entry.source, entry.path, collector)
    if spec is None:
        return None
    for rel, message, severity in check_plan(spec):
        collector.add(entry.source, (*entry.path, *rel), message, severity)

    policy_path = (*entry.path, "policy")
    if spec.policy not in policies_raw:
        known = sorted(policies_raw)
        hint = difflib.get_close_matches(spec.policy, known, n=1)
        did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ""
        collector.add(
            entry.source,
            policy_path,
            f"unknown policy '{spec.policy}' (known: {', '.join(known) or 'none'}){did_you_mean}",
        )
        return None
    policy_entry = policies_raw[spec.policy]
    if spec.policy not in valid_policies:
        collector.add(
            entry.source,
            policy_path,
            f"policy '{spec.policy}' has errors (see {policy_entry.ref}); fix it to use this plan",
        )
        return None
    base = valid_policies[spec.policy]
    if spec.overrides:
        overrides_path = (*entry.path, "overrides")
        merged = deep_merge(policy_entry.raw, spec.overrides)
        policy = _validate(Policy, merged, entry.source, overrides_path, collector)
        if policy is None:
            return None
        base_findings = {(rel, message) for rel, message, _ in check_policy(base, default_provider)}
        for rel, message, severity in check_policy(policy, default_provider):
            if (rel, message) in base_findings:
                continue  # already reported at the policy itself
            collector.add(entry.source, (*overrides_path, *rel), message, severity)
    else:
        policy = base
    monitoring = _plan_monitoring(entry, spec, policy, base, collector, default_provider)
    if monitoring is None:
        return None
    plan = Plan(
        id=entry.id,
        source=entry.ref,
        description=spec.description,
        plugin=spec.plugin,
        policy_id=spec.policy,
        policy=policy,
        target_version=spec.target_version,
        artifact=spec.artifact,
        tenants=spec.tenants,
        window=spec.window,
        owners=spec.owners,
        notify=spec.notify,
        monitoring=monitoring,
        allow_downgrade=spec.allow_downgrade,
    )
    for rel, message, severity in representation_findings(plan):
        collector.add(entry.source, (*entry.path, *rel), message, severity)
    return plan


def _plan_monitoring(
    entry: _Entry,
    spec: PlanSpec,
    policy: Policy,
    base: Policy,
    collector: _Collector,
    default_provider: str | None,
) -> models.MonitoringSpec | None:
    """The plan's monitoring (policy's, then plan's block) and its checks against the resolved
    provider's catalogue; what the policy alone already reported is not repeated."""
    path = (*entry.path, "monitoring")
    try:
        monitoring = resolve_monitoring(policy.monitoring, spec.monitoring, default_provider)
    except ValidationError as exc:
        for rel, message in describe(models.MonitoringSpec, exc):
            collector.add(entry.source, (*path, *rel), message)
        return None
    if spec.monitoring is not None:
        for rel, message, severity in check_monitoring(monitoring):
            collector.add(entry.source, (*path, *rel), message, severity)
    reported = {
        (rel, message)
        for rel, message, _ in check_checks(
            base, resolve_monitoring(base.monitoring, None, default_provider)
        )
    }
    overridden = "checks" in (spec.overrides.get("gate") or {})
    for rel, message, severity in check_checks(policy, monitoring):
        if (rel, message) in reported:
            continue
        if overridden:
            collector.add(entry.source, (*entry.path, "overrides", *rel), message, severity)
        else:  # the check is the policy's; the plan's monitoring block made it unknown
            where = path if spec.monitoring is not None else (*entry.path, "policy")
            collector.add(
                entry.source, where, f"policy '{spec.policy}' {format_path(rel)}: {message}"
            )
    return monitoring


def deep_merge(base: Any, overrides: Any) -> Any:
    """Overrides onto a base: mappings merge key by key, anything else (lists too) replaces."""
    if isinstance(base, Mapping) and isinstance(overrides, Mapping):
        merged = {key: copy.deepcopy(value) for key, value in base.items()}
        for key, value in overrides.items():
            merged[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(overrides)


def _validate(
    model: type[BaseModel], raw: Any, source: YamlSource, path: Path, collector: _Collector
) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        for rel, message in describe(model, exc):
            collector.add(source, (*path, *rel), message)
        return None


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a config file (committed as include/config/*.schema.json)."""
    schema = ConfigFile.model_json_schema(mode="validation")
    schema["patternProperties"] = {"^x-": {"description": "free keys for YAML anchors; ignored"}}
    return schema
