"""Checks of docker-compose.yaml that need no container engine: each rule takes the parsed
file (and what it needs of the repository) and returns its problems as sentences, so a test
asserts an empty list for the real file and a non-empty one for a broken copy."""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
)
CORE_SERVICES = ("postgres", "redis", "sandbox", *AIRFLOW_SERVICES)
METRICS_SERVICES = ("statsd-exporter", "prometheus", "grafana")
ONE_SHOT_SERVICES = ("airflow-init", "airflow-cli")
"""Services that run a command and exit: no healthcheck, no restart policy."""

COMPOSE_BUILTIN_VARIABLES = frozenset({"COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME"})
"""Variables docker compose itself reads from .env (documented there, never interpolated)."""

TOP_LEVEL_KEYS = frozenset({"name", "version", "services", "volumes", "networks", "configs"})
SERVICE_KEYS = frozenset(
    {
        "image", "build", "command", "entrypoint", "environment", "env_file", "volumes", "user",
        "depends_on", "healthcheck", "restart", "ports", "expose", "profiles", "networks",
        "labels", "deploy", "logging", "working_dir", "hostname", "container_name", "secrets",
        "configs", "ulimits", "stop_grace_period", "stop_signal", "init", "extra_hosts",
        "cap_add", "cap_drop", "tmpfs", "shm_size",
    }
)  # fmt: skip
DEPENDS_CONDITIONS = frozenset(
    {"service_started", "service_healthy", "service_completed_successfully"}
)
DEFAULTING = (":-", "-")
OPERATORS = (":-", ":?", ":+", "-", "?", "+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# -- interpolation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One `${NAME...}` / `$NAME` in a value: the variable, its operator and default text."""

    name: str
    operator: str | None
    default: str | None
    where: str

    @property
    def has_default(self) -> bool:
        return self.operator in DEFAULTING


class InterpolationError(ValueError):
    """A `$` compose cannot interpolate (compose refuses the whole file)."""


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise InterpolationError(f"unclosed '${{' in {text!r}")


def _braced(text: str, start: int, where: str) -> tuple[Reference, int]:
    """The reference opening at `text[start] == '$'` (followed by '{'), and where it ends."""
    end = _closing_brace(text, start + 2)
    body = text[start + 2 : end]
    match = _NAME.match(body)
    if not match:
        raise InterpolationError(f"{where}: invalid interpolation {text[start : end + 1]!r}")
    rest = body[match.end() :]
    operator = next((op for op in OPERATORS if rest.startswith(op)), None)
    if rest and operator is None:
        raise InterpolationError(f"{where}: invalid interpolation {text[start : end + 1]!r}")
    default = rest[len(operator) :] if operator else None
    return Reference(match.group(), operator, default, where), end + 1


def references(text: str, where: str = "?") -> Iterator[Reference]:
    """Every variable a compose string refers to, nested defaults included; `$$` is a literal."""
    i = 0
    while i < len(text):
        if text[i] != "$":
            i += 1
            continue
        following = text[i + 1 : i + 2]
        if following == "$":
            i += 2
        elif following == "{":
            ref, i = _braced(text, i, where)
            yield ref
            if ref.default:
                yield from references(ref.default, where)
        elif match := _NAME.match(text, i + 1):
            yield Reference(match.group(), None, None, where)
            i = match.end()
        else:
            raise InterpolationError(f"{where}: a lone '$' in {text!r} (write '$$')")


def interpolate(text: str, values: Mapping[str, str]) -> str:
    """`text` as compose would see it with `values` set (defaults for the rest), `$$` -> `$`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text[i + 1 : i + 2] == "$":
            out.append("$")
            i += 2
        elif text[i + 1 : i + 2] == "{":
            ref, i = _braced(text, i, "?")
            out.append(_value(ref, values))
        else:
            match = _NAME.match(text, i + 1)
            if not match:
                raise InterpolationError(f"a lone '$' in {text!r}")
            out.append(values.get(match.group(), ""))
            i = match.end()
    return "".join(out)


def _value(ref: Reference, values: Mapping[str, str]) -> str:
    value = values.get(ref.name)
    empty_counts = ref.operator is not None and ref.operator.startswith(":")
    unset = value is None or (empty_counts and value == "")
    if ref.operator in (":-", "-") and unset:
        return interpolate(ref.default or "", values)
    if ref.operator in (":+", "+"):
        return "" if unset else interpolate(ref.default or "", values)
    return value or ""


def strings(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string value of a parsed YAML document with its dotted location (keys excluded)."""
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from strings(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, f"{where}[{i}]")


def all_references(doc: Mapping[str, Any]) -> list[Reference]:
    return [ref for where, text in strings(doc) for ref in references(text, where)]


def resolve(node: Any, values: Mapping[str, str]) -> Any:
    """A copy of the document with every string interpolated (what compose runs)."""
    if isinstance(node, str):
        return interpolate(node, values)
    if isinstance(node, Mapping):
        return {key: resolve(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(value, values) for value in node]
    return copy.deepcopy(node)


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """NAME=value lines of a .env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if sep:
            values[name.strip()] = value.strip()
    return values


# -- loading ---------------------------------------------------------------------------------


def load(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def services(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return doc.get("services") or {}


def environment(service: Mapping[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return dict(env)


@dataclass(frozen=True)
class Mount:
    service: str
    source: str
    target: str
    kind: str  # "volume" | "bind"
    read_only: bool


def mounts(doc: Mapping[str, Any]) -> list[Mount]:
    """Every volume of every service, short or long syntax."""
    found = []
    for name, service in services(doc).items():
        for item in service.get("volumes") or []:
            if isinstance(item, Mapping):
                source, target = str(item.get("source", "")), str(item.get("target", ""))
                kind = item.get("type") or ("bind" if _looks_like_path(source) else "volume")
                read_only = bool(item.get("read_only"))
            else:
                parts = str(item).split(":")
                source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
                kind = "bind" if _looks_like_path(source) else "volume"
                read_only = len(parts) > 2 and "ro" in parts[2].split(",")
            found.append(Mount(name, source, target, kind, read_only))
    return found


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or "/" in source


# -- rules -----------------------------------------------------------------------------------


def schema_problems(doc: Mapping[str, Any]) -> list[str]:
    problems = [
        f"unknown top-level key {key!r}"
        for key in doc
        if key not in TOP_LEVEL_KEYS and not str(key).startswith("x-")
    ]
    for name, service in services(doc).items():
        problems += [
            f"service {name}: unknown key {key!r}" for key in service if key not in SERVICE_KEYS
        ]
        if not service.get("image") and not service.get("build"):
            problems.append(f"service {name}: neither image nor build")
        for key, value in environment(service).items():
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                problems.append(
                    f"service {name}: environment {key} is {value!r}: quote it as a string"
                )
    return problems


def missing_services(doc: Mapping[str, Any]) -> list[str]:
    return [
        f"service {name} is missing"
        for name in (*CORE_SERVICES, *METRICS_SERVICES)
        if name not in services(doc)
    ]


def variable_problems(doc: Mapping[str, Any], documented: Mapping[str, str]) -> list[str]:
    """Every referenced variable has a default or is in .env.example; .env.example lists no
    variable the file does not use; a variable's defaults agree with each other and with the
    value .env.example shows."""
    try:
        refs = all_references(doc)
    except InterpolationError as exc:
        return [str(exc)]
    problems = [
        f"{ref.where}: ${{{ref.name}}} has no default and is not in .env.example"
        for ref in refs
        if not ref.has_default and ref.name not in documented
    ]
    used = {ref.name for ref in refs}
    problems += [
        f".env.example: {name} is not used by docker-compose.yaml"
        for name in documented
        if name not in used and name not in COMPOSE_BUILTIN_VARIABLES
    ]
    defaults: dict[str, set[str]] = {}
    for ref in refs:
        if ref.has_default:
            defaults.setdefault(ref.name, set()).add(ref.default or "")
    for name, seen in sorted(defaults.items()):
        if len(seen) > 1:
            problems.append(f"${{{name}}} has different defaults: {sorted(seen)}")
        elif name in documented and documented[name] != next(iter(seen)):
            problems.append(
                f"${{{name}}}: default {next(iter(seen))!r} but .env.example shows "
                f"{documented[name]!r}"
            )
    return problems


def volume_problems(doc: Mapping[str, Any], root: Path = ROOT) -> list[str]:
    """Named volumes are declared (and every declared one is used); bind sources exist in the
    repository; targets are absolute and not mounted twice in one service."""
    declared = set((doc.get("volumes") or {}).keys())
    problems = []
    used = set()
    seen_targets: set[tuple[str, str]] = set()
    for mount in mounts(doc):
        if not mount.target.startswith("/"):
            problems.append(f"service {mount.service}: target {mount.target!r} is not absolute")
        if (mount.service, mount.target) in seen_targets:
            problems.append(f"service {mount.service}: {mount.target} is mounted twice")
        seen_targets.add((mount.service, mount.target))
        if mount.kind == "volume":
            used.add(mount.source)
            if mount.source not in declared:
                problems.append(
                    f"service {mount.service}: volume {mount.source!r} is not declared under "
                    "top-level volumes"
                )
        elif not (root / mount.source).exists():
            problems.append(
                f"service {mount.service}: bind source {mount.source!r} does not exist in the "
                "repository"
            )
    problems += [f"volume {name!r} is declared but never used" for name in declared - used]
    return problems


def _depends(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def depends_problems(doc: Mapping[str, Any]) -> list[str]:
    """Targets exist; conditions are valid and satisfiable; a service that always starts does
    not wait for one that only starts under a profile; no cycles."""
    all_services = services(doc)
    problems = []
    for name, service in all_services.items():
        for target, condition in _depends(service).items():
            other = all_services.get(target)
            if other is None:
                problems.append(f"service {name} depends on undefined service {target!r}")
                continue
            if condition not in DEPENDS_CONDITIONS:
                problems.append(f"service {name}: unknown condition {condition!r} on {target}")
            if condition == "service_healthy" and not other.get("healthcheck"):
                problems.append(f"service {name} waits for {target} healthy: it has no healthcheck")
            if condition == "service_completed_successfully" and other.get("restart") in (
                "always",
                "unless-stopped",
            ):
                problems.append(f"service {name} waits for {target} to complete: it restarts")
            if other.get("profiles") and not set(other["profiles"]) <= set(
                service.get("profiles") or []
            ):
                problems.append(
                    f"service {name} depends on {target}, which only runs under profiles "
                    f"{other['profiles']}"
                )
    return problems + _cycles(all_services)


def _cycles(all_services: Mapping[str, Any]) -> list[str]:
    graph = {name: list(_depends(s)) for name, s in all_services.items()}
    problems: list[str] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                problems.append(f"depends_on cycle: {' -> '.join([*path, node, nxt])}")
            elif nxt in graph and nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
    return problems


def healthcheck_problems(doc: Mapping[str, Any]) -> list[str]:
    problems = []
    for name, service in services(doc).items():
        check = service.get("healthcheck")
        if name in ONE_SHOT_SERVICES:
            continue
        if not check or check.get("disable"):
            problems.append(f"service {name} runs for good but has no healthcheck")
            continue
        test = check.get("test")
        if isinstance(test, list) and (not test or test[0] not in ("CMD", "CMD-SHELL", "NONE")):
            problems.append(f"service {name}: healthcheck test must start with CMD or CMD-SHELL")
        elif not test:
            problems.append(f"service {name}: healthcheck without a test")
        if not service.get("restart"):
            problems.append(f"service {name} runs for good but has no restart policy")
    return problems


def anchor_problems(text: str) -> list[str]:
    """Every Airflow service merges the x-airflow-common anchor (the YAML node itself, not a
    copy of its keys)."""
    root = yaml.compose(text)
    top = {key.value: value for key, value in root.value}
    common = top.get("x-airflow-common")
    if common is None:
        return ["x-airflow-common is missing"]
    service_nodes = {key.value: value for key, value in top["services"].value}
    problems = []
    for name in AIRFLOW_SERVICES:
        node = service_nodes.get(name)
        if node is None:
            continue
        merged = [value for key, value in node.value if key.value == "<<"]
        if not any(value is common for value in merged):
            problems.append(f"service {name} does not merge <<: *airflow-common")
    return problems


def airflow_common_problems(doc: Mapping[str, Any]) -> list[str]:
    """Airflow services run the common image with the common environment (they may add to it,
    not change it) and the common volumes."""
    common = doc.get("x-airflow-common") or {}
    common_env = environment(common)
    problems = []
    for name in AIRFLOW_SERVICES:
        service = services(doc).get(name)
        if service is None:
            continue
        if service.get("image") != common.get("image"):
            problems.append(f"service {name} does not run the common image")
        env = environment(service)
        problems += [
            f"service {name}: environment {key} differs from x-airflow-common"
            for key, value in common_env.items()
            if env.get(key) != value
        ]
        if service.get("volumes") != common.get("volumes"):
            problems.append(f"service {name}: volumes differ from x-airflow-common")
    return problems


def profile_problems(doc: Mapping[str, Any]) -> list[str]:
    all_services = services(doc)
    problems = [
        f"service {name} must carry profiles: [metrics]"
        for name in METRICS_SERVICES
        if name in all_services and all_services[name].get("profiles") != ["metrics"]
    ]
    problems += [
        f"service {name} must start without a profile"
        for name in CORE_SERVICES
        if name in all_services and all_services[name].get("profiles")
    ]
    return problems


def image_problems(doc: Mapping[str, Any]) -> list[str]:
    """Images we do not build are pinned to a tag other than latest."""
    problems = []
    for name, service in services(doc).items():
        image = str(service.get("image") or "")
        if service.get("build") or not image:
            continue
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not tag or tag == "latest":
            problems.append(f"service {name}: image {image!r} is not pinned to a version")
    return problems


def port_problems(doc: Mapping[str, Any]) -> list[str]:
    problems = []
    taken: dict[str, str] = {}
    for name, service in services(doc).items():
        for item in service.get("ports") or []:
            parts = str(item).split(":")
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                problems.append(f"service {name}: port {item!r} is not HOST:CONTAINER")
                continue
            if parts[0] in taken:
                problems.append(f"host port {parts[0]} used by {taken[parts[0]]} and {name}")
            taken[parts[0]] = name
    return problems


# -- wiring between services (on the resolved document) ---------------------------------------


def _flag(command: Any, flag: str) -> str | None:
    """The value of `--flag VALUE` or `--flag=VALUE` in a command (list or string)."""
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command or []]
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def _container_path(doc: Mapping[str, Any], service: str, path: str, root: Path) -> Path | None:
    """The repository path a container path of a service comes from (through a bind mount)."""
    best: Mount | None = None
    for mount in mounts(doc):
        if mount.service != service or mount.kind != "bind":
            continue
        if (path == mount.target or path.startswith(mount.target.rstrip("/") + "/")) and (
            best is None or len(mount.target) > len(best.target)
        ):
            best = mount
    if best is None:
        return None
    return root / best.source / path[len(best.target) :].lstrip("/")


def connection_problems(resolved: Mapping[str, Any]) -> list[str]:
    """The HTTP connections point at the sandbox service and port; the ledger connection at
    the ledger database the postgres service creates."""
    all_services = services(resolved)
    env = environment(resolved.get("x-airflow-common") or {})
    sandbox_port = _flag((all_services.get("sandbox") or {}).get("command"), "--port")
    problems = []
    for system in ("PLATFORM", "MONITORING", "NOTIFY", "AUDIT"):
        url = env.get(f"AIRFLOW_CONN_POWERX_{system}")
        if not url:
            problems.append(f"AIRFLOW_CONN_POWERX_{system} is not set")
            continue
        parts = urlsplit(str(url))
        if parts.hostname not in all_services or str(parts.port) != sandbox_port:
            problems.append(
                f"AIRFLOW_CONN_POWERX_{system}={url} is not the sandbox service's port "
                f"{sandbox_port}"
            )
    return problems + _ledger_problems(env, all_services)


def _ledger_problems(env: Mapping[str, Any], all_services: Mapping[str, Any]) -> list[str]:
    raw = env.get("AIRFLOW_CONN_POWERX_LEDGER")
    if not raw:
        return ["AIRFLOW_CONN_POWERX_LEDGER is not set"]
    try:
        url = json.loads(str(raw))["extra"]["url"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"AIRFLOW_CONN_POWERX_LEDGER is not JSON with extra.url: {exc}"]
    parts = urlsplit(url)
    postgres_env = environment(all_services.get("postgres") or {})
    problems = []
    if not parts.scheme.startswith("postgresql+psycopg"):
        problems.append(f"ledger URL {url!r}: expected postgresql+psycopg://")
    if parts.hostname != "postgres":
        problems.append(f"ledger URL {url!r} does not point at the postgres service")
    if parts.path.lstrip("/") != postgres_env.get("POWERX_LEDGER_DB"):
        problems.append(f"ledger URL {url!r} names another database than POWERX_LEDGER_DB")
    if parts.username != postgres_env.get("POWERX_LEDGER_USER") or parts.password != (
        postgres_env.get("POWERX_LEDGER_PASSWORD")
    ):
        problems.append(f"ledger URL {url!r}: user/password differ from the postgres service's")
    return problems


def init_script_problems(resolved: Mapping[str, Any], root: Path = ROOT) -> list[str]:
    """The postgres service mounts an init script that creates the ledger database and user."""
    scripts = [
        m
        for m in mounts(resolved)
        if m.service == "postgres" and m.target.startswith("/docker-entrypoint-initdb.d/")
    ]
    if not scripts:
        return ["postgres mounts no init script into /docker-entrypoint-initdb.d/"]
    text = "\n".join(
        (root / m.source).read_text(encoding="utf-8")
        for m in scripts
        if (root / m.source).is_file()
    )
    problems = []
    for statement in ("CREATE DATABASE", "CREATE USER"):
        if statement not in text:
            problems.append(f"the postgres init scripts do not run {statement}")
    for name in ("POWERX_LEDGER_DB", "POWERX_LEDGER_USER", "POWERX_LEDGER_PASSWORD"):
        if name not in text:
            problems.append(f"the postgres init scripts do not read {name}")
    return problems


def path_problems(resolved: Mapping[str, Any], root: Path = ROOT) -> list[str]:
    """POWERX_UPGRADE_CONFIG / _TEMPLATES / _SIGNING_KEYS come from the repository through a
    bind mount;
    POWERX_UPGRADE_REPORTS is the target of the `reports` volume; the sandbox's scenario
    exists."""
    common = resolved.get("x-airflow-common") or {}
    env = environment(common)
    problems = []
    for name in AIRFLOW_SERVICES:
        for key in (
            "POWERX_UPGRADE_CONFIG",
            "POWERX_UPGRADE_TEMPLATES",
            "POWERX_UPGRADE_SIGNING_KEYS",
        ):
            source = _container_path(resolved, name, str(env.get(key, "")), root)
            if source is None or not source.exists():
                problems.append(f"service {name}: {key}={env.get(key)} is not a mounted path")
        reports = [
            m.target
            for m in mounts(resolved)
            if m.service == name and m.kind == "volume" and m.source == "reports"
        ]
        if reports != [env.get("POWERX_UPGRADE_REPORTS")]:
            problems.append(
                f"service {name}: POWERX_UPGRADE_REPORTS={env.get('POWERX_UPGRADE_REPORTS')} "
                f"is not where the reports volume is mounted ({reports})"
            )
    scenario = _flag((services(resolved).get("sandbox") or {}).get("command"), "--scenario")
    source = _container_path(resolved, "sandbox", scenario or "", root)
    if source is None or not source.is_file():
        problems.append(f"sandbox scenario {scenario!r} is not a mounted file of the repository")
    return problems


def metrics_problems(resolved: Mapping[str, Any], root: Path = ROOT) -> list[str]:
    """Airflow's StatsD settings reach statsd-exporter with the prefix its mapping expects;
    Prometheus scrapes the exporter; Grafana loads the generated dashboards from the Prometheus
    service."""
    all_services = services(resolved)
    env = environment(resolved.get("x-airflow-common") or {})
    exporter = all_services.get("statsd-exporter") or {}
    problems = []
    if env.get("AIRFLOW__METRICS__STATSD_HOST") != "statsd-exporter":
        problems.append("AIRFLOW__METRICS__STATSD_HOST is not the statsd-exporter service")
    udp = (_flag(exporter.get("command"), "--statsd.listen-udp") or "").rsplit(":", 1)[-1]
    if str(env.get("AIRFLOW__METRICS__STATSD_PORT")) != udp:
        problems.append(f"AIRFLOW__METRICS__STATSD_PORT is not the exporter's UDP port {udp}")
    if str(env.get("AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED")).lower() != "true":
        problems.append("AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED must be True (tags -> labels)")
    if "AIRFLOW__METRICS__STATSD_ON" not in env:
        problems.append("AIRFLOW__METRICS__STATSD_ON is not set")
    problems += _mapping_prefix_problems(resolved, env, root)
    web = (_flag(exporter.get("command"), "--web.listen-address") or "").rsplit(":", 1)[-1]
    problems += _prometheus_problems(resolved, f"statsd-exporter:{web}", root)
    return problems + _grafana_problems(resolved, root)


def _mapping_prefix_problems(
    resolved: Mapping[str, Any], env: Mapping[str, Any], root: Path
) -> list[str]:
    config = _flag(services(resolved)["statsd-exporter"].get("command"), "--statsd.mapping-config")
    source = _container_path(resolved, "statsd-exporter", config or "", root)
    if source is None or not source.is_file():
        return [f"statsd-exporter mapping {config!r} is not a mounted file of the repository"]
    prefix = f"{env.get('AIRFLOW__METRICS__STATSD_PREFIX')}."
    rules = yaml.safe_load(source.read_text(encoding="utf-8")).get("mappings") or []
    return [
        f"mapping {rule.get('match')!r} does not start with the StatsD prefix {prefix!r}"
        for rule in rules
        if not str(rule.get("match", "")).startswith(prefix)
    ]


def _prometheus_problems(resolved: Mapping[str, Any], target: str, root: Path) -> list[str]:
    config = _flag(services(resolved)["prometheus"].get("command"), "--config.file")
    source = _container_path(resolved, "prometheus", config or "", root)
    if source is None or not source.is_file():
        return [f"prometheus config {config!r} is not a mounted file of the repository"]
    scrape = yaml.safe_load(source.read_text(encoding="utf-8")).get("scrape_configs") or []
    targets = {t for job in scrape for c in job.get("static_configs", []) for t in c["targets"]}
    return [] if target in targets else [f"prometheus does not scrape {target} ({targets})"]


def _grafana_problems(resolved: Mapping[str, Any], root: Path) -> list[str]:
    provisioning = _container_path(resolved, "grafana", "/etc/grafana/provisioning", root)
    if provisioning is None or not provisioning.is_dir():
        return ["grafana mounts no provisioning directory at /etc/grafana/provisioning"]
    problems = []
    for file in sorted((provisioning / "datasources").glob("*.y*ml")):
        for source in yaml.safe_load(file.read_text(encoding="utf-8")).get("datasources", []):
            host = urlsplit(source.get("url", "")).hostname
            if source.get("type") == "prometheus" and host not in services(resolved):
                problems.append(f"{file.name}: data source {source.get('url')} is no service")
    providers = [
        p
        for file in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for p in yaml.safe_load(file.read_text(encoding="utf-8")).get("providers", [])
    ]
    if not providers:
        problems.append("grafana provisions no dashboard provider")
    for provider in providers:
        path = provider.get("options", {}).get("path", "")
        folder = _container_path(resolved, "grafana", path, root)
        if folder is None or not any(folder.glob("*.json")):
            problems.append(f"grafana dashboard path {path!r} holds no mounted dashboards")
    return problems


# -- Dockerfile ------------------------------------------------------------------------------


def locked_version(package: str, lock: Path = ROOT / "uv.lock") -> str | None:
    text = lock.read_text(encoding="utf-8")
    match = re.search(rf'^name = "{re.escape(package)}"\nversion = "([^"]+)"', text, re.M)
    return match.group(1) if match else None


def dockerfile_problems(
    dockerfile: str, airflow_version: str | None, python_version: str, root: Path = ROOT
) -> list[str]:
    """The base image is the official Airflow image at the locked version and the project's
    Python; the package and the ledger's driver are installed; copied paths exist and are not
    excluded by .dockerignore."""
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.M)
    if not base:
        return ["Dockerfile has no FROM"]
    expected = f"apache/airflow:{airflow_version}-python{python_version}"
    problems = [] if base.group(1) == expected else [f"FROM {base.group(1)}, expected {expected}"]
    logical = dockerfile.replace("\\\n", " ")
    install = " ".join(re.findall(r"^RUN\s+pip install.*$", logical, re.M))
    if "psycopg[binary]" not in install:
        problems.append("Dockerfile does not pip install psycopg[binary] (ledger on PostgreSQL)")
    if "/opt/powerx/src" not in install and " . " not in f"{install} ":
        problems.append("Dockerfile does not pip install the package from the checkout")
    ignored = _dockerignore(root)
    for line in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", dockerfile, re.M):
        for source in line.split()[:-1]:
            if not (root / source).exists():
                problems.append(f"COPY {source}: no such path in the repository")
            if source.split("/")[0] in ignored:
                problems.append(f"COPY {source}: excluded by .dockerignore")
    return problems


LOCK_PINS = {
    "PSYCOPG_VERSION": "psycopg",
    "CELERY_PROVIDER_VERSION": "apache-airflow-providers-celery",
}
"""Dockerfile ARGs that pin a production extra's package, and the package in uv.lock."""


def dockerfile_lock_problems(dockerfile: str, lock: Path = ROOT / "uv.lock") -> list[str]:
    """The image installs the package with every extra pyproject.toml declares, and pins each
    extra's package at the version uv.lock resolved."""
    import tomllib

    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get(
            "optional-dependencies", {}
        )
    )
    problems = []
    logical = dockerfile.replace("\\\n", " ")
    installed = re.search(r'"/opt/powerx/src\[([^\]]*)\]"', logical)
    found = {e.strip() for e in installed.group(1).split(",")} if installed else set()
    if found != extras:
        problems.append(
            f"Dockerfile installs extras {sorted(found)}, pyproject has {sorted(extras)}"
        )
    for arg, package in LOCK_PINS.items():
        pinned = re.search(rf"^ARG\s+{arg}=(\S+)$", dockerfile, re.M)
        locked = locked_version(package, lock)
        if pinned is None or pinned.group(1) != locked:
            shown = pinned.group(1) if pinned else "no pin"
            problems.append(f"Dockerfile {arg}: {shown}, uv.lock has {package} {locked}")
        elif f"=={{{arg}}}" not in logical.replace("$", ""):
            problems.append(f"Dockerfile defines {arg} but does not install {package} with it")
    return problems


def _dockerignore(root: Path) -> set[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return set()
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


# -- Airflow settings ------------------------------------------------------------------------

PROVIDER_SECTIONS = frozenset({"celery", "celery_broker_transport_options", "fab"})
"""Config sections of providers the image has but the test environment need not (not
checked: their options live in the provider's own metadata)."""
_AIRFLOW_ENV = re.compile(r"^AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)$")


def airflow_config_options() -> dict[str, set[str]]:
    """Section -> option names of the installed Airflow's config template (read, not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("airflow")
    assert spec and spec.submodule_search_locations, "apache-airflow is not installed"
    for location in spec.submodule_search_locations:
        template = Path(location) / "config_templates" / "config.yml"
        if template.is_file():
            sections = yaml.safe_load(template.read_text(encoding="utf-8"))
            return {
                name: set((body.get("options") or {}).keys()) for name, body in sections.items()
            }
    raise FileNotFoundError("airflow/config_templates/config.yml not found")


def airflow_option_problems(names: list[str], options: Mapping[str, set[str]]) -> list[str]:
    """`AIRFLOW__SECTION__KEY` names that are no Airflow option (Airflow ignores them silently,
    so a typo would quietly leave a default in place)."""
    problems = []
    for name in names:
        match = _AIRFLOW_ENV.match(name)
        if not match:
            continue
        section, key = match.group(1).lower(), match.group(2).lower()
        if section in PROVIDER_SECTIONS:
            continue
        known = options.get(section)
        if known is None:
            problems.append(f"{name}: Airflow has no section [{section}]")
        elif key not in known and key.removesuffix("_cmd").removesuffix("_secret") not in known:
            problems.append(f"{name}: Airflow has no option [{section}] {key}")
    return problems
