"""`powerx artifact ...`: make signing keys, sign a build for a run's conf, verify a signature
(what a CI pipeline runs before it triggers a plan)."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from powerx_upgrade.config import SIGNING_KEYS_ENV, signing_keys_dir
from powerx_upgrade.security.artifacts import (
    PUBLIC_KEY_SUFFIX,
    ArtifactRefused,
    SigningKeyError,
    generate_keypair,
    load_public_keys,
    sign_artifact,
    verify_artifact,
)

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
PRIVATE_KEY_SUFFIX = ".private.pem"
DEFAULT_KEY_ID = "powerx-release"
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


class UsageError(Exception):
    """A bad argument or file (exit 2); the message names it."""


def register(nouns: argparse._SubParsersAction) -> None:
    parser = nouns.add_parser(
        "artifact",
        help="sign and verify artifacts (Ed25519 over plugin, version and SHA-256)",
        description="Artifact signatures for the run conf's artifact_signature: preflight "
        "refuses a run whose artifact no trusted key signed.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    keygen = verbs.add_parser(
        "keygen",
        help="make an Ed25519 key pair: ID.private.pem (mode 0600) and ID.pub",
        description="Write a new key pair into DIR. The private key signs in CI (keep it in "
        "your secret store); ID.pub goes into the trusted keys directory "
        f"(${SIGNING_KEYS_ENV}, or <config>/signing_keys/) or the powerx_signing connection.",
    )
    keygen.add_argument("--out", required=True, type=Path, metavar="DIR")
    keygen.add_argument(
        "--name", default=DEFAULT_KEY_ID, metavar="ID", help="key id (default %(default)s)"
    )
    keygen.set_defaults(func=cmd_keygen)

    sign = verbs.add_parser(
        "sign",
        help="print the signature of plugin + version + sha256",
        description="Print the base64 Ed25519 signature for the run conf's artifact_signature "
        "(or `powerx plugin upgrade --signature`).",
    )
    sign.add_argument("--key", required=True, type=Path, metavar="PEM", help="private key file")
    _artifact_arguments(sign)
    sign.set_defaults(func=cmd_sign)

    verify = verbs.add_parser(
        "verify",
        help="check a signature against the trusted keys; exit 0 ok, 1 refused",
        description="Verify as preflight does. Keys: --keys DIR, else "
        f"${SIGNING_KEYS_ENV}, else <config>/signing_keys/ (the powerx_signing connection is "
        "only read inside Airflow).",
    )
    _artifact_arguments(verify)
    verify.add_argument("--signature", required=True, metavar="S", help="base64 signature")
    verify.add_argument("--keys", type=Path, metavar="DIR", help="directory of *.pub keys")
    verify.set_defaults(func=cmd_verify)


def _artifact_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", required=True, metavar="P")
    parser.add_argument("--version", required=True, metavar="V", help="target version")
    digest = parser.add_mutually_exclusive_group(required=True)
    digest.add_argument("--sha256", metavar="H", help="hex digest of the build")
    digest.add_argument("--file", type=Path, metavar="F", help="the build: its SHA-256 is used")


def _digest(args: argparse.Namespace) -> str:
    if args.sha256:
        return args.sha256
    if not args.file.is_file():
        raise UsageError(f"--file {args.file}: no such file")
    with args.file.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Bad input (arguments, files, keys) exits 2 with one line naming it."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (UsageError, SigningKeyError, ValueError, OSError) as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}")
            return EXIT_USAGE

    return wrapper


@_guarded
def cmd_keygen(args: argparse.Namespace) -> int:
    if not _KEY_ID.match(args.name):
        raise UsageError(f"--name {args.name!r}: letters, digits, '.', '_' or '-' (max 64)")
    args.out.mkdir(parents=True, exist_ok=True)
    private_path = args.out / f"{args.name}{PRIVATE_KEY_SUFFIX}"
    public_path = args.out / f"{args.name}{PUBLIC_KEY_SUFFIX}"
    for path in (private_path, public_path):
        if path.exists():
            raise UsageError(f"{path} exists: choose another --name or --out (nothing written)")
    private, public = generate_keypair()
    # Created 0600 in one step: the private key is never readable by others, not even briefly.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    public_path.write_bytes(public)
    out.print(f"key id      {escape(args.name)}")
    out.print(f"private key {escape(str(private_path))} (mode 0600: keep it secret, sign in CI)")
    out.print(
        f"public key  {escape(str(public_path))} (copy into the trusted keys directory, "
        f"${SIGNING_KEYS_ENV} or <config>/signing_keys/)"
    )
    return EXIT_OK


@_guarded
def cmd_sign(args: argparse.Namespace) -> int:
    if not args.key.is_file():
        raise UsageError(f"--key {args.key}: no such file")
    signature = sign_artifact(args.key.read_bytes(), args.plugin, args.version, _digest(args))
    print(signature)  # plain: CI captures it as is (`SIG=$(powerx artifact sign ...)`)
    return EXIT_OK


@_guarded
def cmd_verify(args: argparse.Namespace) -> int:
    directory, explicit = (args.keys, True) if args.keys else signing_keys_dir()
    found = directory is not None and (explicit or directory.is_dir())
    keys = load_public_keys(directory) if found else {}
    try:
        key_id = verify_artifact(args.signature, args.plugin, args.version, _digest(args), keys)
    except ArtifactRefused as refused:
        err.print(f"[red]refused ({refused.code}):[/] {escape(refused.message)}")
        return EXIT_REFUSED
    out.print(f"[green]ok[/]: {escape(args.plugin)} {escape(args.version)} signed by {key_id}")
    return EXIT_OK
