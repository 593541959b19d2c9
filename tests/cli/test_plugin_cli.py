"""`powerx plugin ...`: argument parsing, `--set` adjustments, status tables from given
payloads, exit codes, and clear errors without tracebacks (no Airflow needed)."""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from powerx_upgrade import airflow_client as http
from powerx_upgrade.cli import plugin
from powerx_upgrade.cli.main import build_parser, main

pytestmark = pytest.mark.unit

SHA = "ab" * 32


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["plugin", *argv])


def upgrade_args(*extra: str) -> list[str]:
    return [
        "upgrade",
        "--plan",
        "crm-sync-standard",
        "--version",
        "2.4.0",
        "--artifact",
        "s3://releases/crm-sync-2.4.0.tgz",
        "--sha256",
        SHA.upper(),
        "--signature",
        "c2lnbmF0dXJl",
        *extra,
    ]


def text_of(renderable: Any) -> str:
    console = Console(record=True, width=220, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.fixture(autouse=True)
def _no_connection_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        http.ENV_URL,
        http.ENV_TOKEN,
        http.ENV_USERNAME,
        http.ENV_PASSWORD,
        http.ENV_APPROVAL_TOKEN,
    ):
        monkeypatch.delenv(name, raising=False)


# -- upgrade: the run conf and usage errors ---------------------------------------------------


def test_upgrade_builds_the_plans_trigger_conf_from_the_flags():
    args = parse(*upgrade_args("--reason", "CI 1234", "--wait", "--timeout", "30m"))
    assert args.func is plugin.cmd_upgrade and args.wait and args.plan == "crm-sync-standard"
    assert plugin.upgrade_conf(args) == {
        "target_version": "2.4.0",
        "artifact_uri": "s3://releases/crm-sync-2.4.0.tgz",
        "artifact_sha256": SHA,  # lower-cased
        "artifact_signature": "c2lnbmF0dXJl",
        "reason": "CI 1234",
    }
    assert plugin.timeout_seconds(args.timeout) == 1800


