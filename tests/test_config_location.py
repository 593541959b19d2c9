"""Config location: explicit path, then $POWERX_UPGRADE_CONFIG, then Airflow's [powerx_upgrade]
config, then the checkout's include/config/; never the working directory. The trust root
(signing keys) only from settings; a configured key directory that is missing is an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from powerx_upgrade.config import (
    ConfigNotFound,
    config_files,
    config_location,
    load_config,
    signing_keys_dir,
)
from tests.conftest import CONFIG_DIR, ROOT

pytestmark = pytest.mark.unit


def test_the_working_directory_never_chooses_the_config(tmp_path, monkeypatch):
    monkeypatch.delenv("POWERX_UPGRADE_CONFIG", raising=False)
    (tmp_path / "include" / "config").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert config_location() == CONFIG_DIR


def test_default_falls_back_to_the_project_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("POWERX_UPGRADE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert config_location() == CONFIG_DIR


def test_environment_beats_the_default_and_an_explicit_path_beats_both(tmp_path, monkeypatch):
    env_file = tmp_path / "env.yaml"
    env_file.write_text("plans: {}\n")
    monkeypatch.setenv("POWERX_UPGRADE_CONFIG", str(env_file))
    assert config_location() == env_file
    assert config_location(CONFIG_DIR) == CONFIG_DIR


def test_a_missing_environment_path_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("POWERX_UPGRADE_CONFIG", str(tmp_path / "gone"))
    with pytest.raises(ConfigNotFound, match=r"\$POWERX_UPGRADE_CONFIG .*gone.* does not exist"):
        config_location()


def test_a_directory_stands_for_its_policies_file_and_plans(tmp_path):
    (tmp_path / "plans").mkdir()
    for name in ("upgrade_policies.yaml", "plans/b.yaml", "plans/a.yml", "plans/notes.txt"):
        (tmp_path / name).write_text("plans: {}\n")
    assert [p.relative_to(tmp_path).as_posix() for p in config_files(tmp_path)] == [
        "upgrade_policies.yaml",
        "plans/a.yml",
        "plans/b.yaml",
    ]


def test_an_empty_directory_is_an_error(tmp_path):
    with pytest.raises(ConfigNotFound, match="no config files"):
        load_config([tmp_path])


def test_airflows_powerx_upgrade_section_names_the_config(tmp_path, monkeypatch):
    monkeypatch.delenv("POWERX_UPGRADE_CONFIG", raising=False)
    monkeypatch.setenv("AIRFLOW__POWERX_UPGRADE__CONFIG", str(tmp_path))
    assert config_location() == tmp_path
    monkeypatch.setenv("AIRFLOW__POWERX_UPGRADE__CONFIG", str(tmp_path / "gone"))
    with pytest.raises(ConfigNotFound, match=r"\[powerx_upgrade\] config .*gone"):
        config_location()


def test_signing_keys_come_from_settings_never_from_the_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("POWERX_UPGRADE_CONFIG", raising=False)
    monkeypatch.delenv("POWERX_UPGRADE_SIGNING_KEYS", raising=False)
    monkeypatch.delenv("AIRFLOW__POWERX_UPGRADE__SIGNING_KEYS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert (CONFIG_DIR / "signing_keys").is_dir()  # there, but no setting names it
    assert signing_keys_dir() == (None, False)
    monkeypatch.setenv("POWERX_UPGRADE_CONFIG", str(CONFIG_DIR))
    assert signing_keys_dir() == (CONFIG_DIR / "signing_keys", False)
    monkeypatch.setenv("AIRFLOW__POWERX_UPGRADE__SIGNING_KEYS", str(tmp_path))
    assert signing_keys_dir() == (tmp_path, True)


@pytest.mark.parametrize(
    "setting", ["POWERX_UPGRADE_SIGNING_KEYS", "AIRFLOW__POWERX_UPGRADE__SIGNING_KEYS"]
)
def test_a_configured_key_directory_that_is_missing_is_an_error(setting, tmp_path, monkeypatch):
    from powerx_upgrade.security.artifacts import SigningKeyError, load_public_keys

    monkeypatch.delenv("POWERX_UPGRADE_SIGNING_KEYS", raising=False)
    monkeypatch.setenv(setting, str(tmp_path / "no-keys"))
    directory, explicit = signing_keys_dir()
    assert explicit and directory == tmp_path / "no-keys"
    with pytest.raises(SigningKeyError, match="no-keys"):
        load_public_keys(directory)


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERX_UPGRADE_")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.dags
def test_validate_and_a_dag_parse_answer_the_same_from_any_working_directory(tmp_path):
    (tmp_path / "include" / "config").mkdir(parents=True)  # a decoy in the working directory
    validate = [sys.executable, "-m", "powerx_upgrade.cli.main", "plan", "validate"]
    parse = [
        sys.executable,
        "-c",
        "from powerx_upgrade.orchestration.factory import build_dags; "
        "dags = build_dags(); "
        "print(sorted(dags)); print([d.doc_md for _, d in sorted(dags.items())])",
    ]
    for args in (validate, parse):
        here, there = run(args, ROOT), run(args, tmp_path)
        assert here.returncode == there.returncode == 0, here.stderr + there.stderr
        assert here.stdout == there.stdout and "plugin_upgrade" in run(parse, tmp_path).stdout
