"""`powerx ledger upgrade` and `powerx ledger current`: the ledger's schema migrations (Alembic).

Without `--url` the ledger is the one the tasks use (the `powerx_ledger` connection, resolved
by `orchestration.ledger_connection`: the SQLite file only when no connection is defined).
Exit 0 done, 1 the database cannot be reached or migrated (the reason on stderr), 3 (`current`
only) the ledger is not at the revision this code needs.
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.engine import make_url

EXIT_OK, EXIT_FAILED, EXIT_BEHIND = 0, 1, 3


def register(nouns: argparse._SubParsersAction) -> None:
    parser = nouns.add_parser("ledger", help="the ledger database: schema migrations")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    upgrade = verbs.add_parser(
        "upgrade",
        help="migrate the ledger to the revision this code needs (idempotent)",
        description="Migrate the ledger's schema to the head revision in one transaction "
        "(a new database gets every table). Safe to run again and from several hosts at once.",
    )
    current = verbs.add_parser(
        "current", help="print the ledger's revision and the one this code needs"
    )
    for verb, func in ((upgrade, cmd_upgrade), (current, cmd_current)):
        verb.add_argument(
            "--url",
            metavar="URL",
            help="SQLAlchemy URL of the ledger (default: the powerx_ledger connection)",
        )
        verb.set_defaults(func=func)


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    from powerx_upgrade.orchestration.ledger_connection import resolve_ledger_url

    return resolve_ledger_url()


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def cmd_upgrade(args: argparse.Namespace) -> int:
    from powerx_upgrade.ledger import migrate

    try:
        url = _url(args)
        result = migrate.upgrade(url)
    except Exception as exc:
        print(f"powerx ledger upgrade: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if result.before == result.after:
        print(f"ledger at {result.url} is at revision {result.after}: nothing to do")
    else:
        print(f"ledger at {result.url} upgraded: {result.before or 'none'} -> {result.after}")
    return EXIT_OK


def cmd_current(args: argparse.Namespace) -> int:
    from powerx_upgrade.ledger import migrate, schema

    try:
        url = _url(args)
        found = migrate.current_revision(url)
    except Exception as exc:
        print(f"powerx ledger current: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"ledger at {_shown(url)}: revision {found or 'none'}, code needs {schema.REVISION}")
    return EXIT_OK if found == schema.REVISION else EXIT_BEHIND