def test_a_dry_run_needs_no_artifact_and_says_so_in_the_conf():
    args = parse("upgrade", "--plan", "p", "--version", "2.4.0", "--dry-run")
    assert plugin.upgrade_conf(args) == {"target_version": "2.4.0", "dry_run": True}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (upgrade_args("--strategy", "canary"), "--strategy 'canary' is not supported"),
        (upgrade_args()[:-2], "--signature required"),
        (
            ["upgrade", "--plan", "p", "--version", "2.4.0"],
            "--artifact, --sha256, --signature required",
        ),
        ([*upgrade_args()[:7], "--sha256", "xyz", "--signature", "s"], "'xyz' is not 64 hex"),
        (upgrade_args("--wait", "--timeout", "soon"), "--timeout 'soon'"),
        (["status", "r1", "--watch", "--format", "json"], "--watch shows a live table"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(argv, message, capsys):
    assert main(["plugin", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_strategy_policy_is_the_default_and_the_only_one():
    assert parse(*upgrade_args()).strategy == "policy"
    assert plugin.STRATEGIES == ("policy",)


@pytest.mark.parametrize(
    "argv",
    [
        ["rollback", "--run", "r1"],  # no --reason
        ["rollback", "--reason", "x"],  # neither --run nor --plan
        ["rollback", "--run", "r1", "--plan", "p", "--reason", "x"],  # both
        ["rollback", "--run", "r1", "--reason", "x", "--scope", "everything"],
        ["adjust", "r1"],  # neither --set nor --file
        ["report", "show", "r1", "--format", "pdf"],
        ["upgrade", "--plan", "p"],  # no --version
    ],
)
def test_argparse_refuses_incomplete_commands_with_exit_2(argv):
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2


def test_every_decision_verb_takes_a_run_a_batch_and_a_reason():
    for verb in ("pause", "resume", "approve", "reject", "stop", "takeover", "release"):
        args = parse(verb, "run-7", "--batch", "2", "--reason", "looks good")
        assert (args.decision, args.run_id, args.batch, args.reason) == (
            verb,
            "run-7",
            2,
            "looks good",
        )
        assert args.func is plugin.cmd_decide


def test_connection_flags_win_over_the_environment(monkeypatch):
    monkeypatch.setenv(http.ENV_URL, "http://env:8080/")
    monkeypatch.setenv(http.ENV_TOKEN, "env-token")
    monkeypatch.setenv(http.ENV_USERNAME, "env-user")
    settings = http.ConnectionSettings.from_env(url="http://flag:9000", token=None)
    assert settings.url == "http://flag:9000"
    assert settings.token == "env-token" and settings.username == "env-user"
    assert http.ConnectionSettings.from_env({}).url == http.DEFAULT_AIRFLOW_URL


# -- adjust: --set and --file -----------------------------------------------------------------


def test_set_pairs_become_the_adjustment_payload():
    adjustment = plugin.parse_settings(
        [
            "gate.error_rate=0.03",
            "gate.latency_p95_ms.per_tenant=+25%",
            "gate.error_rate=0.04",  # the last value for the same check wins
            "bake=2m",
            "batches.3.ratio=0.6",
            "batches.3.bake=5m",
            "batch.4.count=120",
            "deploy.concurrency=5",
            "rollback_concurrency=80",
        ]
    )
    assert adjustment == {
        "checks": [
            {"metric": "latency_p95_ms", "scope": "per_tenant", "limit": "+25%"},
            {"metric": "error_rate", "limit": 0.04},
        ],
        "bake": "2m",
        "batches": {3: {"ratio": 0.6, "bake": "5m"}, 4: {"count": 120}},
        "deploy_concurrency": 5,
        "rollback_concurrency": 80,
    }


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("error_rate", "expected KEY=VALUE"),
        ("gate.error_rate=", "expected KEY=VALUE"),
        ("threshold=3", "unknown key 'threshold'"),
        ("batches.x.ratio=0.5", "the batch must be a number"),
        ("batches.2.size=5", "unknown key"),
        ("deploy.concurrency=0", "concurrency must be a whole number"),
        ("deploy.concurrency=2.5", "concurrency must be a whole number"),
    ],
)
def test_bad_set_pairs_are_usage_errors_naming_the_pair(item, message):
    with pytest.raises(plugin.UsageError, match=message) as raised:
        plugin.parse_settings([item])
    assert repr(item) in str(raised.value)


def test_an_adjustment_file_is_yaml_or_json_optionally_under_adjust(tmp_path: Path):
    plain = tmp_path / "a.yaml"
    plain.write_text("bake: 3m\nchecks:\n  - {metric: error_rate, limit: 0.02}\n")
    wrapped = tmp_path / "b.json"
    wrapped.write_text(json.dumps({"adjust": {"deploy_concurrency": 4}}))
    assert plugin.load_adjustment(plain) == {
        "bake": "3m",
        "checks": [{"metric": "error_rate", "limit": 0.02}],
    }
    assert plugin.load_adjustment(wrapped) == {"deploy_concurrency": 4}
    (tmp_path / "c.yaml").write_text("- 1\n")
    with pytest.raises(plugin.UsageError, match="expected a mapping"):
        plugin.load_adjustment(tmp_path / "c.yaml")
    with pytest.raises(plugin.UsageError, match=r"missing\.yaml"):
        plugin.load_adjustment(tmp_path / "missing.yaml")


def test_steering_commands_need_an_approval_token_before_any_request(capsys):
    code = main(["plugin", "adjust", "r1", "--set", "bake=2m", "--token", "t"])
    assert code == 2
    err = capsys.readouterr().err
    assert "adjust needs an approval token" in err and http.ENV_APPROVAL_TOKEN in err


# -- exit codes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "dry_run", "code"),
    [
        ("promoted", False, 0),
        ("rolled_back", False, 1),
        ("partially_promoted", False, 1),
        ("stopped", False, 1),
        ("failed", False, 1),
        (None, False, 1),
        ("dry_run", True, 0),
        ("dry_run", False, 1),
        ("promoted", True, 1),
    ],
)
def test_the_exit_code_follows_the_outcome(outcome, dry_run, code):
    assert plugin.exit_code_for_outcome(outcome, dry_run=dry_run) == code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (http.Forbidden("POST", "u", 403, "approval refused", code="expired"), 1),
        (http.Conflict("PATCH", "u", 409, "run finished"), 1),
        (http.Unreachable("GET", "u", None, "connection refused"), 2),
        (http.NotAuthenticated("GET", "u", 401, "bad token"), 2),
        (http.ControlPlaneMissing("GET", "u", 404, "not installed"), 2),
        (http.Invalid("PATCH", "u", 422, "adjust.bake: bad"), 2),
        (http.NotFound("GET", "u", 404, "no run"), 2),
    ],
)
def test_refusals_exit_1_and_request_errors_exit_2(error, code):
    assert plugin.exit_code_for_error(error) == code


