"""What every `powerx plugin` command shares: the connection from flags and environment, and
expected failures turned into a message and an exit code."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.markup import escape

from powerx_upgrade.airflow_client import AirflowClient, ApiError, ConnectionSettings
from powerx_upgrade.cli.plugin.common import (
    EXIT_NOT_PROMOTED,
    EXIT_REFUSED,
    EXIT_USAGE,
    UsageError,
    err_console,
)
from powerx_upgrade.cli.plugin.inputs import exit_code_for_error


def connect(args: argparse.Namespace) -> AirflowClient:
    settings = ConnectionSettings.from_env(
        url=args.airflow_url,
        token=args.token,
        username=args.username,
        password=args.password,
        timeout=args.http_timeout,
    )
    return AirflowClient.from_settings(settings)


def guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Expected failures become a clear message and an exit code, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except UsageError as exc:
            err_console.print(f"[red]usage error:[/] {escape(str(exc))}")
            return EXIT_USAGE
        except ApiError as exc:
            kind = "refused" if exit_code_for_error(exc) == EXIT_REFUSED else "error"
            code = f" [{exc.code}]" if exc.code else ""
            err_console.print(f"[red]{kind}{escape(code)}:[/] {escape(str(exc))}")
            return exit_code_for_error(exc)
        except TimeoutError as exc:
            err_console.print(f"[red]timeout:[/] {escape(str(exc))}")
            return EXIT_NOT_PROMOTED
        except KeyboardInterrupt:
            err_console.print("interrupted (the run goes on in Airflow)")
            return 130

    run.__name__ = command.__name__
    run.__doc__ = command.__doc__
    return run
