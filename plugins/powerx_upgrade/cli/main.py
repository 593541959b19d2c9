"""Entry point of the `powerx` console script: one sub-command module per noun."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from powerx_upgrade import __version__
from powerx_upgrade.cli import approval as approval_cmd
from powerx_upgrade.cli import artifact as artifact_cmd
from powerx_upgrade.cli import demo as demo_cmd
from powerx_upgrade.cli import plan as plan_cmd
from powerx_upgrade.cli import plugin as plugin_cmd
from powerx_upgrade.cli import sandbox as sandbox_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="powerx",
        description="PowerX grey upgrade: plan, preview and run batch-by-batch plugin rollouts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    nouns = parser.add_subparsers(dest="noun", metavar="COMMAND", required=True)
    plan_cmd.register(nouns)
    sandbox_cmd.register(nouns)
    demo_cmd.register(nouns)
    plugin_cmd.register(nouns)
    approval_cmd.register(nouns)
    artifact_cmd.register(nouns)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
