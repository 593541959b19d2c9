"""A real headless Chromium (Debian's `chromium`, installed when missing) driven by Playwright
against the session's live stack (`stack` of tests/stack/conftest.py). Screenshots of each step
go to test-output/ui/ (gitignored), kept as the tests' artifacts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from powerx_dev.browser import LAUNCH_ARGS, ensure_chromium
from powerx_dev.devstack import AirflowStack
from tests.conftest import ROOT
from tests.stack.conftest import VIEWER, viewer_password

SHOTS = ROOT / "test-output" / "ui"
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = ensure_chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(executable), headless=True, args=list(LAUNCH_ARGS)
        )
        try:
            yield chromium
        finally:
            chromium.close()


def shot(page: Any, name: str) -> Path:
    """A full-page screenshot under test-output/ui/."""
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(browser: Any, stack: AirflowStack, username: str, password: str, name: str) -> Any:
    """A new browser context logged in to the Airflow UI through its login form."""
    context = browser.new_context(viewport=VIEWPORT, base_url=stack.base_url)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto("/")
    page.wait_for_selector("input[name=username]")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    shot(page, f"{name}-login")
    page.get_by_role("button", name=re.compile("sign in|log in|login", re.I)).click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))
    page.wait_for_function("document.cookie !== undefined")
    assert any(c["name"] == "_token" for c in context.cookies()), context.cookies()
    return page


@pytest.fixture(scope="session")
def admin_page(browser: Any, stack: AirflowStack) -> Iterator[Any]:
    username, password = stack.login
    page = log_in(browser, stack, username, password, "01-admin")
    yield page
    page.context.close()


@pytest.fixture(scope="session")
def viewer_page(browser: Any, stack: AirflowStack) -> Iterator[Any]:
    page = log_in(browser, stack, VIEWER, viewer_password(stack), "10-viewer")
    yield page
    page.context.close()