def test_a_connection_error_is_one_clear_line_and_exit_2(capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = main(
        ["plugin", "status", "r1", "--airflow-url", f"http://127.0.0.1:{port}", "--token", "t"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"http://127.0.0.1:{port}/internal/version/upgrade/runs/r1 failed" in err
    assert "Traceback" not in err


# -- client errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "kind", "detail", "code"),
    [
        (403, {"detail": {"code": "expired", "message": "exp is past"}}, http.Forbidden, "exp is past", "expired"),
        (422, {"detail": [{"path": "plan.batches.0.ratio", "message": "too big", "line": 4}]}, http.Invalid, "plan.batches.0.ratio: too big (line 4)", None),
        (422, {"detail": [{"loc": ["body", "reason"], "msg": "Field required"}]}, http.Invalid, "body.reason: Field required", None),
        (404, {"detail": "DagRun not found"}, http.NotFound, "DagRun not found", None),
        (412, {"detail": "stale etag"}, http.Conflict, "stale etag", None),
        (502, "<html>bad gateway</html>", http.ServerError, "<html>bad gateway</html>", None),
    ],
)  # fmt: skip
def test_errors_are_typed_and_carry_the_servers_detail(status, body, kind, detail, code):
    content = json.dumps(body) if isinstance(body, dict) else body
    request = httpx.Request("POST", "http://airflow/x")
    response = httpx.Response(status, content=content, request=request)
    with pytest.raises(kind) as raised:
        http.raise_for("POST", response)
    assert raised.value.detail == detail and raised.value.code == code
    assert str(raised.value) == f"POST http://airflow/x answered {status}: {detail}"


# -- status: from a given payload -------------------------------------------------------------

API_PAYLOAD = {
    "run_id": "manual__2026-11-27",
    "dag_id": "plugin_upgrade__crm-sync-standard",
    "plan_id": "crm-sync-standard",
    "status": "running",
    "outcome": None,
    "target_version": "2.4.0",
    "batches": [
        {"index": 1, "name": "canary", "tenants": ["t1", "t2"], "deployed": 2, "failed": 0,
         "verdict": "pass", "reason": "2 checks passed"},
        {"index": 2, "name": "gold", "tenants": 10, "deployed": 4, "failed": 1,
         "verdict": "fail", "reason": "error_rate 0.09 > 0.05"},
        {"index": 3, "name": "rest", "tenants": 30, "deployed": 0, "failed": 0,
         "verdict": None, "reason": None},
    ],
    "decisions": [
        {"batch_index": 1, "kind": "decide", "decision": "promote", "actor": None, "via": "auto"},
        {"batch_index": 2, "kind": "pause", "decision": "rollback", "actor": "alice",
         "via": "cli"},
    ],
    "controls": [
        {"kind": "takeover", "batch_index": None, "actor": "alice", "via": "cli",
         "requested_at": "2026-11-27T10:00:00+00:00", "applied_at": None, "outcome": None},
    ],
    "approvals": [{"action": "takeover", "subject": "alice", "via": "cli", "jti": "0123456789"}],
    "takeover": True,
}  # fmt: skip


def test_the_status_table_shows_batches_verdicts_decisions_and_controls():
    status = plugin.status_from_api(
        API_PAYLOAD, state="running", waiting=["batch_2.pause: gate failed [Resume, Roll back]"]
    )
    assert [(b.tenants, b.deployed, b.failed) for b in status.batches] == [
        ("2", "2", "0"),
        ("10", "4", "1"),
        ("30", "0", "0"),
    ]
    shown = text_of(plugin.render_status(status))
    assert "crm-sync-standard  run manual__2026-11-27  -> 2.4.0  state running  outcome -" in shown
    lines = shown.splitlines()
    canary = next(line for line in lines if "1 canary" in line)
    assert "pass" in canary and "promote" in canary and "2 checks passed" in canary
    assert "(" not in canary  # an automatic decision names nobody
    gold = next(line for line in lines if "2 gold" in line)
    assert "fail" in gold and "rollback (alice via cli)" in gold and "error_rate 0.09" in gold
    rest = next(line for line in lines if "3 rest" in line)
    assert [cell.strip() for cell in rest.split("│")[1:-1]] == [
        "3 rest",
        "30",
        "0",
        "0",
        "-",
        "-",
        "",
    ]
    assert "manual takeover: every batch waits for a human decision" in shown
    assert "waiting for a human: batch_2.pause: gate failed [Resume, Roll back]" in shown
    assert "takeover" in shown and "pending" in shown  # the control, not applied yet
    assert "takeover by alice (cli, jti 01234567)" in shown
    assert "REST API" not in shown


def _ti(task_id: str, state: str | None, map_index: int = -1) -> dict[str, Any]:
    return {"task_id": task_id, "state": state, "map_index": map_index}


def test_without_the_control_plane_the_status_comes_from_task_states_and_xcoms():
    run = {
        "dag_run_id": "r1",
        "dag_id": "plugin_upgrade__crm-sync-stack",
        "state": "running",
        "conf": {"target_version": "2.5.0"},
    }
    tis = [
        _ti("preflight.plan", "success"),
        _ti("batch_1.deploy", "success", 0),
        _ti("batch_1.deploy", "success", 1),
        _ti("batch_1.gate", "success"),
        _ti("batch_1.promote", "success"),
        _ti("batch_1.rollback", "skipped"),
        _ti("batch_2.deploy", "success", 0),
        _ti("batch_2.deploy", "failed", 1),
        _ti("batch_2.gate", "deferred"),
        _ti("batch_2.promote", None),
    ]
    summary = {
        "batches": [
            {"index": 1, "name": "gold", "size": 20},
            {"index": 2, "name": "bronze", "size": 40},
        ]
    }
    status = plugin.status_from_airflow(
        run, tis, plan_summary=summary, gates={1: {"phase": "pass", "reason": "ok"}}
    )
    assert status.plan_id == "crm-sync-stack" and status.source == "airflow"
    assert status.target_version == "2.5.0" and status.outcome is None and not status.ended
    one, two = status.batches
    assert (one.name, one.tenants, one.deployed, one.failed) == ("gold", "20", "2/2 shards", "0")
    assert (one.verdict, one.reason, one.decision) == ("pass", "ok", "promote")
    assert (two.deployed, two.failed, two.verdict, two.decision) == (
        "1/2 shards",
        "1",
        "baking",
        "-",
    )
    shown = text_of(plugin.render_status(status))
    assert (
        "1 gold" in shown and "2 bronze" in shown and "control-plane API is not available" in shown
    )

    ended = plugin.status_from_airflow(
        {**run, "state": "failed"}, tis, record={"outcome": "rolled_back"}
    )
    assert ended.ended and ended.outcome == "rolled_back"
    assert [(b.index, b.name) for b in ended.batches] == [(1, ""), (2, "")]  # no plan XCom


def test_waiting_prompts_say_what_the_run_waits_for_since_when_subject_and_options():
    details = [
        {
            "task_instance": {"task_id": "batch_2.pause"},
            "subject": "Batch 2 failed its gate",
            "options": ["Resume", "Roll back", "Stop"],
            "created_at": "2026-11-30T17:22:50.123456Z",
        },
        {
            "task_instance": {"task_id": "batch_3.approve"},
            "subject": "Approve batch 3 of crm-sync-demo?",
            "options": ["Approve", "Reject"],
            "created_at": "2026-11-30T17:30:01+00:00",
        },
    ]
    assert plugin.waiting_prompts(details) == [
        "batch 2 waits for a decision after its pause since 17:22:50: Batch 2 failed its gate "
        "[Resume, Roll back, Stop]",
        "batch 3 waits for approval since 17:30:01: Approve batch 3 of crm-sync-demo? "
        "[Approve, Reject]",
    ]


# -- reading a run: control plane first, Airflow as the fallback --------------------------------


def _airflow(routes: dict[str, Any], seen: list[str]) -> http.AirflowClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        for path, answer in routes.items():
            if request.url.path == path:
                status, body = answer
                return httpx.Response(status, json=body)
        return httpx.Response(404, json={"detail": "Not Found"})

    return http.AirflowClient("http://airflow", token="t", transport=httpx.MockTransport(handle))


RUN_PATH = "/api/v2/dags/plugin_upgrade__p/dagRuns/r1"
AIRFLOW_ROUTES = {
    RUN_PATH: (200, {"dag_run_id": "r1", "dag_id": "plugin_upgrade__p", "state": "success", "conf": {}}),
    f"{RUN_PATH}/hitlDetails": (200, {"hitl_details": []}),
    f"{RUN_PATH}/taskInstances/preflight.validate": (200, _ti("preflight.validate", "success")),
    f"{RUN_PATH}/taskInstances": (200, {"task_instances": [_ti("finalize.record", "success")], "total_entries": 1}),
    f"{RUN_PATH}/taskInstances/finalize.record/xcomEntries/return_value": (200, {"value": {"outcome": "promoted"}}),
}  # fmt: skip


def test_the_reader_falls_back_to_airflow_when_the_control_plane_is_not_installed():
    seen: list[str] = []
    reader = plugin.RunReader(_airflow(AIRFLOW_ROUTES, seen), "r1", "plugin_upgrade__p")
    status = reader.read()
    assert status.source == "airflow" and status.outcome == "promoted" and status.ended
    assert reader.outcome(status) == "promoted"
    reader.read()  # asks the control plane only once
    assert seen.count("/internal/version/upgrade/runs/r1") == 1


def test_the_reader_prefers_the_control_planes_view():
    seen: list[str] = []
    routes = {
        **AIRFLOW_ROUTES,
        "/internal/version/upgrade/runs/r1": (200, {**API_PAYLOAD, "run_id": "r1", "outcome": "promoted"}),
    }  # fmt: skip
    status = plugin.RunReader(_airflow(routes, seen), "r1", "plugin_upgrade__p").read()
    assert status.source == "control-plane" and status.state == "success"
    assert [b.name for b in status.batches] == ["canary", "gold", "rest"]
    assert f"{RUN_PATH}/taskInstances" not in seen


def test_a_run_unknown_to_the_control_plane_yet_is_read_from_airflow():
    routes = {
        **AIRFLOW_ROUTES,
        "/internal/version/upgrade/runs/r1": (404, {"detail": "run r1 is not in the ledger"}),
    }
    reader = plugin.RunReader(_airflow(routes, []), "r1", "plugin_upgrade__p")
    assert reader.read().source == "airflow"
    assert reader.control_plane  # still asked next time: the run may start any moment


def test_control_plane_calls_carry_the_approval_token_and_say_they_come_from_the_cli():
    sent: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"accepted": True})

    api = http.AirflowClient("http://airflow", token="t", transport=httpx.MockTransport(handle))
    answer = http.ControlPlane(api).decide(
        "r 1", "approve", reason="CAB-881", batch=3, approval="jwt"
    )
    assert answer == {"accepted": True}
    (request,) = sent
    assert request.method == "POST"
    assert request.url.raw_path == b"/internal/version/upgrade/runs/r%201/decisions"
    assert request.headers["Authorization"] == "Bearer t"
    assert request.headers["X-Approval-Token"] == "jwt"
    assert request.headers["X-PowerX-Client"] == "cli"
    assert json.loads(request.content) == {"decision": "approve", "reason": "CAB-881", "batch": 3}


