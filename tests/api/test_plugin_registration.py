"""The AirflowPlugin is registered exactly once: through the package's `airflow.plugins` entry
point, not a second time by the plugins-folder scan (`plugins/.airflowignore`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.airflow_harness import airflow_bin, base_env
from tests.conftest import ROOT

pytestmark = pytest.mark.dags


def test_airflow_lists_the_plugin_once_from_its_entry_point(tmp_path: Path):
    env = base_env(tmp_path / "home")
    env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
    done = subprocess.run(
        [airflow_bin(), "plugins", "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    listed = json.loads(done.stdout[done.stdout.index("[") :])
    ours = [p for p in listed if p["name"] == "powerx_upgrade"]
    assert len(ours) == 1, listed
    (plugin,) = ours
    assert "EntryPoint(name='powerx_upgrade'" in plugin["source"]
    assert "group='airflow.plugins'" in plugin["source"]
    assert [(a["url_prefix"], a["name"]) for a in plugin["fastapi_apps"]] == [
        ("/internal/version/upgrade", "PowerX grey upgrade")
    ]
    # nothing else of the package was picked up by the folder scan
    assert len(listed) == 1, [p["name"] for p in listed]


def test_the_plugins_folder_ignores_the_package():
    ignore = (ROOT / "plugins" / ".airflowignore").read_text().splitlines()
    assert "powerx_upgrade/" in ignore


def test_the_entry_point_names_the_plugin_class():
    from importlib.metadata import entry_points

    (found,) = [e for e in entry_points(group="airflow.plugins") if e.name == "powerx_upgrade"]
    from powerx_upgrade.api.plugin import PowerXUpgradePlugin

    assert found.load() is PowerXUpgradePlugin
