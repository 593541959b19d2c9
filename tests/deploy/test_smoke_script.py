"""scripts/workflows/version-upgrade-smoke.py against a small fake of Airflow's REST API and of
the platform's tenant listing (a real HTTP server on 127.0.0.1): the verdicts and exit codes
of the cases a live stack cannot cheaply produce (a rollback that did not happen, a tenant left
behind, a wrong password, a DAG that is not there, a run that never ends). The happy and
failure paths against a live stack are tests/stack/test_smoke_script.py."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import pytest
from rich.console import Console

from tests.deploy.compose_rules import ROOT

pytestmark = pytest.mark.unit

SCRIPT = ROOT / "scripts" / "workflows" / "version-upgrade-smoke.py"
DAG = "plugin_upgrade__crm-sync-demo"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("version_upgrade_smoke", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


smoke = _load_script()


@dataclass
class FakeDeployment:
    """What the fake Airflow and platform do. A run finishes after `polls_to_finish` state
    reads, with the state/outcome `behaviour` gives its target version, and moves the tenants
    as `tenant_effect` says."""

    password: str = "secret"
    dags: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {DAG: {"dag_id": DAG, "is_paused": True}}
    )
    behaviour: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {
            "2.4.0": ("success", "promoted"),
            "2.5.0": ("failed", "rolled_back"),
        }
    )
    polls_to_finish: int = 2
    params: dict[str, Any] = field(
        default_factory=lambda: {"target_version": "2.4.0", "artifact_sha256": "d" * 64}
    )
    """The DAG's trigger-form defaults (GET .../details)."""
    tenants: dict[str, str] = field(
        default_factory=lambda: {"t-1": "2.3.1", "t-2": "2.3.1", "t-3": "2.3.1"}
    )
    left_behind: set[str] = field(default_factory=set)
    """Tenants a failed run leaves on its target version (a broken rollback)."""
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    expire_token_after: int | None = None
    requests: list[str] = field(default_factory=list)
    import_errors: list[dict[str, Any]] = field(default_factory=list)
    tokens_issued: int = 0
    _uses: int = 0

    def finish(self, run: dict[str, Any]) -> None:
        state, outcome = self.behaviour[run["conf"]["target_version"]]
        run.update(state=state, outcome=outcome)
        target = run["conf"]["target_version"]
        if state == "success":
            self.tenants.update(dict.fromkeys(self.tenants, target))
        else:
            self.tenants.update(dict.fromkeys(self.left_behind, target))


