"""Artifact signatures: what is signed, what verifies, and why anything else is refused."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from powerx_upgrade.security.artifacts import (
    ArtifactRefused,
    SigningKeyError,
    artifact_message,
    generate_keypair,
    load_public_keys,
    merge_keys,
    public_key_from_pem,
    public_key_of,
    public_keys_from_mapping,
    sign_artifact,
    verify_artifact,
)

pytestmark = pytest.mark.unit

SHA = "ab" * 32
OTHER_SHA = "cd" * 32


@pytest.fixture(scope="module")
def pair() -> tuple[bytes, bytes]:
    return generate_keypair()


@pytest.fixture(scope="module")
def keys(pair) -> dict:
    return {"release-2026": public_key_from_pem(pair[1], "test")}


def test_the_signed_message_is_versioned_one_field_per_line_and_lowercases_the_digest():
    assert artifact_message("crm-sync", "2.4.0", SHA.upper()) == (
        b"powerx-artifact-v1\nplugin=crm-sync\nversion=2.4.0\nsha256=" + SHA.encode() + b"\n"
    )


@pytest.mark.parametrize(
    ("plugin", "version", "sha256", "named"),
    [
        ("crm sync", "2.4.0", SHA, "plugin"),
        ("crm-sync", "2.4.0\nsha256=00", SHA, "version"),
        ("crm-sync", "a=b", SHA, "version"),
        ("crm-sync", "", SHA, "version"),
        ("crm-sync", "2.4.0", "xyz", "sha256"),
    ],
)
def test_fields_that_could_fake_another_line_cannot_be_signed(plugin, version, sha256, named):
    with pytest.raises(ValueError, match=f"^{named} "):
        artifact_message(plugin, version, sha256)


def test_a_signature_verifies_with_the_key_that_made_it_and_names_that_key(pair, keys):
    signature = sign_artifact(pair[0], "crm-sync", "2.4.0", SHA)
    assert len(base64.b64decode(signature)) == 64
    assert verify_artifact(signature, "crm-sync", "2.4.0", SHA, keys) == "release-2026"
    # the digest's case does not matter (it is signed lowercased)
    assert verify_artifact(signature, "crm-sync", "2.4.0", SHA.upper(), keys) == "release-2026"


def test_url_safe_base64_without_padding_is_accepted(pair, keys):
    raw = base64.b64decode(sign_artifact(pair[0], "crm-sync", "2.4.0", SHA))
    url_safe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert verify_artifact(url_safe, "crm-sync", "2.4.0", SHA, keys) == "release-2026"


@pytest.mark.parametrize(
    ("plugin", "version", "sha256"),
    [("crm-sync", "2.5.0", SHA), ("crm-sync", "2.4.0", OTHER_SHA), ("billing", "2.4.0", SHA)],
)
def test_a_signature_for_another_plugin_version_or_digest_is_a_mismatch(
    pair, keys, plugin, version, sha256
):
    signature = sign_artifact(pair[0], "crm-sync", "2.4.0", SHA)
    with pytest.raises(ArtifactRefused) as refused:
        verify_artifact(signature, plugin, version, sha256, keys)
    assert refused.value.code == "mismatch"
    message = str(refused.value)
    assert plugin in message and version in message and sha256 in message
    assert "release-2026" in message and refused.value.tried == ("release-2026",)


def test_a_signature_by_an_untrusted_key_is_a_mismatch_naming_every_key_tried(keys):
    stranger, _ = generate_keypair()
    signature = sign_artifact(stranger, "crm-sync", "2.4.0", SHA)
    trusted = {**keys, "ci": public_key_from_pem(generate_keypair()[1], "test")}
    with pytest.raises(ArtifactRefused, match=r"tried: ci, release-2026") as refused:
        verify_artifact(signature, "crm-sync", "2.4.0", SHA, trusted)
    assert refused.value.code == "mismatch"


@pytest.mark.parametrize("signature", [None, "", "   "])
def test_no_signature_is_unsigned(keys, signature):
    with pytest.raises(ArtifactRefused, match=r"crm-sync 2\.4\.0 .*unsigned") as refused:
        verify_artifact(signature, "crm-sync", "2.4.0", SHA, keys)
    assert refused.value.code == "unsigned"


@pytest.mark.parametrize(
    "signature",
    ["not base64!", base64.b64encode(b"x" * 63).decode(), base64.b64encode(b"x" * 65).decode()],
)
def test_a_signature_that_is_not_64_bytes_of_base64_is_malformed(keys, signature):
    with pytest.raises(ArtifactRefused, match="not the base64 of 64 bytes") as refused:
        verify_artifact(signature, "crm-sync", "2.4.0", SHA, keys)
    assert refused.value.code == "malformed"


def test_a_bad_digest_is_malformed(pair, keys):
    signature = sign_artifact(pair[0], "crm-sync", "2.4.0", SHA)
    with pytest.raises(ArtifactRefused, match="64 hex digits") as refused:
        verify_artifact(signature, "crm-sync", "2.4.0", "xyz", keys)
    assert refused.value.code == "malformed"


def test_without_trusted_keys_nothing_verifies(pair):
    signature = sign_artifact(pair[0], "crm-sync", "2.4.0", SHA)
    with pytest.raises(ArtifactRefused, match="no signing keys are configured") as refused:
        verify_artifact(signature, "crm-sync", "2.4.0", SHA, {})
    assert refused.value.code == "no_keys"
    assert refused.value.as_dict()["keys_tried"] == []


def test_refusal_messages_never_carry_key_material(pair, keys):
    signature = sign_artifact(pair[0], "crm-sync", "2.4.0", SHA)
    with pytest.raises(ArtifactRefused) as refused:
        verify_artifact(signature, "crm-sync", "2.5.0", SHA, keys)
    text = str(refused.value.as_dict())
    body = [line for line in pair[0].decode().splitlines() if "-----" not in line]
    assert all(line not in text for line in body)
    assert "PRIVATE" not in text and "PUBLIC KEY" not in text


def test_public_keys_load_from_every_pub_file_named_by_file_stem(tmp_path, pair):
    (tmp_path / "release-2026.pub").write_bytes(pair[1])
    (tmp_path / "ci.pub").write_bytes(generate_keypair()[1])
    (tmp_path / "release-2026.key").write_bytes(pair[0])  # not a .pub: ignored
    (tmp_path / "README.md").write_text("public keys go here")
    keys = load_public_keys(tmp_path)
    assert sorted(keys) == ["ci", "release-2026"]
    signature = sign_artifact(pair[0], "crm-sync", "2.4.0", SHA)
    assert verify_artifact(signature, "crm-sync", "2.4.0", SHA, keys) == "release-2026"


def test_an_openssh_ed25519_public_key_is_accepted(tmp_path, pair):
    private = serialization.load_pem_private_key(pair[0], password=None)
    line = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    (tmp_path / "ssh.pub").write_bytes(line + b" ci@example\n")
    assert list(load_public_keys(tmp_path)) == ["ssh"]


def test_a_pub_file_that_is_not_an_ed25519_key_is_an_error_naming_the_file(tmp_path):
    ec = (
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "ec.pub").write_bytes(ec)
    with pytest.raises(SigningKeyError, match=r"ec\.pub is a .*not an Ed25519 public key"):
        load_public_keys(tmp_path)
    (tmp_path / "ec.pub").write_text("garbage")
    with pytest.raises(SigningKeyError, match=r"ec\.pub is not a PEM"):
        load_public_keys(tmp_path)


def test_a_missing_keys_directory_is_an_error_naming_it(tmp_path):
    with pytest.raises(SigningKeyError, match="nowhere' does not exist"):
        load_public_keys(tmp_path / "nowhere")


def test_connection_keys_load_by_id_and_a_bad_one_is_named(pair):
    keys = public_keys_from_mapping({"conn-key": pair[1].decode()}, "connection powerx_signing")
    assert list(keys) == ["conn-key"]
    with pytest.raises(SigningKeyError, match=r"connection powerx_signing public_keys\.bad"):
        public_keys_from_mapping({"bad": "nope"}, "connection powerx_signing")
    with pytest.raises(SigningKeyError, match=r"key id '\.\./x'"):
        public_keys_from_mapping({"../x": pair[1].decode()}, "connection powerx_signing")


def test_one_id_for_two_different_keys_is_an_error_the_same_key_twice_is_not(pair):
    mine = {"k": public_key_from_pem(pair[1], "a")}
    assert list(merge_keys(("dir", mine), ("conn", mine))) == ["k"]
    other = {"k": public_key_from_pem(generate_keypair()[1], "b")}
    with pytest.raises(SigningKeyError, match="'k' names different keys in dir and conn"):
        merge_keys(("dir", mine), ("conn", other))


def test_signing_needs_an_unencrypted_ed25519_private_key(pair):
    ec = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(SigningKeyError, match="not an Ed25519 private key"):
        sign_artifact(ec, "crm-sync", "2.4.0", SHA)
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM private key"):
        sign_artifact(pair[1], "crm-sync", "2.4.0", SHA)
    assert public_key_of(pair[0]) == pair[1]


def test_the_module_imports_no_airflow():
    code = (
        "import sys, powerx_upgrade.security.artifacts; "
        "print(any(m.split('.')[0] == 'airflow' for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_generated_pairs_are_pem(tmp_path: Path):
    private, public = generate_keypair()
    assert private.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----")
