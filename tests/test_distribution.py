"""The runtime wheel (what an Airflow deployment installs) holds the plugin, the DAG factory, the
ledger, the control plane and the CLI, and none of the dev tools (sandbox, local stack runner,
demo, Prometheus runner: the `powerx-dev` workspace member, packages/powerx-dev)."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

RUNTIME = (
    "powerx_upgrade/__init__.py",
    "powerx_upgrade/api/plugin.py",  # the Airflow plugin and the control plane
    "powerx_upgrade/orchestration/__init__.py",  # the DAG factory
    "powerx_upgrade/ledger/__init__.py",
    "powerx_upgrade/cli/main.py",
    "powerx_upgrade/cli/plan.py",
)
DEV_TOOLS = ("sandbox", "devstack", "demo", "prometheus_server")


def _uv() -> str:
    """The uv running the suite (`uv run` sets $UV), else the one on PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    assert found, "uv is needed to build the wheel (python3 -m pip install uv)"
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [_uv(), "build", "--wheel", "-o", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("powerx_grey_upgrade-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def _names(wheel: zipfile.ZipFile) -> list[str]:
    return [n for n in wheel.namelist() if not n.endswith("/")]


def test_the_runtime_wheel_holds_the_plugin_dag_factory_ledger_control_plane_and_cli(wheel):
    names = set(_names(wheel))
    assert [path for path in RUNTIME if path not in names] == []
    assert any(n.startswith("powerx_upgrade/reporting/templates/") for n in names)


def test_the_runtime_wheel_holds_no_dev_tool(wheel):
    names = _names(wheel)
    dev = [
        n
        for n in names
        if n.startswith("powerx_dev/")
        or any(
            n == f"powerx_upgrade/{tool}.py" or n.startswith(f"powerx_upgrade/{tool}/")
            for tool in DEV_TOOLS
        )
        or n in ("powerx_upgrade/cli/demo.py", "powerx_upgrade/cli/sandbox.py")
        or "__pycache__" in n
    ]
    assert dev == []
    # ... and no runtime module imports the dev package (the dev package imports the runtime).
    importing = [n for n in names if n.endswith(".py") and b"powerx_dev" in wheel.read(n)]
    assert importing == []


def test_the_runtime_wheel_needs_no_dev_package_and_its_entry_points_resolve(wheel):
    info = next(n for n in _names(wheel) if n.endswith(".dist-info/METADATA"))
    requires = [
        line for line in wheel.read(info).decode().splitlines() if line.startswith("Requires-Dist")
    ]
    assert requires and not [r for r in requires if "powerx-dev" in r or "powerx_dev" in r]
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel.read(info.replace("METADATA", "entry_points.txt")).decode())
    assert "powerx.commands" not in entry_points  # the dev package registers those
    names = set(_names(wheel))
    for section in ("console_scripts", "airflow.plugins"):
        for target in entry_points[section].values():
            module = target.split(":")[0].replace(".", "/")
            assert f"{module}.py" in names or f"{module}/__init__.py" in names, target


def test_the_dev_package_is_a_workspace_member_of_the_default_install():
    """`uv run --locked ...` installs it: the root's dev group depends on the member."""
    import tomllib

    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "packages/powerx-dev" in root["tool"]["uv"]["workspace"]["members"]
    assert "powerx-dev" in root["dependency-groups"]["dev"]
    assert root["tool"]["uv"]["sources"]["powerx-dev"] == {"workspace": True}
    dev = tomllib.loads((ROOT / "packages/powerx-dev/pyproject.toml").read_text("utf-8"))
    assert set(dev["project"]["entry-points"]["powerx.commands"]) == {"demo", "sandbox"}
    lock = Path(ROOT / "uv.lock").read_text(encoding="utf-8")
    assert (
        '\nname = "powerx-dev"\nversion = "0.1.0"\nsource = { editable = "packages/powerx-dev" }'
        in lock
    )
