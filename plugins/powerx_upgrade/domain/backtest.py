"""Policy backtest: a run's recorded gate series, poke by poke, through a (possibly edited)
policy with the live gate's own evaluation (`gate.evaluate`), next to what happened."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from pydantic import ValidationError

from powerx_upgrade.domain.gate import evaluate, fresh_since
from powerx_upgrade.domain.measurement import Measurement, Phase, TenantStats
from powerx_upgrade.domain.policy import Policy
from powerx_upgrade.domain.replay import input_from_json


class EditError(ValueError):
    """A `--set PATH=VALUE` that does not name a field of the plan's policy, or a bad value."""


@dataclass(frozen=True)
class Edit:
    path: str
    """Relative to the policy: `gate.checks[0].limit`."""
    before: Any
    after: Any

    def describe(self) -> str:
        return f"{self.path} {_shown(self.before)} -> {_shown(self.after)}"


_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)((?:\[\d+\])*)")


def edit_policy(
    policy: Policy, policy_id: str, assignments: Sequence[str]
) -> tuple[Policy, list[Edit]]:
    """The policy with each `policies.<id>.<path>=<YAML value>` (or `policy.<path>=...`)
    applied, validated as a whole; errors name the assignment and the field."""
    data = policy.model_dump(mode="json")
    edits: list[Edit] = []
    for text in assignments:
        path, sep, raw = text.partition("=")
        if not sep:
            raise EditError(f"--set {text!r}: expected PATH=VALUE, e.g. gate.checks[0].limit=0.03")
        relative = _relative(path.strip(), policy_id, text)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise EditError(f"--set {text!r}: the value is not YAML: {exc}") from None
        before = _assign(data, relative, value, text)
        edits.append(Edit(relative, before, value))
    try:
        return Policy.model_validate(data), edits
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise EditError(
            f"--set {', '.join(assignments)}: policy {policy_id}: {where}: {first['msg']}"
        ) from None


def _relative(path: str, policy_id: str, text: str) -> str:
    prefix = f"policies.{policy_id}."
    if path.startswith(prefix):
        return path[len(prefix) :]
    if path.startswith("policy."):
        return path[len("policy.") :]
    if path.startswith("policies."):
        raise EditError(
            f"--set {text!r}: the plan's policy is {policy_id!r}: write policies.{policy_id}.<path>"
        )
    raise EditError(f"--set {text!r}: a path starts with policies.{policy_id}. (or policy.)")


def _assign(data: dict[str, Any], path: str, value: Any, text: str) -> Any:
    """Set `path` in `data`; the value it had."""
    steps: list[str | int] = []
    for part in path.split("."):
        match = _STEP.fullmatch(part)
        if not match:
            raise EditError(f"--set {text!r}: {part!r} is not a field name (like checks[0])")
        steps.append(match.group(1))
        steps += [int(i) for i in re.findall(r"\[(\d+)\]", match.group(2))]
    node: Any = data
    for position, step in enumerate(steps):
        where = _path_text(steps[: position + 1])
        last = position == len(steps) - 1
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise EditError(f"--set {text!r}: {where}: no such entry (there are {size})")
        elif not isinstance(node, dict) or step not in node:
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none"
            raise EditError(f"--set {text!r}: {where}: no such field (fields: {known})")
        if last:
            before = node[step]
            node[step] = value
            return before
        node = node[step]
    raise EditError(f"--set {text!r}: empty path")


def _path_text(steps: Sequence[str | int]) -> str:
    out = ""
    for step in steps:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


# ---------------------------------------------------------------------------------------------
# What the ledger recorded, and the replay
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedPoke:
    at: datetime
    input: Mapping[str, Any] | None
    """The poke's input (`replay.input_json`); None: recorded without it."""


@dataclass(frozen=True)
class RecordedBatch:
    index: int
    pokes: tuple[RecordedPoke, ...]
    live_phase: str | None
    """The live verdict (None: the gate never gave one)."""
    live_reason: str
    live_at: datetime | None
    """When the live gate decided: its last poke (else the verdict's record)."""


