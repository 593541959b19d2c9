"""Gate verdicts in words for a release manager, and where a failure concentrates across the
tenants' labels (`tier=bronze`): pure functions over a final gate evaluation dict."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from powerx_upgrade.domain.measurement import TenantStats, judge, metric_value

RATE_METRICS = frozenset({"error_rate"})
MS_METRICS = frozenset({"latency_p95_ms"})
POOLED_METRICS = frozenset({"error_rate", "latency_p95_ms"})
"""Metrics a segment can pool from per-tenant stats (the others are sums, not rates)."""

_BROKEN = {"<=": ">", "<": ">=", ">=": "<", ">": "<="}
_BASELINE = re.compile(r"baseline (?P<value>[-+0-9.eE]+)")
_DURATION = re.compile(r"for (?P<d>\d+m\d{2}s)")
_NAMED = 3
"""Tenants named in a sentence before `and N more`."""


# -- numbers in words ---------------------------------------------------------------------------


def format_value(metric: str, value: float | None, *, digits: int = 2) -> str:
    """A metric's value as people read it: rates in percent, latency in ms, others plain."""
    if value is None:
        return "no value"
    if metric in RATE_METRICS:
        return f"{value * 100:.{digits}f} %"
    if metric in MS_METRICS:
        return f"{value:.0f} ms"
    return f"{value:g}"


def batch_label(batch: int, name: str | None) -> str:
    """`batch 3 (rest)`; a batch without a policy name is just `batch 3`."""
    return f"batch {batch} ({name})" if name and name != f"batch {batch}" else f"batch {batch}"


def _tenants(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_NAMED])
    return shown + (f" and {len(ids) - _NAMED} more" if len(ids) > _NAMED else "")


def _relative(m: Mapping[str, Any]) -> str:
    """`(+20 % on pre_upgrade 125 ms)` for a relative limit, from the measurement's detail."""
    limit = str(m.get("limit") or "")
    if not limit.startswith(("+", "-")):
        return ""
    found = _BASELINE.search(str(m.get("detail") or ""))
    change = f"{limit[0]}{limit[1:].rstrip('%')} %"
    kind = str(m.get("baseline") or "baseline")
    if not found:
        return f" ({change} on {kind})"
    base = format_value(str(m["metric"]), float(found["value"]))
    return f" ({change} on {kind} {base})"


def _comparison(m: Mapping[str, Any], *, broken: bool) -> str:
    """`error_rate 9.36 % > limit 5.00 %` (a breach) or `error_rate 1.20 % <= 5.00 %`."""
    metric, op = str(m["metric"]), str(m.get("op") or "<=")
    value = format_value(metric, m.get("value"))
    limit = format_value(metric, m.get("threshold"))
    if broken:
        return f"{metric} {value} {_BROKEN.get(op, 'breaks')} limit {limit}{_relative(m)}"
    return f"{metric} {value} {op} {limit}{_relative(m)}"


def _ratio(m: Mapping[str, Any]) -> float:
    """How close a measurement came to its limit (1.0: on it; above: over it)."""
    value, threshold = m.get("value"), m.get("threshold")
    if value is None or not threshold:
        return 0.0
    ratio = float(value) / float(threshold)
    return ratio if m.get("op") in ("<=", "<") else (1 / ratio if ratio else float("inf"))


