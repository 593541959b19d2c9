"""Config location: explicit path, then $POWERX_UPGRADE_CONFIG, then include/config/."""

from __future__ import annotations

import pytest

from powerx_upgrade.config import ConfigNotFound, config_files, config_location, load_config
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.unit


def test_default_is_include_config_of_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("POWERX_UPGRADE_CONFIG", raising=False)
    (tmp_path / "include" / "config").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert config_location() == tmp_path / "include" / "config"


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