@dataclass(frozen=True)
class RecordedRun:
    run_id: str
    plan_id: str
    outcome: str | None
    planned: tuple[int, ...]
    """The batch indices the run planned."""
    batches: tuple[RecordedBatch, ...]
    pre_upgrade: Mapping[str, TenantStats]


@dataclass(frozen=True)
class Replayed:
    index: int
    name: str
    phase: Phase | None
    """The backtest's verdict; None: undecided when the series ends, or not replayable."""
    at: datetime | None
    reason: str
    live_phase: str | None
    live_at: datetime | None
    missing: str = ""
    """Why this batch cannot be replayed (empty: it was)."""
    pokes: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "batch": self.index,
            "name": self.name,
            "backtest": self.phase.value if self.phase else None,
            "backtest_at": self.at.isoformat() if self.at else None,
            "backtest_reason": self.reason,
            "live": self.live_phase,
            "live_at": self.live_at.isoformat() if self.live_at else None,
            "missing": self.missing or None,
            "pokes_replayed": self.pokes,
        }


def replay_batch(
    policy: Policy,
    batch: RecordedBatch,
    pre_upgrade: Mapping[str, TenantStats],
    pools: Mapping[str, str],
) -> Replayed:
    """The batch's pokes in order through the policy's gate, carrying failures and freshness
    from poke to poke as the live gate does, until a final verdict or the series' end."""
    name = _name(policy, batch.index)
    done = _partial(name, batch)
    if batch.index > len(policy.batches):
        return done(missing=f"the policy has {len(policy.batches)} batch(es), not {batch.index}")
    if not batch.pokes:
        return done(
            missing=f"no poke was recorded (the live gate ended without one: {batch.live_reason})"
        )
    lacking = [p for p in batch.pokes if p.input is None or "now" not in p.input]
    if lacking:
        why = next(
            (str(p.input["omitted"]) for p in lacking if p.input and "omitted" in p.input), ""
        )
        return done(
            missing=f"{len(lacking)} of {len(batch.pokes)} poke(s) were recorded without their "
            + (f"input ({why})" if why else "input (recorded before the backtest existed)")
        )
    gate, bake = policy.gate, policy.batches[batch.index - 1].bake
    failures, last = 0, None
    for number, poke in enumerate(batch.pokes, start=1):
        assert poke.input is not None
        data = input_from_json(
            poke.input,
            bake=bake,
            pre_upgrade=pre_upgrade,
            pools=pools,
            failures_so_far=failures,
            last_data_at=last,
        )
        result = evaluate(gate, data)
        failures, last = result.failures, fresh_since(gate, data.now, result, last)
        if result.phase.final:
            reason = "; ".join(p for p in (_evidence(result.measurements), result.reason) if p)
            return done(phase=result.phase, at=data.now, reason=reason, pokes=number)
    end = batch.pokes[-1].at
    return done(
        reason=f"no verdict by {_clock(end)}, where the recorded series ends",
        pokes=len(batch.pokes),
    )


def _evidence(measurements: Sequence[Measurement], shown: int = 3) -> str:
    """`error_rate 0.0123, limit <= 0.005` for the failing measurements (the first `shown`)."""
    failing = [m for m in measurements if m.phase is Phase.FAIL and m.value is not None]
    words = [
        f"{m.metric}{f' of {m.tenant}' if m.tenant else ''} {m.value:.4g}, limit {m.op} "
        f"{m.threshold:.4g}"
        for m in failing[:shown]
        if m.value is not None and m.threshold is not None
    ]
    more = f" and {len(failing) - shown} more" if len(failing) > shown else ""
    return ", ".join(words) + more


def _partial(name: str, batch: RecordedBatch) -> Callable[..., Replayed]:
    def done(**fields: Any) -> Replayed:
        base: dict[str, Any] = {"phase": None, "at": None, "reason": ""}
        return Replayed(
            index=batch.index,
            name=name,
            live_phase=batch.live_phase,
            live_at=batch.live_at,
            **{**base, **fields},
        )

    return done


