"""`powerx plan ...`: validate, preview and describe upgrade plans."""

from __future__ import annotations

import argparse


def register(nouns: argparse._SubParsersAction) -> None:
    parser = nouns.add_parser("plan", help="validate and preview upgrade plans")
    parser.set_defaults(func=lambda args: parser.error("not built yet"))
