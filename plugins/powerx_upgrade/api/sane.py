"""What every request body must be before a route looks at it: JSON the API can write to a file
and read back, and answer in JSON again. A body nested deeper than `MAX_DEPTH`, a string that is
not UTF-8 (a lone surrogate such as `"\\ud800"`), or a number that is not finite (`NaN`,
`Infinity`, which Python's JSON parser accepts) is refused with a 422 naming the path, before
anything is written."""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 32
"""Nesting of objects and arrays in a body (a plan needs about 8)."""
MAX_STRING = 64 * 1024
"""Characters in one string or key (the body limit bounds it anyway; a guard for callers
that check values of other origin)."""


def problems_in(value: Any, path: str = "body") -> list[dict[str, str]]:
    """The first problems (at most 20) of a decoded JSON body, each `{"path", "message"}`."""
    found: list[dict[str, str]] = []
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack and len(found) < 20:
        item, where, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                found.append({"path": where, "message": f"nested deeper than {MAX_DEPTH} levels"})
                continue
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    problem = _text_problem(key)
                    if problem:
                        found.append({"path": where, "message": f"a key is {problem}"})
                        continue
                stack.append((child, f"{where}.{_shown(key)}", depth + 1))
        elif isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                found.append({"path": where, "message": f"the string is {problem}"})
        elif isinstance(item, float) and not math.isfinite(item):
            found.append({"path": where, "message": f"{item} is not a finite number"})
    return found


def _text_problem(text: str) -> str | None:
    if len(text) > MAX_STRING:
        return f"longer than {MAX_STRING} characters ({len(text)})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"not valid Unicode: {text[exc.start : exc.end].encode('unicode_escape').decode()} "
            f"at character {exc.start} (a lone surrogate cannot be stored as UTF-8)"
        )
    return None


def _shown(key: Any) -> str:
    text = str(key)
    if len(text) > 40 or _text_problem(text):
        return text[:40].encode("utf-8", "backslashreplace").decode("utf-8") + "..."
    return text