def test_a_login_token_is_fetched_once_and_renewed_once_on_401():
    tokens = iter(["first", "second"])
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            assert json.loads(request.content) == {"username": "ci", "password": "pw"}
            return httpx.Response(201, json={"access_token": next(tokens)})
        seen.append(request.headers["Authorization"])
        status = 401 if request.headers["Authorization"] == "Bearer first" else 200
        return httpx.Response(status, json={"dags": []})

    api = http.AirflowClient(
        "http://airflow", username="ci", password="pw", transport=httpx.MockTransport(handle)
    )
    assert api.get("/api/v2/dags") == {"dags": []}
    assert seen == ["Bearer first", "Bearer second"]


class _FlakyReader:
    """Answers like RunReader: first an outage, then a running run, then the end."""

    run_id = "r1"

    def __init__(self, answers: list[Any]):
        self.answers = answers

    def read(self) -> plugin.RunStatus:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_following_a_run_rides_out_an_api_server_outage():
    outage = http.Unreachable("GET", "http://airflow/x", None, "connection refused")
    running = plugin.RunStatus("r1", "d", state="running")
    ended = plugin.RunStatus("r1", "d", state="success", outcome="promoted")
    shown: list[str | None] = []
    reader = _FlakyReader([outage, running, outage, ended])
    status = plugin._poll(reader, float("inf"), 0, lambda _: None, lambda s: shown.append(s.state))
    assert status is ended and shown == ["running", "success"]