class Handler(BaseHTTPRequestHandler):
    fake: FakeDeployment

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any = None) -> None:
        data = json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _authorised(self) -> bool:
        fake = self.fake
        expected = f"Bearer token-{fake.tokens_issued}"
        if self.headers.get("Authorization") != expected:
            return False
        fake._uses += 1
        return fake.expire_token_after is None or fake._uses <= fake.expire_token_after

    def do_POST(self) -> None:
        fake = self.fake
        fake.requests.append(f"POST {self.path}")
        if self.path == "/auth/token":
            body = self._body()
            if body.get("password") != fake.password:
                return self._send(401, {"detail": "Invalid credentials"})
            fake.tokens_issued += 1
            fake._uses = 0
            return self._send(201, {"access_token": f"token-{fake.tokens_issued}"})
        if not self._authorised():
            return self._send(401, {"detail": "Not authenticated"})
        match = re.fullmatch(r"/api/v2/dags/([^/]+)/dagRuns", self.path)
        if match:
            body = self._body()
            assert body["logical_date"] is None
            run_id = f"manual__{len(fake.runs) + 1}"
            fake.runs[run_id] = {
                "dag_id": match[1],
                "conf": body["conf"],
                "state": "queued",
                "polls": 0,
            }
            return self._send(200, {"dag_run_id": run_id, "state": "queued"})
        return self._send(404, {"detail": "not found"})

    def do_PATCH(self) -> None:
        fake = self.fake
        fake.requests.append(f"PATCH {self.path}")
        if not self._authorised():
            return self._send(401, {"detail": "Not authenticated"})
        match = re.fullmatch(r"/api/v2/dags/([^/?]+)", self.path)
        if match and match[1] in fake.dags:
            fake.dags[match[1]].update(self._body())
            return self._send(200, fake.dags[match[1]])
        return self._send(404, {"detail": "not found"})

    def _dag(self, dag_id: str, *, details: bool) -> None:
        dag = self.fake.dags.get(dag_id)
        if dag is None:
            return self._send(404, {"detail": "no such DAG"})
        if not details:
            return self._send(200, dag)
        params = {k: {"value": v, "description": None} for k, v in self.fake.params.items()}
        return self._send(200, {**dag, "params": params})

    def do_GET(self) -> None:
        fake = self.fake
        path = self.path.split("?")[0]
        fake.requests.append(f"GET {path}")
        if path == "/internal/plugins/crm-sync/tenants":
            tenants = [{"id": t, "version": v} for t, v in fake.tenants.items()]
            return self._send(200, {"plugin": "crm-sync", "tenants": tenants})
        if not self._authorised():
            return self._send(401, {"detail": "Not authenticated"})
        if path == "/api/v2/importErrors":
            return self._send(200, {"import_errors": fake.import_errors})
        if match := re.fullmatch(r"/api/v2/dags/([^/]+)(/details)?", path):
            return self._dag(match[1], details=bool(match[2]))
        if match := re.fullmatch(r"/api/v2/dags/[^/]+/dagRuns/([^/]+)", path):
            run = fake.runs[match[1]]
            run["polls"] += 1
            if run["state"] not in ("success", "failed"):
                if run["polls"] >= fake.polls_to_finish:
                    fake.finish(run)
                else:
                    run["state"] = "running"
            return self._send(200, {"dag_run_id": match[1], "state": run["state"]})
        if match := re.fullmatch(r"/api/v2/dags/[^/]+/dagRuns/([^/]+)/taskInstances", path):
            run = fake.runs[match[1]]
            verify = "success" if run.get("outcome") == "rolled_back" else "skipped"
            tis = [
                {"task_id": "finalize.record", "map_index": -1, "state": "success"},
                {"task_id": "rollback.verify", "map_index": -1, "state": verify},
                {"task_id": "batch_1.deploy", "map_index": 0, "state": "success"},
            ]
            return self._send(200, {"task_instances": tis, "total_entries": len(tis)})
        if match := re.fullmatch(
            r"/api/v2/dags/[^/]+/dagRuns/([^/]+)/taskInstances/([^/]+)/xcomEntries/return_value",
            path,
        ):
            run = fake.runs[match[1]]
            if match[2] == "finalize.record":
                return self._send(
                    200, {"key": "return_value", "value": {"outcome": run["outcome"]}}
                )
            if match[2] == "finalize.report":
                link = f"file:///reports/crm-sync-demo/{match[1]}/report.html"
                return self._send(200, {"key": "return_value", "value": json.dumps({"link": link})})
        return self._send(404, {"detail": "not found"})


@pytest.fixture
def fake() -> FakeDeployment:
    return FakeDeployment()


@pytest.fixture
def url(fake: FakeDeployment) -> Iterator[str]:
    handler = type("BoundHandler", (Handler,), {"fake": fake})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_smoke(url: str, *extra: str, password: str = "secret") -> tuple[int, str]:
    out = io.StringIO()
    console = Console(file=out, width=220, color_system=None)
    argv = [
        "--airflow-url", url, "--username", "ci", "--password", password,
        "--poll-interval", "0.01", "--dag-timeout", "0", "--run-timeout", "5", *extra,
    ]  # fmt: skip
    return smoke.main(argv, console=console), out.getvalue()


def rows(output: str) -> dict[str, str]:
    """'path check' -> PASS/FAIL from the printed table."""
    found = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) >= 3 and cells[2] in ("PASS", "FAIL"):
            found[f"{cells[0]} {cells[1]}"] = cells[2]
    return found


