"""`powerx sandbox ...`: the bundled PowerX platform simulator (see issue 3)."""

from __future__ import annotations

import argparse


def register(nouns: argparse._SubParsersAction) -> None:
    parser = nouns.add_parser("sandbox", help="run the bundled PowerX platform simulator")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("serve", help="serve the platform contract over HTTP (not built yet)")
    parser.set_defaults(func=lambda args: parser.error("the sandbox is not built yet"))
