"""`powerx plan backtest`: replay recorded gate series through the plan's (edited) policy."""

from __future__ import annotations

import argparse


def backtest_parser(verbs: argparse._SubParsersAction) -> None:
    pass
