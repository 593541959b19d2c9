"""What the sandbox's routers share: the fleet holder, the OpenAPI tags and error shapes, and
the timeout fault that holds an answer back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from powerx_dev.sandbox.contract import ErrorBody
from powerx_dev.sandbox.errors import InjectedHttpError
from powerx_dev.sandbox.faults import TimeoutFault
from powerx_dev.sandbox.scenario import Scenario
from powerx_dev.sandbox.state import RequestFaults, SandboxState

PLATFORM = "platform"
MONITORING = "monitoring"
RECORDS = "notify and audit"
SANDBOX = "sandbox inspection"


def error_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


@dataclass
class Holder:
    """The current fleet; `POST /sandbox/reset` swaps in a fresh one."""

    scenario: Scenario
    make: Callable[[], SandboxState]
    state: SandboxState


def state_of(request: Request) -> SandboxState:
    return request.app.state.sandbox.state


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


async def _hold_then_timeout(state: SandboxState, fault: TimeoutFault, endpoint: str) -> None:
    seconds = fault.hold.total_seconds()
    await state.sleep(seconds)
    raise InjectedHttpError(
        504, f"injected timeout fault on {endpoint}: the answer was held for {seconds:g}s"
    )


async def guarded(
    state: SandboxState,
    decision: RequestFaults,
    endpoint: str,
    work: Callable[[], Awaitable[Any]],
) -> Any:
    """Run the work under a timeout fault decision (applied or dropped) if one fired."""
    fault = decision.timeout
    if fault is not None and not fault.applied:
        await _hold_then_timeout(state, fault, endpoint)
    result = await work()
    if fault is not None:
        await _hold_then_timeout(state, fault, endpoint)
    return result


def async_value(compute: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def run() -> Any:
        return compute()

    return run