def _name(policy: Policy, index: int) -> str:
    if 1 <= index <= len(policy.batches):
        return policy.batches[index - 1].name or f"batch_{index}"
    return f"batch_{index}"


def replay_run(policy: Policy, run: RecordedRun, pools: Mapping[str, str]) -> list[Replayed]:
    """Every planned batch of the run: replayed, or why not (never ran, nothing recorded)."""
    recorded = {b.index: b for b in run.batches}
    found: list[Replayed] = []
    for index in run.planned:
        batch = recorded.get(index)
        if batch is None:
            found.append(
                Replayed(
                    index,
                    _name(policy, index),
                    None,
                    None,
                    "",
                    None,
                    None,
                    missing="never ran: the run ended before it",
                )
            )
            continue
        found.append(replay_batch(policy, batch, run.pre_upgrade, pools))
    return found


# ---------------------------------------------------------------------------------------------
# In words
# ---------------------------------------------------------------------------------------------

_WOULD = {
    Phase.PASS: "passed",
    Phase.FAIL: "failed",
    Phase.INCONCLUSIVE: "been inconclusive",
    Phase.NO_DATA: "ended with no data",
    Phase.ERROR: "ended in a monitoring error",
    Phase.PAUSE_REQUESTED: "been paused by an operator",
    Phase.ROLLBACK_REQUESTED: "been rolled back by an operator",
}
_DID = {
    "pass": "passed",
    "fail": "failed",
    "inconclusive": "was inconclusive",
    "no_data": "ended with no data",
    "error": "ended in a monitoring error",
    "pause_requested": "was paused by an operator",
    "rollback_requested": "was rolled back by an operator",
}


def live_words(batch: Replayed) -> str:
    if batch.live_phase is None:
        return "it had no verdict"
    did = _DID.get(batch.live_phase, batch.live_phase)
    return f"it {did} at {_clock(batch.live_at)}" if batch.live_at else f"it {did}"


def batch_line(batch: Replayed) -> str:
    """`batch 2 rest: would have failed at 02:14:05 (...); it passed at 02:20:11`."""
    head = f"batch {batch.index} {batch.name}"
    if batch.missing:
        live = f"; {live_words(batch)}" if batch.live_phase else ""
        return f"{head}: cannot replay: {batch.missing}{live}"
    if batch.phase is None:
        return f"{head}: {batch.reason}; {live_words(batch)}; the edited gate would have gone on"
    would = f"would have {_WOULD[batch.phase]} at {_clock(batch.at)} ({batch.reason})"
    same = batch.live_phase == batch.phase.value and batch.live_at == batch.at
    return f"{head}: {would}, as it did" if same else f"{head}: {would}; {live_words(batch)}"


def run_lines(
    run: RecordedRun,
    plan_id: str,
    policy_id: str,
    edits: Sequence[Edit],
    replayed: Sequence[Replayed],
) -> list[str]:
    """The backtest of one run, in words (what `powerx plan backtest` prints)."""
    changed = ("with " + "; ".join(e.describe() for e in edits)) if edits else "as it is now"
    other = f" (a run of plan {run.plan_id})" if run.plan_id != plan_id else ""
    lines = [
        f"run {run.run_id}{other}, outcome {run.outcome or 'none yet'}: policy {policy_id} "
        f"{changed} (times UTC)"
    ]
    stopped: int | None = None
    for batch in replayed:
        line = "  " + batch_line(batch)
        if stopped is not None:
            line += f" (the backtest's run would have stopped at batch {stopped})"
        elif batch.phase is not None and batch.phase is not Phase.PASS:
            stopped = batch.index
        lines.append(line)
    return lines


def _clock(value: datetime | None) -> str:
    if value is None:
        return "?"
    return value.astimezone(UTC).strftime("%H:%M:%S")


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else repr(value) if value is None else str(value)
