"""What the local stack raises."""

from __future__ import annotations


class AirflowStackError(RuntimeError):
    """The stack could not start or a component died; the message quotes the relevant logs."""


class AirflowStackTimeout(AirflowStackError):
    """Something awaited on the stack did not happen in time."""
