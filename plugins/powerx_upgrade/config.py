"""Where the config lives and reading it from disk; the validation itself is domain.config."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from powerx_upgrade.domain.config import ConfigResult, parse_config
from powerx_upgrade.domain.metric_names import MetricMapping
from powerx_upgrade.domain.problems import Problem
from powerx_upgrade.domain.yaml_source import MAX_FILE_CHARS

CONFIG_ENV = "POWERX_UPGRADE_CONFIG"
POLICIES_FILE = "upgrade_policies.yaml"
PLANS_DIR = "plans"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class ConfigNotFound(FileNotFoundError):
    """No config at the place the user (or the environment) named."""


AIRFLOW_SECTION = "powerx_upgrade"
"""Airflow's config section for the package: `config`, `templates`, `signing_keys` (or
`AIRFLOW__POWERX_UPGRADE__CONFIG` ... in the environment, as for any Airflow option)."""


def airflow_setting(key: str) -> str | None:
    """`[powerx_upgrade] <key>` through Airflow's public config API; None when it is unset or
    Airflow is not installed."""
    try:
        from airflow.sdk import conf
    except ImportError:  # pragma: no cover - the package always comes with Airflow
        return None
    value = conf.get(AIRFLOW_SECTION, key, fallback=None)
    return str(value) if value else None


def configured_config() -> tuple[Path, str] | None:
    """The config named by a setting ($POWERX_UPGRADE_CONFIG, else `[powerx_upgrade] config`),
    with which setting named it; None when neither does."""
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env), f"${CONFIG_ENV}"
    from_airflow = airflow_setting("config")
    if from_airflow:
        return Path(from_airflow), f"[{AIRFLOW_SECTION}] config"
    return None


def config_location(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config to use: an explicit path, else $POWERX_UPGRADE_CONFIG, else Airflow's
    `[powerx_upgrade] config`, else the project checkout's `include/config/`.

    Never the working directory: the CLI and the DAG loader resolve it through here and get the
    same answer wherever the process started.
    """
    if explicit:
        return _existing(Path(explicit), "the given path")
    configured = configured_config()
    if configured is not None:
        return _existing(*configured)
    checkout = _PACKAGE_ROOT / "include" / "config"
    if checkout.is_dir():
        return checkout
    raise ConfigNotFound(
        f"no config found: set ${CONFIG_ENV} (or [{AIRFLOW_SECTION}] config in Airflow's "
        f"config) to a YAML file or a directory with {POLICIES_FILE}"
    )


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise ConfigNotFound(f"{what} {str(path)!r} does not exist")
    return path


def config_files(location: Path) -> list[Path]:
    """The files a location stands for.

    A directory: its `upgrade_policies.yaml` plus `plans/*.yaml|*.yml`, sorted.
    A file: that file; when it sits in a `plans/` directory, the policies file one level up
    comes along, so a plan file can be validated on its own.
    """
    if location.is_dir():
        files = [location / POLICIES_FILE] if (location / POLICIES_FILE).is_file() else []
        plans = location / PLANS_DIR
        if plans.is_dir():
            files += sorted(p for p in plans.iterdir() if p.suffix in (".yaml", ".yml"))
        return files
    files = [location]
    sibling_policies = location.parent.parent / POLICIES_FILE
    if location.parent.name == PLANS_DIR and sibling_policies.is_file():
        files.insert(0, sibling_policies)
    return files


def load_config(locations: Sequence[str | os.PathLike[str]] | None = None) -> ConfigResult:
    """Read and validate the config at `locations` (default: `config_location()`)."""
    paths = [config_location(p) for p in locations] if locations else [config_location()]
    seen: dict[Path, Path] = {}  # resolved -> as found (a dangling link keeps its own name)
    for location in paths:
        for file in config_files(location):
            resolved = file.resolve()
            seen.setdefault(resolved, resolved if resolved.exists() else file.absolute())
    texts = [(_display(file), read_config_file(file)) for file in seen.values()]
    if not texts:
        raise ConfigNotFound(
            f"no config files in {', '.join(map(str, paths))}: expected {POLICIES_FILE} "
            f"or {PLANS_DIR}/*.yaml"
        )
    return parse_config(texts, deployment_provider())


