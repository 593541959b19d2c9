"""`powerx sandbox ...`: serve the bundled PowerX platform simulator, or check a scenario file."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

EXIT_INVALID_SCENARIO = 2
EXIT_CANNOT_SERVE = 1


def register(nouns: argparse._SubParsersAction) -> None:
    parser = nouns.add_parser(
        "sandbox",
        help="run the bundled PowerX platform simulator",
        description="The sandbox serves the PowerX platform contract over HTTP for a scenario "
        "file: tenants, upgrades and rollbacks, monitoring, notify/audit, fault injection.",
    )
    _add_verbs(parser)


def _add_verbs(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    serve = verbs.add_parser("serve", help="serve the platform contract over HTTP")
    serve.add_argument("--scenario", required=True, type=Path, help="scenario YAML file")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8700, help="port (0: any free port)")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level (info logs every request)",
    )
    serve.add_argument(
        "--ready-file",
        type=Path,
        help="write {url, port, pid} as JSON here once listening (for test harnesses)",
    )
    serve.add_argument(
        "--clock-offset",
        default="0s",
        help="the platform's clock ahead of the real one, e.g. 2m (or -30s: behind); "
        "POST /sandbox/clock changes it at runtime",
    )
    serve.set_defaults(func=_serve)
    check = verbs.add_parser("check", help="validate a scenario file and summarise it")
    check.add_argument("--scenario", required=True, type=Path, help="scenario YAML file")
    check.set_defaults(func=_check)


def _load(path: Path):
    from powerx_dev.sandbox.scenario import ScenarioError, load_scenario

    try:
        return load_scenario(path)
    except ScenarioError as exc:
        print(f"invalid scenario:\n{exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    scenario = _load(args.scenario)
    if scenario is None:
        return EXIT_INVALID_SCENARIO
    from powerx_dev.sandbox.clock import parse_offset
    from powerx_dev.sandbox.server import PortUnavailable, serve

    try:
        offset_ms = parse_offset(args.clock_offset)
    except ValueError as exc:
        print(f"error: --clock-offset: {exc}", file=sys.stderr)
        return EXIT_INVALID_SCENARIO
    try:
        serve(
            scenario,
            args.host,
            args.port,
            source=str(args.scenario),
            log_level=args.log_level,
            ready_file=args.ready_file,
            clock_offset_ms=offset_ms,
        )
    except PortUnavailable as exc:
        print(f"error: {exc} (pick another --port, or 0 for any free port)", file=sys.stderr)
        return EXIT_CANNOT_SERVE
    return 0


def _check(args: argparse.Namespace) -> int:
    scenario = _load(args.scenario)
    if scenario is None:
        return EXIT_INVALID_SCENARIO
    seeds = scenario.build_tenants()
    print(f"ok: {args.scenario}")
    print(f"  plugin {scenario.plugin}, seed {scenario.seed}, {len(seeds)} tenants")
    keys = sorted({key for seed in seeds for key in seed.labels})
    for key in keys:
        counts = Counter(seed.labels.get(key, "-") for seed in seeds)
        print(f"  label {key}: " + ", ".join(f"{v} {n}" for v, n in sorted(counts.items())))
    versions = Counter(seed.version for seed in seeds)
    print("  installed: " + ", ".join(f"{v} x{n}" for v, n in sorted(versions.items())))
    for version, spec in scenario.versions.items():
        print(f"  version {version}: {spec.model_dump(exclude_none=True)}")
    for index, fault in enumerate(scenario.faults):
        print(f"  faults[{index}]: {fault.model_dump(mode='json', exclude_none=True)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run `sandbox VERB ...` without the rest of the `powerx` CLI (used by `python -m`)."""
    parser = argparse.ArgumentParser(prog="powerx sandbox")
    _add_verbs(parser)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
