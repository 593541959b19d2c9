"""Signed artifacts: an Ed25519 signature over (plugin, version, sha256), made by the release
pipeline and checked in preflight before any tenant is touched. No Airflow, no network."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MESSAGE_HEADER = b"powerx-artifact-v1\n"
SIGNATURE_BYTES = 64
PUBLIC_KEY_SUFFIX = ".pub"
REFUSAL_CODES = ("unsigned", "malformed", "mismatch", "no_keys")

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# One line each in the signed message: no whitespace, no `=` (so no field can fake another).
_FIELD = re.compile(r"^[^\s=]{1,128}$")
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SigningKeyError(ValueError):
    """A signing key that cannot be used; the message names the file (or source) and why."""


class ArtifactRefused(Exception):
    """The artifact cannot be installed: unsigned, malformed, signed by no trusted key, or no
    trusted key configured. The message names plugin, version, sha256 and the keys tried; it
    never carries key material."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        plugin: str | None = None,
        version: str | None = None,
        sha256: str | None = None,
        tried: tuple[str, ...] = (),
    ) -> None:
        if code not in REFUSAL_CODES:
            raise ValueError(f"unknown refusal code {code!r} (known: {', '.join(REFUSAL_CODES)})")
        super().__init__(message)
        self.code = code
        self.message = message
        self.plugin = plugin
        self.version = version
        self.sha256 = sha256
        self.tried = tuple(tried)

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "plugin": self.plugin,
            "version": self.version,
            "sha256": self.sha256,
            "keys_tried": list(self.tried),
        }


def artifact_message(plugin: str, version: str, sha256: str) -> bytes:
    """The exact bytes that are signed: a versioned header, then one `name=value` line each."""
    for name, value in (("plugin", plugin), ("version", version)):
        if not isinstance(value, str) or not _FIELD.match(value):
            raise ValueError(
                f"{name} {value!r} cannot be signed: 1-128 characters without spaces or '='"
            )
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ValueError(f"sha256 {sha256!r} is not 64 hex digits")
    body = f"plugin={plugin}\nversion={version}\nsha256={sha256.lower()}\n"
    return MESSAGE_HEADER + body.encode("utf-8")


def private_key_from_pem(pem: bytes, where: str = "the private key") -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(
            f"{where} is not an unencrypted PEM private key ({type(exc).__name__})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{where} is a {type(key).__name__}, not an Ed25519 private key")
    return key


def sign_artifact(private_key_pem: bytes, plugin: str, version: str, sha256: str) -> str:
    """The base64 signature (64 bytes) of an artifact, for the run conf's `artifact_signature`."""
    key = private_key_from_pem(private_key_pem)
    return base64.b64encode(key.sign(artifact_message(plugin, version, sha256))).decode("ascii")


