"""YAML text -> data plus the line of every field path, so problems can name `file:line path`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from powerx_upgrade.domain.problems import Path, Problem, format_path


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, so `on:` or a tier `no` stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


@dataclass
class YamlSource:
    """A parsed YAML document: its data, where each path was written, and syntax problems."""

    file: str
    data: Any = None
    lines: dict[Path, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: Path) -> int | None:
        """The line of `path`, or of its closest written ancestor (e.g. for a missing field)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def parse_yaml(text: str, file: str) -> YamlSource:
    """Parse one YAML document; a syntax error becomes a Problem with its line, not an exception."""
    source = YamlSource(file=file)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            source.data = {}
            return source
        _record_lines(node, (), source, root=True)
        source.data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        source.problems.append(
            Problem(
                file,
                line,
                "error",
                "",
                f"invalid YAML: {what or exc}; nothing in this file is used",
            )
        )
        source.data = None
    except yaml.YAMLError as exc:
        source.problems.append(
            Problem(file, None, "error", "", f"invalid YAML: {exc}; nothing in this file is used")
        )
        source.data = None
    finally:
        loader.dispose()
    return source


def _record_lines(node: yaml.Node, path: Path, source: YamlSource, root: bool = False) -> None:
    if root:
        source.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if (
                not isinstance(key_node, yaml.ScalarNode)
                or key_node.tag == "tag:yaml.org,2002:merge"
            ):
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in first_seen:
                full = (*path, key)
                owner = str(full[1]) if len(full) >= 2 else None
                source.problems.append(
                    Problem(
                        source.file,
                        line,
                        "error",
                        format_path(full),
                        f"duplicate key '{key}' (first at line {first_seen[key]}): "
                        "a key may appear only once in a mapping",
                        plan_id=owner if full[0] == "plans" else None,
                        policy_id=owner if full[0] == "policies" else None,
                    )
                )
            else:
                first_seen[key] = line
            source.lines[(*path, key)] = line
            _record_lines(value_node, (*path, key), source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            source.lines[(*path, index)] = item.start_mark.line + 1
            _record_lines(item, (*path, index), source)
