"""`powerx artifact keygen|sign|verify`: what CI runs to sign a build and check it the way
preflight will, in process and through the installed console script."""

from __future__ import annotations

import hashlib
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from powerx_upgrade.cli.main import main
from powerx_upgrade.security.artifacts import load_public_keys, verify_artifact
from tests.signing import SIGNING_KEYS, TEST_KEY_ID, TEST_PRIVATE_KEY, sign

pytestmark = pytest.mark.unit

SHA = "ab" * 32


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def artifact(version: str = "2.4.0", *digest: str) -> list[str]:
    return ["--plugin", "crm-sync", "--version", version, *(digest or ("--sha256", SHA))]


def test_keygen_writes_a_0600_private_key_and_a_public_key_that_preflight_loads(capsys, tmp_path):
    code, out, _ = run(capsys, "artifact", "keygen", "--out", str(tmp_path / "k"), "--name", "ci")
    assert code == 0
    private, public = tmp_path / "k" / "ci.private.pem", tmp_path / "k" / "ci.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert "key id      ci" in out and "BEGIN" not in out  # paths, never the key itself
    assert list(load_public_keys(tmp_path / "k")) == ["ci"]
    code, signature, _ = run(capsys, "artifact", "sign", "--key", str(private), *artifact())
    keys = load_public_keys(tmp_path / "k")
    assert code == 0 and verify_artifact(signature.strip(), "crm-sync", "2.4.0", SHA, keys) == "ci"


def test_keygen_never_overwrites_a_key(capsys, tmp_path):
    assert run(capsys, "artifact", "keygen", "--out", str(tmp_path))[0] == 0
    before = (tmp_path / "powerx-release.private.pem").read_bytes()
    code, _, err = run(capsys, "artifact", "keygen", "--out", str(tmp_path))
    assert code == 2 and "powerx-release.private.pem exists" in err
    assert (tmp_path / "powerx-release.private.pem").read_bytes() == before


def test_keygen_refuses_a_key_id_that_is_not_a_file_name(capsys, tmp_path):
    code, _, err = run(capsys, "artifact", "keygen", "--out", str(tmp_path), "--name", "../x")
    assert code == 2 and "--name '../x'" in err
    assert list(tmp_path.iterdir()) == []


def test_sign_prints_the_signature_preflight_expects(capsys):
    code, out, _ = run(capsys, "artifact", "sign", "--key", str(TEST_PRIVATE_KEY), *artifact())
    assert code == 0 and out.strip() == sign("2.4.0", SHA)


def test_sign_and_verify_hash_a_file_when_given_one(capsys, tmp_path):
    build = tmp_path / "crm-sync-2.4.0.tgz"
    build.write_bytes(b"the build" * 1000)
    digest = hashlib.sha256(build.read_bytes()).hexdigest()
    code, out, _ = run(
        capsys, "artifact", "sign", "--key", str(TEST_PRIVATE_KEY),
        *artifact("2.4.0", "--file", str(build)),
    )  # fmt: skip
    assert code == 0 and out.strip() == sign("2.4.0", digest)
    code, out, _ = run(
        capsys, "artifact", "verify", "--signature", out.strip(), "--keys", str(SIGNING_KEYS),
        *artifact("2.4.0", "--file", str(build)),
    )  # fmt: skip
    assert code == 0 and f"signed by {TEST_KEY_ID}" in out


def test_verify_refuses_a_signature_for_another_version_with_exit_one(capsys):
    code, _, err = run(
        capsys, "artifact", "verify", "--signature", sign("2.4.0", SHA),
        "--keys", str(SIGNING_KEYS), *artifact("2.5.0"),
    )  # fmt: skip
    assert code == 1
    assert "refused (mismatch)" in err and "crm-sync 2.5.0" in err and TEST_KEY_ID in err


def test_verify_reads_the_keys_directory_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("POWERX_UPGRADE_SIGNING_KEYS", str(SIGNING_KEYS))
    code, out, _ = run(capsys, "artifact", "verify", "--signature", sign("2.4.0", SHA), *artifact())
    assert code == 0 and TEST_KEY_ID in out


def test_verify_without_any_trusted_key_is_refused(capsys, monkeypatch, tmp_path):
    config = tmp_path / "config"
    config.mkdir()  # a config dir without signing_keys/
    monkeypatch.delenv("POWERX_UPGRADE_SIGNING_KEYS", raising=False)
    monkeypatch.setenv("POWERX_UPGRADE_CONFIG", str(config))
    code, _, err = run(capsys, "artifact", "verify", "--signature", sign("2.4.0", SHA), *artifact())
    assert code == 1 and "refused (no_keys)" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sign", "--key", "/nope.pem", *artifact()], "--key /nope.pem: no such file"),
        (["sign", "--key", str(SIGNING_KEYS / f"{TEST_KEY_ID}.pub"), *artifact()], "private key"),
        (["sign", "--key", str(TEST_PRIVATE_KEY), *artifact("2.4.0", "--sha256", "xyz")], "64 hex"),
        (["sign", "--key", str(TEST_PRIVATE_KEY), *artifact("2.4.0", "--file", "/nope")], "/nope"),
        (["verify", "--signature", "x", "--keys", "/nowhere", *artifact()], "does not exist"),
    ],
)
def test_bad_input_exits_two_naming_what_is_wrong(capsys, argv, message):
    code, _, err = run(capsys, "artifact", *argv)
    assert code == 2 and message in err


def test_the_console_script_exits_zero_when_verified_and_one_when_refused(tmp_path):
    powerx = shutil.which("powerx") or str(Path(sys.executable).parent / "powerx")
    base = [powerx, "artifact", "verify", "--keys", str(SIGNING_KEYS), *artifact()]
    good = subprocess.run(
        [*base, "--signature", sign("2.4.0", SHA)], capture_output=True, text=True, check=False
    )
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(
        [*base, "--signature", sign("2.4.1", SHA)], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1 and "refused (mismatch)" in bad.stderr