def test_following_a_run_gives_up_at_the_deadline_naming_the_last_error():
    outage = http.Unreachable("GET", "http://airflow/x", None, "connection refused")
    with pytest.raises(TimeoutError, match=r"state unknown.*connection refused"):
        plugin._poll(_FlakyReader([outage]), 0, 0, lambda _: None, lambda _: None)


def test_a_ci_log_gets_one_line_per_change_and_nothing_for_untouched_batches(capsys):
    seen: dict[str, str] = {}
    running = plugin.RunStatus(
        "r1",
        "d",
        state="running",
        batches=[plugin.BatchRow(1, "canary"), plugin.BatchRow(2, "rest")],
    )
    plugin._print_changes(running, seen)
    plugin._print_changes(running, seen)  # no change: no line
    running.batches[0].verdict, running.batches[0].reason = "pass", "held"
    plugin._print_changes(running, seen)
    assert capsys.readouterr().out.splitlines() == [
        "run r1: running",
        "batch 1 canary: verdict pass, decision - (held)",
    ]


def test_the_control_plane_is_not_asked_before_the_run_is_in_the_ledger():
    """Until preflight.validate has put the run in the ledger the API could only answer 404
    (audited as a refusal each time): the reader reads Airflow alone meanwhile."""
    seen: list[str] = []
    routes = {
        **AIRFLOW_ROUTES,
        f"{RUN_PATH}/taskInstances/preflight.validate": (200, _ti("preflight.validate", "running")),
    }
    reader = plugin.RunReader(_airflow(routes, seen), "r1", "plugin_upgrade__p")
    assert reader.read().source == "airflow"
    assert "/internal/version/upgrade/runs/r1" not in seen