def test_both_paths_pass_exit_zero_and_every_check_is_printed(url, fake):
    code, output = run_smoke(url, "--platform-url", url)
    assert code == 0, output
    assert rows(output) == {
        f"happy DAG {DAG} exists": "PASS",
        "happy DAG unpaused": "PASS",
        "happy run ends success": "PASS",
        "happy outcome is promoted": "PASS",
        "happy report written": "PASS",
        "happy tenants upgraded to 2.4.0": "PASS",
        f"failure DAG {DAG} exists": "PASS",
        "failure DAG unpaused": "PASS",
        "failure run ends failed": "PASS",
        "failure outcome is rolled_back": "PASS",
        "failure rollback verified": "PASS",
        "failure report written": "PASS",
        "failure every tenant back on its old version": "PASS",
    }
    assert "13/13 checks passed" in output
    # The REST calls a CI pipeline makes, in order: login, unpause, trigger, poll.
    assert fake.requests[:4] == [
        "POST /auth/token",
        f"GET /api/v2/dags/{DAG}",
        f"PATCH /api/v2/dags/{DAG}",
        "GET /internal/plugins/crm-sync/tenants",
    ]
    assert [r["conf"]["target_version"] for r in fake.runs.values()] == ["2.4.0", "2.5.0"]
    assert fake.dags[DAG]["is_paused"] is False


def test_a_failure_path_that_promotes_instead_of_rolling_back_fails_the_smoke_test(url, fake):
    fake.behaviour["2.5.0"] = ("success", "promoted")
    code, output = run_smoke(url, "--platform-url", url)
    assert code == 1
    table = rows(output)
    assert table["failure run ends failed"] == "FAIL"
    assert table["failure outcome is rolled_back"] == "FAIL"
    assert table["failure rollback verified"] == "FAIL"
    assert table["failure every tenant back on its old version"] == "FAIL"
    assert "2.4.0->2.5.0" in output


def test_a_tenant_left_on_the_new_version_after_rollback_fails_the_smoke_test(url, fake):
    fake.left_behind = {"t-2"}
    code, output = run_smoke(url, "--platform-url", url)
    assert code == 1
    assert rows(output)["failure every tenant back on its old version"] == "FAIL"
    assert "1 not back: t-2 2.4.0->2.5.0" in output


def test_without_a_platform_url_tenant_versions_are_not_checked(url, fake):
    fake.left_behind = {"t-2"}
    code, output = run_smoke(url)
    assert code == 0, output
    assert not any("tenant" in check for check in rows(output))
    assert "GET /internal/plugins/crm-sync/tenants" not in fake.requests


def test_a_wrong_password_is_a_setup_error_exit_two(url):
    code, output = run_smoke(url, password="nope")
    assert code == 2
    assert "login refused" in output and "401" in output


def test_an_unreachable_airflow_is_a_setup_error_exit_two():
    code, output = run_smoke("http://127.0.0.1:9")
    assert code == 2
    assert "cannot reach Airflow" in output


def test_a_missing_dag_fails_with_the_import_errors_named(url, fake):
    fake.dags.clear()
    fake.import_errors = [{"filename": "/opt/airflow/dags/upgrade_plans.py"}]
    code, output = run_smoke(url, "--paths", "happy")
    assert code == 1
    assert rows(output) == {f"happy DAG {DAG} exists": "FAIL"}
    assert "import errors in /opt/airflow/dags/upgrade_plans.py" in output
    assert not fake.runs


def test_a_run_that_does_not_finish_in_time_fails_without_waiting_longer(url, fake):
    fake.polls_to_finish = 10**9
    code, output = run_smoke(url, "--paths", "happy", "--run-timeout", "0.3")
    assert code == 1
    assert rows(output)["happy run ends success"] == "FAIL"
    assert "not finished after 0.3s" in output


def test_an_expired_token_is_renewed_once(url, fake):
    fake.expire_token_after = 3
    code, output = run_smoke(url, "--paths", "happy")
    assert code == 0, output
    assert fake.tokens_issued >= 2


