"""`powerx approval issue`: sign an approval token for development and tests (production tokens
come from the approval system). Prints only the token, so `$(powerx approval issue ...)` works."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from powerx_upgrade.domain.durations import DurationError, parse_duration
from powerx_upgrade.security.approval import ACTIONS, DEFAULT_AUDIENCE, issue_approval, signing_key

EXIT_OK, EXIT_USAGE = 0, 2
DEFAULT_SECRET_ENV = "POWERX_APPROVAL_SECRET"

err_console = Console(stderr=True, soft_wrap=True, highlight=False)


def register(nouns: argparse._SubParsersAction) -> None:
    parser = nouns.add_parser("approval", help="approval tokens (development and tests)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    issue = verbs.add_parser(
        "issue",
        help="sign an approval token and print it",
        description="Sign an approval token (a JWT) allowing ACTION on PLAN (and RUN) and print "
        "only the token. The key is the shared secret in $VAR (HS256), or a PEM private key "
        "file (Ed25519 -> EdDSA, RSA -> RS256, EC P-256 -> ES256). For development and tests: "
        "in production tokens come from the approval system.",
    )
    issue.add_argument("--action", required=True, choices=ACTIONS)
    issue.add_argument("--plan", required=True, metavar="PLAN", help="plan id, or '*' for any")
    issue.add_argument("--run", metavar="RUN", help="only this run (default: any run of the plan)")
    issue.add_argument("--subject", required=True, metavar="WHO", help="the approver (claim sub)")
    issue.add_argument("--ttl", default="10m", metavar="DURATION", help="lifetime (default 10m)")
    issue.add_argument(
        "--no-mfa", dest="mfa", action="store_false", help="leave 'mfa' out of the amr claim"
    )
    key = issue.add_mutually_exclusive_group()
    key.add_argument(
        "--secret-env",
        default=DEFAULT_SECRET_ENV,
        metavar="VAR",
        help=f"environment variable holding the shared secret (default {DEFAULT_SECRET_ENV})",
    )
    key.add_argument("--key-file", type=Path, metavar="PEM", help="PEM private key file")
    issue.add_argument("--audience", default=DEFAULT_AUDIENCE, help="claim aud")
    issue.add_argument("--issuer", help="claim iss (default: none)")
    issue.add_argument("--jti", help="token id (default: a random one)")
    issue.set_defaults(func=cmd_issue)


def cmd_issue(args: argparse.Namespace) -> int:
    try:
        ttl = parse_duration(args.ttl)
        key, algorithm = _key(args)
        token = issue_approval(
            key,
            algorithm=algorithm,
            subject=args.subject,
            action=args.action,
            plan_id=args.plan,
            run_id=args.run,
            audience=args.audience,
            issuer=args.issuer,
            ttl=ttl,
            mfa=args.mfa,
            jti=args.jti,
        )
    except (DurationError, ValueError, OSError) as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_USAGE
    print(token)
    return EXIT_OK


def _key(args: argparse.Namespace) -> tuple[object, str]:
    if args.key_file is not None:
        try:
            pem = args.key_file.read_bytes()
        except OSError as exc:
            raise ValueError(f"--key-file {args.key_file}: {exc.strerror or exc}") from None
        try:
            return signing_key(pem)
        except ValueError as exc:
            raise ValueError(f"--key-file {args.key_file}: {exc}") from None
    secret = os.environ.get(args.secret_env, "")
    if not secret:
        raise ValueError(
            f"environment variable {args.secret_env} is empty or not set; put the shared "
            "secret there (the password of the powerx_approval connection) or use --key-file"
        )
    return secret, "HS256"
