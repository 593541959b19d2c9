"""A real Prometheus server for tests and the demo: found or installed (Debian's package), run on
a free loopback port with a throwaway config and storage, and always stopped.

    with running_sandbox(scenario) as sandbox, running_prometheus([sandbox]) as prometheus:
        httpx.get(f"{prometheus}/api/v1/query", params={"query": "up"})

Dev-side code, like `devstack`: nothing in the plugin's runtime imports it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from powerx_dev.processes import free_port, parent_death_signal, tail

BINARY_ENV = "POWERX_PROMETHEUS"
"""Path of a `prometheus` binary to use instead of the one on PATH."""

DEBIAN_PACKAGE = "prometheus"
INSTALL_LOCK = Path(tempfile.gettempdir()) / "powerx-prometheus-install.lock"
APT_LISTS = Path("/var/lib/apt/lists")


class PrometheusUnavailable(RuntimeError):
    """No `prometheus` binary, and this machine cannot install one by itself."""


class PrometheusStartError(RuntimeError):
    """The server did not come up or did not scrape its targets; the message has its log tail."""


# -- finding or installing the binary ---------------------------------------------------------


def plan_install(*, found: str | None, euid: int, debian: bool, apt_lists: bool) -> list[list[str]]:
    """The commands that bring `prometheus` onto this machine ([] when it is there already).

    :param found: the binary already found, if any.
    :param euid: the effective user id (only root installs packages).
    :param debian: whether this is a Debian-like system with apt-get.
    :param apt_lists: whether apt's package lists are present (else `apt-get update` first).
    :raises PrometheusUnavailable: when it is missing and cannot be installed here; the message
        says what to install.
    """
    if found:
        return []
    if not debian:
        raise PrometheusUnavailable(
            "the `prometheus` server binary is not on PATH: install Prometheus "
            "(https://prometheus.io/download/, or your system's `prometheus` package) and put "
            f"`prometheus` on PATH, or set {BINARY_ENV} to its path"
        )
    if euid != 0:
        raise PrometheusUnavailable(
            "the `prometheus` server binary is not on PATH and only root can install it: run "
            "`sudo apt-get install --no-install-recommends prometheus` (Debian's package), "
            f"or set {BINARY_ENV} to a prometheus binary"
        )
    install = ["apt-get", "install", "-y", "--no-install-recommends", DEBIAN_PACKAGE]
    return [install] if apt_lists else [["apt-get", "update"], install]


def _find() -> str | None:
    override = os.environ.get(BINARY_ENV)
    if override:
        if not os.access(override, os.X_OK):
            raise PrometheusUnavailable(f"{BINARY_ENV}={override} is not an executable file")
        return override
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None
    )


def _has_apt_lists() -> bool:
    return APT_LISTS.is_dir() and any(APT_LISTS.glob("*Packages*"))


def _run_apt(command: list[str]) -> subprocess.CompletedProcess[str]:
    # noninteractive: no debconf questions; invoke-rc.d does not start the packaged service
    # where there is no init system (containers), and we never need it to.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


def ensure_prometheus() -> Path:
    """The `prometheus` binary: `$POWERX_PROMETHEUS`, else PATH's; when missing and running as
    root on Debian, installs Debian's `prometheus` package first (under a file lock, so parallel
    callers install it once).

    :raises PrometheusUnavailable: missing and not installable here, or the install failed.
    """
    found = _find()
    if found:
        return Path(found)
    debian = Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None
    plan_install(found=None, euid=os.geteuid(), debian=debian, apt_lists=True)  # raises if not
    INSTALL_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with INSTALL_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another caller may be installing it right now
        found = _find()
        if found:
            return Path(found)
        commands = plan_install(
            found=None, euid=os.geteuid(), debian=True, apt_lists=_has_apt_lists()
        )
        updated = len(commands) == 2
        for command in commands:
            done = _run_apt(command)
            if done.returncode != 0 and not updated and command[1] == "install":
                # stale package lists (a 404 for an old .deb): refresh once and try again
                _run_apt(["apt-get", "update"])
                updated = True
                done = _run_apt(command)
            if done.returncode != 0:
                raise PrometheusUnavailable(
                    f"`{' '.join(command)}` exited with {done.returncode}:\n"
                    + "\n".join((done.stdout + done.stderr).splitlines()[-20:])
                )
    found = _find()
    if not found:
        raise PrometheusUnavailable(f"installed {DEBIAN_PACKAGE} but no `prometheus` on PATH")
    return Path(found)


# -- running a server ---------------------------------------------------------------------------


def scrape_config(targets: Sequence[str], scrape_interval: str = "1s") -> dict:
    """A Prometheus config scraping each target (`http://host:port[/path]` or `host:port`;
    the path defaults to /metrics), one job per target: `powerx-0`, `powerx-1`, ..."""
    jobs = []
    for number, target in enumerate(targets):
        parts = urlsplit(target if "://" in target else f"http://{target}")
        if not parts.netloc:
            raise ValueError(f"scrape target {target!r} has no host:port")
        jobs.append(
            {
                "job_name": f"powerx-{number}",
                "scheme": parts.scheme or "http",
                "metrics_path": parts.path if parts.path not in ("", "/") else "/metrics",
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "static_configs": [{"targets": [parts.netloc]}],
            }
        )
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": jobs,
    }


@contextmanager
def running_prometheus(
    targets: Sequence[str],
    *,
    scrape_interval: str = "1s",
    port: int = 0,
    startup_timeout: float = 60.0,
) -> Iterator[str]:
    """Start a Prometheus server scraping `targets` and yield its base URL once it is ready and
    has scraped every target successfully.

    :param targets: what to scrape: `http://host:port[/path]` (path default /metrics) or
        `host:port`, e.g. a sandbox's base URL.
    :param scrape_interval: Prometheus duration between scrapes (1s keeps tests fast).
    :param port: the port to listen on (127.0.0.1); 0 picks a free one.
    :param startup_timeout: seconds to wait for `/-/ready` and the first good scrapes.
    :raises PrometheusUnavailable: no binary (see ensure_prometheus).
    :raises PrometheusStartError: the server exited, was not ready or a target stayed down;
        the message carries the log tail and the targets' last errors.

    The config and the TSDB live in a temporary directory; the server is terminated (then
    killed) when the block ends, also when it raises or startup fails.
    """
    binary = ensure_prometheus()
    with tempfile.TemporaryDirectory(prefix="powerx-prometheus-") as tmp:
        config = Path(tmp) / "prometheus.yml"
        # JSON is YAML: no YAML writer needed, and quoting is never ambiguous
        config.write_text(json.dumps(scrape_config(targets, scrape_interval), indent=2))
        log_path = Path(tmp) / "prometheus.log"
        for attempt in range(3):
            listen = port or free_port()
            process = _start(binary, config, Path(tmp) / "data", listen, log_path)
            try:
                url = f"http://127.0.0.1:{listen}"
                _wait_until_ready(process, url, log_path, startup_timeout)
            except PrometheusStartError:
                _stop(process)
                if port or attempt == 2 or "address already in use" not in tail(log_path):
                    raise
                continue  # someone took the free port between our check and its bind
            try:
                _wait_for_targets(process, url, len(targets), log_path, startup_timeout)
                yield url
            finally:
                _stop(process)
            return


def _start(
    binary: Path, config: Path, data: Path, port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    command = [
        str(binary),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the caller's terminal reaches only us
            preexec_fn=parent_death_signal(),  # ... and a caller killed outright takes it along
        )


def _wait_until_ready(
    process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise PrometheusStartError(
                f"prometheus exited with code {code} before it was ready:\n{tail(log_path)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise PrometheusStartError(
        f"prometheus at {url} was not ready within {timeout:g}s:\n{tail(log_path)}"
    )


def target_health(url: str) -> list[dict]:
    """The active scrape targets of a Prometheus server (`/api/v1/targets`): each with
    `scrapeUrl`, `health` ("up", "down", "unknown"), `lastError`, `lastScrape`."""
    answer = httpx.get(f"{url}/api/v1/targets", params={"state": "active"}, timeout=5.0)
    answer.raise_for_status()
    return answer.json()["data"]["activeTargets"]


def _wait_for_targets(
    process: subprocess.Popen[bytes], url: str, expected: int, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    targets: list[dict] = []
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PrometheusStartError(f"prometheus exited while starting:\n{tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            targets = target_health(url)
            if len(targets) == expected and all(t["health"] == "up" for t in targets):
                return
        time.sleep(0.1)
    states = "; ".join(
        f"{t.get('scrapeUrl')}: {t.get('health')} {t.get('lastError') or ''}".strip()
        for t in targets
    )
    raise PrometheusStartError(
        f"prometheus at {url} did not scrape every target within {timeout:g}s "
        f"({states or 'no targets'}):\n{tail(log_path)}"
    )


def wait_for_scrape(url: str, after: float, *, timeout: float = 30.0) -> None:
    """Wait until every target was scraped successfully at or after `after` (epoch seconds),
    so a query ending at `after` sees data up to then.

    :raises PrometheusStartError: a target is down or not scraped in time.
    """
    deadline = time.monotonic() + timeout
    targets: list[dict] = []
    while time.monotonic() < deadline:
        targets = target_health(url)
        if targets and all(
            t["health"] == "up" and _epoch(t["lastScrape"]) >= after for t in targets
        ):
            return
        time.sleep(0.1)
    raise PrometheusStartError(f"no scrape of every target after {after:.3f}: {targets}")


def _epoch(text: str) -> float:
    # Prometheus writes RFC 3339 with nanoseconds; Python parses up to microseconds.
    head, _, rest = text.partition(".")
    digits = "".join(ch for ch in rest if ch.isdigit())
    zone = rest[len(digits) :] if rest else ""
    moment = f"{head}.{digits[:6].ljust(6, '0')}{zone}" if rest else text
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