def test_custom_dags_and_confs_are_used_as_given(url, fake):
    fake.dags["other"] = {"dag_id": "other", "is_paused": False}
    conf = {"target_version": "2.5.0", "artifact_uri": "s3://x", "artifact_sha256": "a" * 64}
    code, output = run_smoke(url, "--failure-dag", "other", "--failure-conf", json.dumps(conf))
    assert code == 0, output
    assert [(r["dag_id"], r["conf"]) for r in fake.runs.values()] == [
        (DAG, smoke.DEFAULT_HAPPY_CONF),
        ("other", conf),
    ]
    assert "PATCH /api/v2/dags/other" not in fake.requests  # already unpaused


@pytest.mark.parametrize(
    "argv",
    [["--happy-conf", "[1]"], ["--happy-conf", "{not json"], ["--run-timeout", "soon"]],
)
def test_bad_arguments_exit_two(argv):
    with pytest.raises(SystemExit) as exc:
        smoke.parser().parse_args(argv)
    assert exc.value.code == 2


def test_unknown_paths_exit_two(url):
    code, output = run_smoke(url, "--paths", "happy,sideways")
    assert code == 2
    assert "--paths" in output


def test_options_default_to_environment_variables(monkeypatch):
    monkeypatch.setenv("POWERX_SMOKE_AIRFLOW_URL", "http://airflow.example:8080")
    monkeypatch.setenv("POWERX_SMOKE_HAPPY_CONF", '{"target_version": "9.9.9"}')
    monkeypatch.setenv("POWERX_SMOKE_RUN_TIMEOUT", "60")
    args = smoke.parser().parse_args([])
    assert args.airflow_url == "http://airflow.example:8080"
    assert args.happy_conf == {"target_version": "9.9.9"}
    assert args.run_timeout == 60.0
    assert args.failure_conf == smoke.DEFAULT_FAILURE_CONF


def test_with_a_signing_key_each_run_is_signed_for_its_version_and_the_dags_default_digest(
    url, fake
):
    from powerx_upgrade.security.artifacts import load_public_keys, verify_artifact
    from tests.signing import SIGNING_KEYS, TEST_KEY_ID, TEST_PRIVATE_KEY

    code, output = run_smoke(url, "--signing-key", str(TEST_PRIVATE_KEY))
    assert code == 0, output
    keys = load_public_keys(SIGNING_KEYS)
    confs = [r["conf"] for r in fake.runs.values()]
    assert [c["target_version"] for c in confs] == ["2.4.0", "2.5.0"]
    for conf in confs:
        signature = conf["artifact_signature"]
        version = conf["target_version"]
        assert verify_artifact(signature, "crm-sync", version, "d" * 64, keys) == TEST_KEY_ID


def test_a_conf_that_is_already_signed_or_names_its_digest_is_signed_as_given(url, fake):
    from tests.signing import TEST_PRIVATE_KEY, sign

    happy = {"target_version": "2.4.0", "artifact_signature": "kept"}
    failure = {"target_version": "2.5.0", "artifact_sha256": "e" * 64}
    code, output = run_smoke(
        url, "--signing-key", str(TEST_PRIVATE_KEY),
        "--happy-conf", json.dumps(happy), "--failure-conf", json.dumps(failure),
    )  # fmt: skip
    assert code == 0, output
    first, second = (r["conf"] for r in fake.runs.values())
    assert first == happy
    assert second["artifact_signature"] == sign("2.5.0", "e" * 64)


def test_an_unreadable_signing_key_exits_two_before_anything_is_triggered(url, fake, tmp_path):
    code, output = run_smoke(url, "--signing-key", str(tmp_path / "missing.pem"))
    assert code == 2 and "--signing-key" in output and "missing.pem" in output
    assert not fake.runs


def test_the_script_signs_the_same_message_as_the_package():
    from powerx_upgrade.security.artifacts import artifact_message

    args = ("crm-sync", "2.4.0-rc.1", "AB" * 32)
    assert smoke.artifact_message(*args) == artifact_message(*args)