def _by_check(measurements: Iterable[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    checks: dict[int, list[Mapping[str, Any]]] = {}
    for m in measurements:
        checks.setdefault(int(m.get("check") or 0), []).append(m)
    return checks


# -- sentences ---------------------------------------------------------------------------------


def describe(
    evaluation: Mapping[str, Any],
    batch: int,
    batch_name: str | None = None,
    segment: Segment | None = None,
    baselines: Mapping[int, str | None] | None = None,
) -> str:
    """The verdict as one sentence a release manager can act on (the `reason` stays the short
    machine-ish text); `segment` adds where a failure concentrates; `baselines` names each
    check's baseline (check index -> `pre_upgrade`, `control`) for relative limits."""
    where = batch_label(batch, batch_name)
    if baselines:
        named = [
            {**m, "baseline": baselines.get(int(m.get("check") or 0))}
            for m in evaluation.get("measurements") or []
        ]
        evaluation = {**evaluation, "measurements": named}
    phase = str(evaluation.get("phase") or "")
    text = _PHRASES.get(phase, _other)(evaluation, where)
    if segment is not None:
        text += f"; {segment.sentence()}"
    return text


def _fail(evaluation: Mapping[str, Any], where: str) -> str:
    parts = []
    for found in _by_check(evaluation.get("measurements") or []).values():
        failing = [m for m in found if m.get("phase") == "fail"]
        if not failing:
            continue
        worst = max(failing, key=_ratio)
        if worst.get("metric") == "failed_deploys":
            parts.append(
                f"{worst['value']:g} deploys failed > max_failed {worst.get('limit')} "
                f"(allows {worst.get('threshold'):g}; {worst.get('samples')} planned)"
                + (f": {worst['detail']}" if worst.get("detail") else "")
            )
        elif worst.get("tenant"):
            tenants = [str(m["tenant"]) for m in sorted(failing, key=_ratio, reverse=True)]
            parts.append(f"{_comparison(worst, broken=True)} on {_tenants(tenants)}")
        else:
            parts.append(
                f"{_comparison(worst, broken=True)} over {worst.get('samples') or 0} samples"
            )
    if not parts:  # failed in earlier pokes, or without measurements (a broken gate)
        return f"{evaluation.get('reason') or 'the gate failed'} in {where}"
    return f"{'; '.join(parts)} in {where}"


def _pass(evaluation: Mapping[str, Any], where: str) -> str:
    parts = []
    for found in _by_check(evaluation.get("measurements") or []).values():
        closest = max(found, key=_ratio)
        if closest.get("value") is None:
            continue
        text = _comparison(closest, broken=False)
        if closest.get("tenant"):
            text += f" (closest: {closest['tenant']} of {len(found)})"
        else:
            text += f" over {closest.get('samples') or 0} samples"
        parts.append(text)
    return f"every check held in {where}" + (f": {', '.join(parts)}" if parts else "")


def _no_data(evaluation: Mapping[str, Any], where: str) -> str:
    reason = str(evaluation.get("reason") or "")
    found = _DURATION.search(reason)
    span = f" for {found['d']}" if found else ""
    short = [c for c in evaluation.get("coverage") or [] if c.get("silent")]
    if short:
        worst = max(short, key=lambda c: len(c["silent"]))
        silent = sorted(str(t) for t in worst["silent"])
        expected = worst.get("expected") or len(silent)
        who = f"{len(silent)} of {expected} tenants ({_tenants(silent)})"
        return f"no data from {who}{span} in {where}"
    return f"{reason or 'no monitoring data'} in {where}"


def _inconclusive(evaluation: Mapping[str, Any], where: str) -> str:
    parts = []
    for found in _by_check(evaluation.get("measurements") or []).values():
        undecided = [m for m in found if m.get("phase") == "inconclusive"]
        if not undecided:
            continue
        first = undecided[0]
        why = str(first.get("detail") or "not enough data")
        who = [str(m["tenant"]) for m in undecided if m.get("tenant")]
        parts.append(
            f"{first['metric']} undecided: {why}" + (f" (on {_tenants(who)})" if who else "")
        )
    if not parts:
        return f"{evaluation.get('reason') or 'the gate could not decide'} in {where}"
    return f"{'; '.join(parts)} in {where}"


def _error(evaluation: Mapping[str, Any], where: str) -> str:
    errors = evaluation.get("errors") or {}
    last = errors.get("last") or evaluation.get("reason") or "unknown error"
    counts = []
    if errors.get("consecutive"):
        counts.append(f"{errors['consecutive']} in a row")
    if errors.get("total"):
        counts.append(f"{errors['total']} in all")
    shown = f" ({', '.join(counts)})" if counts else ""
    return f"the monitoring source failed: {last}{shown}; {where} was not judged"


def _other(evaluation: Mapping[str, Any], where: str) -> str:
    return f"{evaluation.get('reason') or evaluation.get('phase') or 'no verdict'} in {where}"


_PHRASES: dict[str, Callable[[Mapping[str, Any], str], str]] = {
    "fail": _fail,
    "pass": _pass,
    "no_data": _no_data,
    "inconclusive": _inconclusive,
    "error": _error,
}


def failing_check(evaluation: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The failing measurement a segment can explain: the worst of the first failing check on
    a poolable metric (error_rate, latency_p95_ms)."""
    for found in _by_check(evaluation.get("measurements") or []).values():
        failing = [
            m for m in found if m.get("phase") == "fail" and m.get("metric") in POOLED_METRICS
        ]
        if failing:
            return max(failing, key=_ratio)
    return None


def shared_labels(
    tenants: Sequence[str], labels: Mapping[str, Mapping[str, str]]
) -> tuple[tuple[str, str], ...]:
    """The label values every one of `tenants` has (`(("tier", "bronze"),)`), sorted; empty when
    they share none or a tenant's labels are unknown. Names the segment of a failure too small
    to concentrate (one breaching tenant in a representative canary)."""
    known = [labels[t] for t in tenants if t in labels]
    if not known or len(known) < len(tenants):
        return ()
    first, *rest = known
    return tuple(
        sorted((k, v) for k, v in first.items() if all(other.get(k) == v for other in rest))
    )


def breaching_sentence(tenants: Sequence[str], shared: Sequence[tuple[str, str]]) -> str:
    """`failing tenants share tier=bronze (t-0030)`; `` without shared labels."""
    if not shared:
        return ""
    named = ", ".join(f"{k}={v}" for k, v in shared)
    who = "the failing tenant is" if len(tenants) == 1 else "the failing tenants share"
    return f"{who} {named} ({_tenants(sorted(tenants))})"


# -- concentration -----------------------------------------------------------------------------

Limit = float | Callable[[Sequence[str]], float | None]
"""A check's limit: one number, or the limit as it applies to a set of tenants (a relative
limit resolves against their pooled baseline)."""


@dataclass(frozen=True)
class Segment:
    """Tenants sharing one label value (or two) whose pooled metric breaks the limit while the
    rest holds."""

    labels: tuple[tuple[str, str], ...]
    metric: str
    value: float
    rest: float
    tenants: int
    rest_tenants: int
    samples: int
    threshold: float

    @property
    def name(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.labels)

    def sentence(self) -> str:
        """`concentrated in tier=bronze: 9.4 % vs 1.2 % elsewhere`."""
        inside = format_value(self.metric, self.value, digits=1)
        rest = format_value(self.metric, self.rest, digits=1)
        return f"concentrated in {self.name}: {inside} vs {rest} elsewhere"

    def as_dict(self) -> dict[str, Any]:
        return {
            "segment": self.name,
            "labels": dict(self.labels),
            "metric": self.metric,
            "value": self.value,
            "rest": self.rest,
            "tenants": self.tenants,
            "rest_tenants": self.rest_tenants,
            "samples": self.samples,
            "threshold": self.threshold,
            "text": self.sentence(),
        }


def concentration(
    metric: str,
    op: str,
    limit: Limit,
    stats: Mapping[str, TenantStats],
    labels: Mapping[str, Mapping[str, str]],
    *,
    min_tenants: int = 2,
    min_samples: int = 1,
) -> Segment | None:
    """The label segment that best explains a failing metric, or None when nothing concentrates.

    For each label `key=value` the metric is pooled over the tenants with that value (errors /
    requests for error_rate, the request-weighted mean for latency) and over all the others.
    A segment explains the failure when its pooled value breaks the limit and the others' holds;
    it needs `min_tenants` tenants and `min_samples` samples, so one noisy tenant is no segment,
    and at least one tenant elsewhere. The largest gap wins (ties: the larger segment, then the
    name). A pair of labels (`region=eu, tier=bronze`) is named instead only when no single label
    explains the failure, or when the pair's gap is at least `PAIR_GAIN` times the best single
    label's: the simpler explanation wins unless the pair is much sharper.
    """
    measured = {t: s for t, s in stats.items() if s.samples > 0}
    sizes = (min_tenants, min_samples)
    single = _best(metric, op, limit, measured, _candidates(measured, labels, 1), *sizes)
    pair = _best(metric, op, limit, measured, _candidates(measured, labels, 2), *sizes)
    if pair is not None and (single is None or _gap(pair, op) >= PAIR_GAIN * _gap(single, op)):
        return pair
    return single


PAIR_GAIN = 1.5
"""How much sharper (gap inside vs elsewhere) a two-label segment must be to be named instead
of the best single label."""


def _gap(segment: Segment, op: str) -> float:
    """How much worse the segment is than the rest (positive: worse)."""
    return segment.value - segment.rest if op in ("<=", "<") else segment.rest - segment.value


def _candidates(
    measured: Mapping[str, TenantStats], labels: Mapping[str, Mapping[str, str]], size: int
) -> dict[tuple[tuple[str, str], ...], list[str]]:
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for tenant in sorted(measured):
        own = sorted((str(k), str(v)) for k, v in (labels.get(tenant) or {}).items())
        for combo in combinations(own, size):
            groups.setdefault(combo, []).append(tenant)
    return groups


def _best(
    metric: str,
    op: str,
    limit: Limit,
    measured: Mapping[str, TenantStats],
    groups: Mapping[tuple[tuple[str, str], ...], list[str]],
    min_tenants: int,
    min_samples: int,
) -> Segment | None:
    found: list[Segment] = []
    for combo, inside in groups.items():
        members = set(inside)  # once per segment: per tenant it made this quadratic (100k: hours)
        outside = [t for t in measured if t not in members]
        samples = sum(measured[t].samples for t in inside)
        if len(inside) < min_tenants or not outside or samples < min_samples:
            continue
        value = metric_value(metric, [measured[t] for t in inside])
        rest = metric_value(metric, [measured[t] for t in outside])
        threshold = limit(inside) if callable(limit) else limit
        rest_threshold = limit(outside) if callable(limit) else limit
        if value is None or rest is None or threshold is None or rest_threshold is None:
            continue
        if judge(value, op, threshold) or not judge(rest, op, rest_threshold):
            continue
        found.append(
            Segment(combo, metric, value, rest, len(inside), len(outside), samples, threshold)
        )
    if not found:
        return None
    return min(found, key=lambda s: (-_gap(s, op), -s.tenants, s.name))
