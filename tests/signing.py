"""Signing with the suite's TEST-ONLY key pair (tests/fixtures/signing_keys/): every run that is
not a dry run must carry an artifact signature a trusted key verifies."""

from __future__ import annotations

from typing import Any

from powerx_upgrade.security.artifacts import sign_artifact
from tests.conftest import ROOT

SIGNING_KEYS = ROOT / "tests" / "fixtures" / "signing_keys"
TEST_KEY_ID = "powerx-test-only"
TEST_PRIVATE_KEY = SIGNING_KEYS / f"{TEST_KEY_ID}.private.pem"


def sign(version: str, sha256: str, plugin: str = "crm-sync") -> str:
    """The test key's signature of (plugin, version, sha256)."""
    return sign_artifact(TEST_PRIVATE_KEY.read_bytes(), plugin, version, sha256)


def signed(conf: dict[str, Any], sha256: str, plugin: str = "crm-sync") -> dict[str, Any]:
    """`conf` plus the signature of its target version and artifact (`artifact_sha256` of the
    conf, else `sha256`: the plan's default)."""
    digest = conf.get("artifact_sha256") or sha256
    return {**conf, "artifact_signature": sign(conf["target_version"], digest, plugin)}