MAX_FILE_BYTES = MAX_FILE_CHARS
"""A config file's size limit on disk (docs/plans.md, "Limits")."""


def read_config_file(file: Path) -> str | Problem:
    """A config file's text, or the problem that keeps it from being read (too large, not
    readable, not UTF-8): that file is then left out and reported, the others still load."""
    name = _display(file)
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return _unreadable(name, None, f"cannot read the file: {exc.strerror or exc}")
    if len(data) > MAX_FILE_BYTES:
        return _unreadable(name, None, f"the file is over {MAX_FILE_BYTES:,} bytes (the limit)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return _unreadable(
            name,
            line,
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
        )


def _unreadable(name: str, line: int | None, what: str) -> Problem:
    return Problem(name, line, "error", "", f"{what}; nothing in this file is used")


def _display(path: Path) -> str:
    """Paths relative to the project checkout when below it (shorter messages, the same from
    any working directory), else absolute."""
    try:
        text = str(path.relative_to(_PACKAGE_ROOT))
    except ValueError:
        text = str(path)
    # A name that is not UTF-8 (surrogate-escaped by the OS layer) is shown with \x escapes.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


MONITORING_FILE = Path("monitoring") / "version_upgrade_dashboards.json"
PROVIDER_ENV = "POWERX_MONITORING_PROVIDER"


def metric_mapping(location: Path | None = None) -> MetricMapping:
    """The gate's metric-name mapping from `<config>/monitoring/version_upgrade_dashboards.json`
    (key `metric_mapping`); the identity mapping when the file is absent."""
    import json

    try:
        base = location or config_location()
    except ConfigNotFound:
        return MetricMapping()
    folder = base if base.is_dir() else base.parent
    path = folder / MONITORING_FILE
    if not path.is_file():
        return MetricMapping()
    data = json.loads(path.read_text(encoding="utf-8"))
    return MetricMapping.model_validate(data.get("metric_mapping") or {})


def deployment_provider(location: Path | None = None) -> str:
    """The deployment's monitoring provider: $POWERX_MONITORING_PROVIDER, else the mapping
    file's default_provider. `prometheus` is the Prometheus provider; any other name is the
    PowerX monitoring service under that mapping's metric names."""
    return os.environ.get(PROVIDER_ENV) or metric_mapping(location).default_provider


def monitoring_names(location: Path | None = None) -> dict[str, str]:
    """Canonical metric -> the name the configured provider ($POWERX_MONITORING_PROVIDER, else
    the mapping's default) uses. With the Prometheus provider as the deployment's, the PowerX
    service (when a plan asks for it) keeps the mapping's default names."""
    mapping = metric_mapping(location)
    provider = os.environ.get(PROVIDER_ENV) or None
    if provider == "prometheus" and provider not in mapping.providers:
        provider = None
    return mapping.names(provider)


SIGNING_KEYS_ENV = "POWERX_UPGRADE_SIGNING_KEYS"
SIGNING_KEYS_DIR = "signing_keys"


def signing_keys_dir() -> tuple[Path | None, bool]:
    """The directory of trusted artifact signing keys (`*.pub`) and whether it was named
    explicitly. The trust root comes from settings only, never from where a process started:
    $POWERX_UPGRADE_SIGNING_KEYS, else `[powerx_upgrade] signing_keys` (either must exist),
    else `signing_keys/` beside a config that a setting named (may be absent: the keys can all
    come from the `powerx_signing` connection); else no directory."""
    from_env = os.environ.get(SIGNING_KEYS_ENV)
    if from_env:
        return Path(from_env), True
    from_airflow = airflow_setting("signing_keys")
    if from_airflow:
        return Path(from_airflow), True
    configured = configured_config()
    if configured is None:
        return None, False
    base = configured[0]
    folder = base if base.is_dir() else base.parent
    return folder / SIGNING_KEYS_DIR, False
