"""Pydantic validation errors as located, readable problems: the path into the config, the
field's allowed names with a did-you-mean, and the value at fault."""

from __future__ import annotations

import difflib
import functools
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from powerx_upgrade.domain import models
from powerx_upgrade.domain.problems import Path

_MODEL_NAMES = {
    name
    for name, value in vars(models).items()
    if isinstance(value, type) and issubclass(value, BaseModel)
}
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "constrained-str", "none"}


def describe(model: type[BaseModel], exc: ValidationError) -> list[tuple[Path, str]]:
    """pydantic errors -> (path, message) with what is allowed; union noise folded together."""
    grouped: dict[Path, list[tuple[int, str]]] = {}
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        clean: list[str | int] = []
        depth_after_tag = 0
        tagged = False
        for element in loc:
            if isinstance(element, str) and _is_type_tag(element):
                tagged = True
                continue
            clean.append(element)
            if tagged:
                depth_after_tag += 1
        message = _message(model, error, tuple(clean))
        grouped.setdefault(tuple(clean), []).append((depth_after_tag, message))
    # A union reports one error per member; keep those of the member that got furthest.
    # Every proper prefix of an error's path: linear in the errors (times their depth).
    explained = {other[:end] for other in grouped for end in range(len(other))}
    described: list[tuple[Path, str]] = []
    for path, items in grouped.items():
        if path in explained:
            continue  # a deeper error under the same path explains it better
        deepest = max(depth for depth, _ in items)
        messages = list(dict.fromkeys(msg for depth, msg in items if depth == deepest))
        described.append((path, _join(messages)))
    return described


def _is_type_tag(element: str) -> bool:
    return (
        element in _TYPE_TAGS
        or element in _MODEL_NAMES
        or "[" in element
        or element.startswith("function-")
    )


def _join(messages: Sequence[str]) -> str:
    got = re.compile(r" \(got .*\)$")
    suffixes = {match.group(0) for m in messages if (match := got.search(m))}
    if len(messages) > 1 and len(suffixes) == 1:
        return _join([got.sub("", m) for m in messages]) + suffixes.pop()
    prefix = "Input should be "
    if len(messages) > 1 and all(m.startswith(prefix) for m in messages):
        return prefix + " or ".join(m[len(prefix) :] for m in messages)
    return "; or ".join(messages)


def _message(model: type[BaseModel], error: Any, path: Path) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        # the field's own name: a key that looks like a union tag ("none") is not in `path`
        name = str(error["loc"][-1]) if error.get("loc") else "?"
        allowed = _allowed_fields(model, path[:-1] if path and path[-1] == name else path)
        listing = f" (allowed: {', '.join(allowed)})" if allowed else ""
        hint = _close_match(name, tuple(allowed)) if allowed else []
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        return f"unknown field '{name}'{listing}{suggestion}"
    if kind == "missing":
        return "required field is missing"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        return message[len("Value error, ") :]
    if kind in ("literal_error", "enum"):
        return f"{error['input']!r} is not allowed: {message[0].lower()}{message[1:]}"
    if "input" in error and not isinstance(error["input"], dict | list):
        return f"{message} (got {error['input']!r})"
    return message


@functools.lru_cache(maxsize=4096)
def _close_match(name: str, allowed: tuple[str, ...]) -> list[str]:
    """The did-you-mean of an unknown field (cached: the same typo costs once)."""
    return difflib.get_close_matches(name, allowed, n=1)


def _allowed_fields(model: type[BaseModel], path: Path) -> list[str]:
    """The field names of the model found at `path` below `model` (for 'allowed: ...')."""
    current: Any = model
    for element in path:
        current = _descend(current, element)
        if current is None:
            return []
    target = _find_model(current)
    return list(target.model_fields) if target else []


def _descend(annotation: Any, element: str | int) -> Any:
    target = _find_model(annotation)
    if target is not None and isinstance(element, str) and element in target.model_fields:
        return target.model_fields[element].annotation
    for arg in _args(annotation):
        origin = typing.get_origin(arg)
        if origin is list and isinstance(element, int):
            return typing.get_args(arg)[0]
        if origin is dict:
            return typing.get_args(arg)[1]
    return None


def _find_model(annotation: Any) -> type[BaseModel] | None:
    for arg in _args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _args(annotation: Any) -> list[Any]:
    """An annotation and, for unions / Annotated, its members."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _args(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        found: list[Any] = []
        for arg in typing.get_args(annotation):
            found += _args(arg)
        return found
    return [annotation]
