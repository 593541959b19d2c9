"""Entry point of the `powerx` console script: one sub-command module per noun.

The dev tools' commands (`powerx demo`, `powerx sandbox`) live in the `powerx-dev` package of the
repository, which registers them in the `powerx.commands` entry-point group; without it those
nouns say that they need it (the runtime package never imports the dev package)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points

from powerx_upgrade import __version__
from powerx_upgrade.cli import approval as approval_cmd
from powerx_upgrade.cli import artifact as artifact_cmd
from powerx_upgrade.cli import ledger as ledger_cmd
from powerx_upgrade.cli import plan as plan_cmd
from powerx_upgrade.cli import plugin as plugin_cmd

COMMANDS_GROUP = "powerx.commands"
"""Entry-point group of commands from other packages: each entry is `register(subparsers)`."""

DEV_COMMANDS = ("sandbox", "demo")
"""The dev package's commands, in the order `powerx --help` lists them."""

EXIT_NEEDS_DEV_PACKAGE = 2

EXIT_INTERNAL = 70
"""An internal error (a bug, not bad input): one line on stderr, no traceback (sysexits'
EX_SOFTWARE). 1 is "invalid"/"refused" and 2 is usage throughout, so CI tells a crash from a bad
config. `--debug` or POWERX_DEBUG=1 raises it with its traceback instead."""
DEBUG_ENV = "POWERX_DEBUG"


def command_entry_points() -> list[EntryPoint]:
    """The installed `powerx.commands` entries: the dev commands first (in their order), then
    any other by name."""
    found = {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP)}
    order = [name for name in DEV_COMMANDS if name in found]
    order += sorted(name for name in found if name not in DEV_COMMANDS)
    return [found[name] for name in order]


def _needs_dev_package(noun: str, nouns: argparse._SubParsersAction) -> None:
    """A placeholder for a dev command whose package is not installed: it says so and exits 2."""
    parser = nouns.add_parser(
        noun, help="(needs the powerx-dev package)", add_help=False, prefix_chars="\0"
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def explain(args: argparse.Namespace) -> int:
        print(
            f"powerx {noun}: this command comes from the powerx-dev package (the dev tools: "
            "sandbox, local stack, demo), which is not installed. From a checkout of the "
            "repository, `uv run --locked powerx "
            f"{noun} ...` installs it (packages/powerx-dev); elsewhere "
            "`pip install ./packages/powerx-dev`.",
            file=sys.stderr,
        )
        return EXIT_NEEDS_DEV_PACKAGE

    parser.set_defaults(func=explain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="powerx",
        description="PowerX grey upgrade: plan, preview and run batch-by-batch plugin rollouts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"on an internal error, show the traceback (also ${DEBUG_ENV}=1)",
    )
    nouns = parser.add_subparsers(dest="noun", metavar="COMMAND", required=True)
    plan_cmd.register(nouns)
    registered = set()
    for entry in command_entry_points():
        entry.load()(nouns)
        registered.add(entry.name)
    for noun in DEV_COMMANDS:
        if noun not in registered:
            _needs_dev_package(noun, nouns)
    plugin_cmd.register(nouns)
    approval_cmd.register(nouns)
    artifact_cmd.register(nouns)
    ledger_cmd.register(nouns)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command: its exit code; 2 on a usage error (argparse), EXIT_INTERNAL on a bug."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        if args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        message = " ".join(str(exc).split())[:500]
        print(
            f"powerx: internal error: {type(exc).__name__}: {message} (exit {EXIT_INTERNAL}; "
            f"--debug or {DEBUG_ENV}=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