def _decode_signature(signature: str) -> bytes | None:
    """Standard or URL-safe base64 (padding optional) of exactly 64 bytes; None otherwise."""
    text = "".join(signature.split())
    text += "=" * (-len(text) % 4)
    for altchars in (None, b"-_"):
        try:
            raw = base64.b64decode(text, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == SIGNATURE_BYTES:
            return raw
    return None


class _Facts(TypedDict):
    """What an `ArtifactRefused` names about the artifact."""

    plugin: str
    version: str
    sha256: str


def verify_artifact(
    signature: str | None,
    plugin: str,
    version: str,
    sha256: str,
    keys: Mapping[str, Ed25519PublicKey],
) -> str:
    """The id of the trusted key that signed (plugin, version, sha256); raises ArtifactRefused
    (`unsigned`, `malformed`, `no_keys`, `mismatch`) otherwise."""
    what = f"artifact {plugin} {version} (sha256 {sha256})"
    facts = _Facts(plugin=plugin, version=version, sha256=sha256)
    if signature is None or not str(signature).strip():
        raise ArtifactRefused(
            "unsigned",
            f"{what} is unsigned: give artifact_signature (powerx artifact sign)",
            **facts,
        )
    try:
        message = artifact_message(plugin, version, sha256)
    except ValueError as exc:
        raise ArtifactRefused("malformed", f"{what} cannot be verified: {exc}", **facts) from None
    raw = _decode_signature(str(signature))
    if raw is None:
        raise ArtifactRefused(
            "malformed",
            f"the signature of {what} is not the base64 of {SIGNATURE_BYTES} bytes",
            **facts,
        )
    if not keys:
        raise ArtifactRefused(
            "no_keys",
            f"{what} cannot be verified: no signing keys are configured "
            "($POWERX_UPGRADE_SIGNING_KEYS, <config>/signing_keys/ or the powerx_signing "
            "connection)",
            **facts,
        )
    for key_id in sorted(keys):
        try:
            keys[key_id].verify(raw, message)
        except InvalidSignature:
            continue
        return key_id
    tried = tuple(sorted(keys))
    raise ArtifactRefused(
        "mismatch",
        f"the signature of {what} does not verify with any trusted key (tried: "
        f"{', '.join(tried)}): signed by another key, or for another plugin, version or sha256",
        tried=tried,
        **facts,
    )


def public_key_from_pem(data: bytes | str, where: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or an OpenSSH `ssh-ed25519` line."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    key: object
    try:
        if raw.lstrip().startswith(b"ssh-"):
            key = serialization.load_ssh_public_key(raw.strip())
        else:
            key = serialization.load_pem_public_key(raw)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(
            f"{where} is not a PEM (or OpenSSH) public key ({type(exc).__name__})"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{where} is a {type(key).__name__}, not an Ed25519 public key")
    return key


def load_public_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    """Every `*.pub` file of a directory, by key id (the file name without `.pub`)."""
    if not directory.is_dir():
        raise SigningKeyError(f"signing keys directory {str(directory)!r} does not exist")
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(directory.glob(f"*{PUBLIC_KEY_SUFFIX}")):
        key_id = path.name.removesuffix(PUBLIC_KEY_SUFFIX)
        if not _KEY_ID.match(key_id):
            raise SigningKeyError(
                f"{path}: key id {key_id!r} must be letters, digits, '.', '_' or '-'"
            )
        keys[key_id] = public_key_from_pem(path.read_bytes(), str(path))
    return keys


def public_keys_from_mapping(pems: Mapping[str, str], source: str) -> dict[str, Ed25519PublicKey]:
    """`{key_id: PEM}` (e.g. a connection's extra `public_keys`) as keys; errors name the id."""
    if not isinstance(pems, Mapping):
        raise SigningKeyError(f"{source}: public_keys must be a mapping of key id to PEM")
    keys = {}
    for key_id, pem in pems.items():
        if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
            raise SigningKeyError(
                f"{source}: key id {key_id!r} must be letters, digits, '.', '_' or '-'"
            )
        if not isinstance(pem, str):
            raise SigningKeyError(f"{source}: public_keys.{key_id} must be a PEM string")
        keys[key_id] = public_key_from_pem(pem, f"{source} public_keys.{key_id}")
    return keys


def merge_keys(
    *sources: tuple[str, Mapping[str, Ed25519PublicKey]],
) -> dict[str, Ed25519PublicKey]:
    """Keys of several sources; one id naming two different keys is an error (which one to
    trust would be a guess)."""
    merged: dict[str, Ed25519PublicKey] = {}
    origin: dict[str, str] = {}
    for source, keys in sources:
        for key_id, key in keys.items():
            if key_id in merged and _raw(merged[key_id]) != _raw(key):
                raise SigningKeyError(
                    f"key id {key_id!r} names different keys in {origin[key_id]} and {source}"
                )
            merged[key_id] = key
            origin.setdefault(key_id, source)
    return merged


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair: (private key PEM, PKCS#8 unencrypted; public key PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def public_key_of(private_key_pem: bytes) -> bytes:
    """The public key PEM that goes with a private key PEM."""
    return (
        private_key_from_pem(private_key_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
