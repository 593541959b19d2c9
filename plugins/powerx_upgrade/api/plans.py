"""Plans written through the API: `<config dir>/plans/<plan_id>.yaml`, validated by the same
policy engine as the YAML the operators write by hand, replaced atomically, versioned by ETag.

No HTTP and no Airflow here: the app maps `Refused` to its answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from powerx_upgrade.api.errors import Refused
from powerx_upgrade.config import PLANS_DIR, config_files, deployment_provider, read_config_file
from powerx_upgrade.domain.config import parse_config
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.domain.policy import Policy
from powerx_upgrade.domain.problems import Problem
from powerx_upgrade.orchestration.description import dag_id_for

PLAN_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
"""Plan ids the API accepts: they become a file name and a DAG id, so no dots, no slashes."""
_LOCK_NAME = ".api-plans.lock"
log = logging.getLogger(__name__)


def check_plan_id(plan_id: object, field_path: str = "plan_id") -> str:
    """The plan id, or a 422 naming the field: a plan id is never a path."""
    if not isinstance(plan_id, str) or not PLAN_ID.fullmatch(plan_id):
        raise Refused(
            422,
            "invalid_plan_id",
            f"{field_path}: {plan_id!r} is not a plan id (1-63 characters: lowercase letters, "
            "digits and '-', starting with a letter or digit)",
            problems=[
                {
                    "path": field_path,
                    "message": f"{plan_id!r} is not a plan id: use 1-63 lowercase letters, "
                    "digits and '-', starting with a letter or digit",
                }
            ],
        )
    return plan_id


def etag_of(data: bytes) -> str:
    """The strong ETag of a plan file: the sha256 of its bytes, quoted."""
    return f'"{hashlib.sha256(data).hexdigest()}"'


def matches(if_match: str, etag: str | None) -> bool:
    """RFC 9110 If-Match with strong comparison: `*` matches any current file; a list of
    ETags matches when one of them is the current one (weak ETags never match)."""
    if etag is None:
        return False
    candidates = [c.strip() for c in if_match.split(",") if c.strip()]
    return "*" in candidates or etag in candidates


def plan_text(plan_id: str, plan: dict[str, Any]) -> str:
    """The YAML file of one plan, as an operator would write it."""
    header = f"# Written through POST /internal/version/upgrade/plan (plan {plan_id}).\n"
    body = yaml.safe_dump(
        {"version": 1, "plans": {plan_id: plan}},
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
    )
    return header + body


def storable_text(plan_id: str, plan: dict[str, Any]) -> str:
    """`plan_text`, refused (422 `unstorable_plan`) unless the YAML reads back as the very plan
    sent: nothing is written that GET /plans/{plan_id} or the DAG loader could not read."""
    problem = None
    try:
        text = plan_text(plan_id, plan)
        if yaml.safe_load(text) != {"version": 1, "plans": {plan_id: plan}}:
            problem = "its YAML does not read back as the plan sent"
    except (yaml.YAMLError, RecursionError, UnicodeError, ValueError) as exc:
        problem = f"it cannot be written as YAML ({type(exc).__name__})"
    if problem is not None:
        raise Refused(
            422,
            "unstorable_plan",
            f"plan {plan_id!r}: {problem}; nothing was written",
            problems=[{"path": "plan", "message": problem}],
        )
    return text


@dataclass
class Validation:
    """The plan as the policy engine resolved it, and the problems found in it."""

    plan: Plan | None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    baseline: Policy | None = None
    """The policy a loosening is judged against (see `_baseline`)."""


@dataclass(frozen=True)
class Written:
    plan_id: str
    dag_id: str
    etag: str
    path: Path
    created: bool
    warnings: list[Problem]


class PlanStore:
    """The plans directory of a config directory.

    :param config_dir: the config directory (`$POWERX_UPGRADE_CONFIG` or `include/config/`);
        the API refuses to write when the config is a single file, which would not load
        `plans/` at all.
    """

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = Path(config_dir)

    @property
    def plans_dir(self) -> Path:
        return self.config_dir / PLANS_DIR

    def path_of(self, plan_id: str) -> Path:
        """`plans/<plan_id>.yaml`; the id is checked first, and the result must sit directly in
        the plans directory (defence in depth: the id pattern already excludes any path)."""
        check_plan_id(plan_id)
        path = self.plans_dir / f"{plan_id}.yaml"
        if path.parent.resolve() != self.plans_dir.resolve() or path.name != f"{plan_id}.yaml":
            raise Refused(422, "invalid_plan_id", f"plan_id: {plan_id!r} is not a plan id")
        return path

    def read(self, plan_id: str) -> tuple[bytes, str] | None:
        """The plan file's bytes and ETag, or None when the API has no file for it."""
        path = self.path_of(plan_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return data, etag_of(data)

    def validate(self, plan_id: str, text: str) -> Validation:
        """Run `text` (the plan's new file) through the policy engine together with every other
        file of the config, so that policy references and duplicate ids are checked too."""
        target = self.path_of(plan_id)
        texts = []
        for file in config_files(self.config_dir):
            if file.resolve() == target.resolve():
                continue  # the file being replaced
            texts.append((self._display(file), read_config_file(file)))  # never raises
        name = self._display(target)
        texts.append((name, text))
        provider = deployment_provider(self.config_dir)
        try:
            result = parse_config(texts, provider)
        except Exception as exc:  # the policy engine failed on this text: refused, logged
            log.exception("the policy engine could not check plan %r", plan_id)
            what = f"{type(exc).__name__}: {str(exc)[:200]}"
            raise Refused(
                422,
                "invalid_plan",
                f"plan {plan_id!r} could not be checked ({what}); nothing was written",
                problems=[{"path": "plan", "message": f"the plan could not be checked ({what})"}],
            ) from None
        mine = [p for p in result.problems if p.file == name or p.plan_id == plan_id]
        plan = result.plans.get(plan_id)
        return Validation(
            plan=plan,
            errors=[p for p in mine if p.severity == "error"],
            warnings=[p for p in mine if p.severity == "warning"],
            baseline=self._baseline(plan_id, texts[:-1], result, provider),
        )

    def _baseline(
        self, plan_id: str, others: list[tuple[str, str]], new: Any, provider: str | None
    ) -> Policy | None:
        """What a loosening is judged against: the plan's current policy (an update of a valid
        plan), else the named policy itself (so `overrides` cannot loosen it unnoticed)."""
        current = self.read(plan_id)
        if current is not None:
            try:
                name = self._display(self.path_of(plan_id))
                now = parse_config([*others, (name, current[0].decode("utf-8"))], provider)
            except Exception:  # an unreadable current file: judged against the named policy
                log.warning("the current plans/%s.yaml could not be read back", plan_id)
            else:
                if plan_id in now.plans:
                    return now.plans[plan_id].policy
        plan = new.plans.get(plan_id)
        return new.policies.get(plan.policy_id) if plan is not None else None

    def write(
        self,
        plan_id: str,
        plan: dict[str, Any],
        if_match: str | None,
        check: Callable[[Validation], None] | None = None,
    ) -> Written:
        """Validate and store a plan: create it (no `If-Match`, no file yet) or replace it
        (`If-Match` equal to the current ETag). Raises `Refused` (422, 409, 412, 428) and
        leaves the file untouched on any refusal. `check` runs on a valid plan whose
        precondition holds, just before the write (the approval of a loosening: it may
        refuse, and is not reached by a request refused for other reasons)."""
        self._require_directory()
        text = storable_text(plan_id, plan)
        validation = self.validate(plan_id, text)
        if validation.errors:
            raise Refused(
                422,
                "invalid_plan",
                f"plan {plan_id!r} has {len(validation.errors)} error(s): "
                + "; ".join(f"{api_path(p.path, plan_id)}: {p.message}" for p in validation.errors),
                problems=[problem_json(p, plan_id) for p in validation.errors],
            )
        path = self.path_of(plan_id)
        if check is not None:
            self._check_precondition(plan_id, self.read(plan_id), if_match)
            check(validation)
        self.plans_dir.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        with self._locked():
            current = self.read(plan_id)
            self._check_precondition(plan_id, current, if_match)
            atomic_write(path, data)
        return Written(
            plan_id=plan_id,
            dag_id=dag_id_for(plan_id),
            etag=etag_of(data),
            path=path,
            created=current is None,
            warnings=validation.warnings,
        )

    def _check_precondition(
        self, plan_id: str, current: tuple[bytes, str] | None, if_match: str | None
    ) -> None:
        if current is None and if_match is not None:
            raise Refused(
                412,
                "plan_missing",
                f"If-Match {if_match} given, but plan {plan_id!r} has no file "
                f"(plans/{plan_id}.yaml): create it without If-Match",
            )
        if current is not None and if_match is None:
            raise Refused(
                428,
                "precondition_required",
                f"plan {plan_id!r} exists: send If-Match with its ETag {current[1]} to update it",
                headers={"ETag": current[1]},
            )
        if current is not None and if_match is not None and not matches(if_match, current[1]):
            raise Refused(
                412,
                "stale_plan",
                f"plan {plan_id!r} changed since you read it: If-Match {if_match} but the "
                f"file's ETag is {current[1]}; read it again and redo your change",
                headers={"ETag": current[1]},
            )

    def _require_directory(self) -> None:
        if not self.config_dir.is_dir():
            raise Refused(
                409,
                "config_not_a_directory",
                f"the config is the single file {self.config_dir}: the API writes plans only "
                f"into a config directory's {PLANS_DIR}/ (point POWERX_UPGRADE_CONFIG at one)",
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across the api-server's workers: read-compare-replace of the
        ETag is one step."""
        with open(self.plans_dir / _LOCK_NAME, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _display(self, file: Path) -> str:
        try:
            return str(file.resolve().relative_to(self.config_dir.resolve()))
        except ValueError:
            return str(file)


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old bytes or the new ones, never a part: a temp
    file in the same directory (not `*.yaml`, so the DAG loader never reads it), fsync,
    `os.replace`, fsync of the directory."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def api_path(path: str, plan_id: str) -> str:
    """`plans.<id>.policy` -> `plan.policy`: the field as the request body names it."""
    prefix = f"plans.{plan_id}"
    if path == prefix:
        return "plan"
    if path.startswith(prefix + ".") or path.startswith(prefix + "["):
        return "plan" + path[len(prefix) :]
    return path or "plan"


def problem_json(problem: Problem, plan_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {"path": api_path(problem.path, plan_id), "message": problem.message}
    if problem.line:
        found["line"] = problem.line
    return found


def preview_document(config: Path, ledger: Any, plan_id: str, body: Any) -> dict[str, Any]:
    """`POST /plans/{plan_id}/preview`: batches, time estimate and window fit of a valid plan
    of the api-server's config (a 404 for an unknown plan, a 422 for one that is invalid or
    that the tenants cannot fill)."""
    from datetime import UTC, datetime

    from powerx_upgrade.config import load_config
    from powerx_upgrade.domain.estimate import estimate
    from powerx_upgrade.domain.planner import PlanningError, Tenant, plan_batches
    from powerx_upgrade.rollout.history import measured_latency

    result = load_config([config])
    plan = result.plans.get(plan_id)
    if plan is None:
        if plan_id in result.invalid_plans:
            problems = [problem_json(p, plan_id) for p in result.problems_of_plan(plan_id)]
            raise Refused(422, "invalid_plan", f"plan {plan_id!r} is invalid", problems=problems)
        raise Refused(404, "unknown_plan", f"no plan {plan_id!r} in the api-server's config")
    tenants = [
        Tenant(
            t.id,
            {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in t.labels.items()},
        )
        for t in body.tenants
    ]
    now = body.now or datetime.now(UTC)
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    try:
        batch_plan = plan_batches(plan, tenants)
    except PlanningError as exc:
        raise Refused(422, "planning_failed", f"tenants: {exc}") from None
    latency = measured_latency(ledger, plan.plugin)
    timing = estimate(plan, batch_plan, latency, now, slots=body.deploy_slots)
    return {
        **batch_plan.as_dict(),
        "plugin": plan.plugin,
        "policy": plan.policy_id,
        "target_version": plan.target_version,
        "evaluated_at": now.isoformat(),
        "estimate": timing.as_dict(),
    }
