"""YAML text -> data plus the line of every field path, so problems can name `file:line path`.

Parsing is bounded (docs/plans.md, "Limits"): a file over `MAX_FILE_CHARS`, nesting deeper than
`MAX_DEPTH`, a document whose aliases expand to more than `MAX_NODES` values (or refer to
themselves), a string over `MAX_STRING_CHARS` or a lone surrogate, a number over
`MAX_NUMBER_CHARS` characters or one that overflows to infinity is refused as a located problem
before anything walks the data, so a hostile file costs fixed time and memory.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from powerx_upgrade.domain.problems import Path, Problem, format_path

MAX_FILE_CHARS = 256 * 1024
"""A config file's size limit (characters of text; bytes on disk, `config.MAX_FILE_BYTES`)."""
MAX_DEPTH = 50
"""Nesting levels of mappings and sequences, aliases expanded (a plan needs about 8)."""
MAX_NODES = 100_000
"""Values in a document with every alias expanded where it is used (the original counts too)."""
MAX_STRING_CHARS = 10_000
"""Characters of one scalar (a key or a value)."""
MAX_NUMBER_CHARS = 100
"""Characters of one number (Python refuses integers over 4,300 digits; we stop far earlier)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


class LimitError(yaml.MarkedYAMLError):
    """A document beyond one of the limits; carries the mark of the node at fault."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _Constructor(yaml.constructor.SafeConstructor):
    """SafeConstructor whose value errors (`!!int abc`, `2026-13-45`) and overflowing numbers
    are located problems, not exceptions."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            raise LimitError(
                f"cannot read the value {_clip(str(node.value))}: {exc}", node.start_mark
            ) from None

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value = float(super().construct_yaml_float(node))
        if math.isinf(value) and "inf" not in node.value.lower():
            raise LimitError(
                f"number {_clip(node.value)} is out of range (it overflows to infinity)",
                node.start_mark,
            )
        return value


_Constructor.add_constructor(_FLOAT_TAG, _Constructor.construct_yaml_float)  # type: ignore[type-var]


class _Loader(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.composer.Composer,
    _Constructor,
    yaml.resolver.Resolver,
):
    """The pure-Python loader (when PyYAML has no libyaml): the nesting depth is checked while
    scanning and composing, so deep input never recurses far."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _Constructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._depth = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        """`[`/`{` nesting, checked before the scanner reads ahead (a line of 5,000 `[` costs
        seconds of look-ahead before the composer sees the depth)."""
        if self.flow_level >= MAX_DEPTH:
            raise LimitError(_too_deep(), self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise LimitError(_too_deep(), mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))
"""PyYAML's wheels come with libyaml; a build without it falls back to the Python loader."""


def _make_loader(text: str) -> Any:
    """libyaml's parser (about 7 times faster; it refuses nesting over 1,000 levels itself, so
    its composing in C recurses no deeper; MAX_DEPTH is checked on the nodes), else the
    pure-Python loader; both with the same constructor and resolver."""
    if not _LIBYAML:  # pragma: no cover
        return _Loader(text)
    return _CLoader(text)


if _LIBYAML:
    from yaml._yaml import CParser as _CParser

    class _CLoader(_CParser, _Constructor, yaml.resolver.Resolver):
        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            _Constructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._plain_tags: dict[str, str] = {}

        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            """A plain scalar's tag depends on its text only (there are no path resolvers):
            remembered per file, since keys like `ratio` or `bake` repeat in every entry."""
            if kind is not yaml.ScalarNode or not implicit[0]:
                return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
            tag = self._plain_tags.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
                self._plain_tags[value] = tag
            return tag


def _too_deep() -> str:
    return f"nesting deeper than {MAX_DEPTH} levels (the limit)"


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
if _LIBYAML:
    _CLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


def _clip(text: str, keep: int = 20) -> str:
    return repr(text) if len(text) <= keep else f"{text[:keep]!r}... ({len(text):,} characters)"


def _check_scalar(node: yaml.Node) -> None:
    value = node.value
    size = len(value)
    if size <= MAX_NUMBER_CHARS and _LIBYAML:
        return  # short, and libyaml refuses surrogate escapes itself (the text is checked)
    if size > MAX_STRING_CHARS:
        raise LimitError(
            f"a value of {len(value):,} characters (the limit is {MAX_STRING_CHARS:,})",
            node.start_mark,
        )
    if node.tag in (_INT_TAG, _FLOAT_TAG) and len(value) > MAX_NUMBER_CHARS:
        raise LimitError(
            f"number {_clip(value)} is too long (the limit is {MAX_NUMBER_CHARS} characters)",
            node.start_mark,
        )
    surrogate = _SURROGATE.search(value)
    if surrogate:
        raise LimitError(
            f"the value holds a lone surrogate (\\u{ord(surrogate.group()):04x}), which is not "
            "text: write the character itself",
            node.start_mark,
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
    """Parse one YAML document; a syntax error or a document beyond a limit becomes a Problem
    with its line, not an exception."""
    source = YamlSource(file=file)
    if len(text) > MAX_FILE_CHARS:
        source.problems.append(
            _unusable(
                file,
                None,
                f"the file has {len(text):,} characters; the limit is {MAX_FILE_CHARS:,}",
            )
        )
        return source
    surrogate = _SURROGATE.search(text)
    if surrogate:
        at = text.count("\n", 0, surrogate.start()) + 1
        source.problems.append(_unusable(file, at, "the text holds a lone surrogate"))
        return source
    loader = None
    try:
        loader = _make_loader(text)
        node = loader.get_single_node()
        if node is None:
            source.data = {}
            return source
        if _plain(text):
            source.data = _build(node, source, loader)
        else:
            _check_expansion(node)
            _record_lines(node, source)
            source.data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = " ".join(part for part in (exc.context, exc.problem) if part) or str(exc)
        if "maximum nesting depth" in what:  # libyaml's own limit, met while reading ahead
            what = _too_deep()
        elif not isinstance(exc, LimitError):
            what = f"invalid YAML: {what}"
        if "invalid Unicode character escape" in what:
            what += " (a lone surrogate like \\ud800 or a code point over U+10FFFF is not text)"
        source.problems.append(_unusable(file, line, what))
        source.data = None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        source.problems.append(
            _unusable(file, line, f"invalid YAML: character U+{code:04X} is not allowed")
        )
        source.data = None
    except yaml.YAMLError as exc:
        source.problems.append(_unusable(file, None, f"invalid YAML: {exc}"))
        source.data = None
    finally:
        if loader is not None:
            loader.dispose()
    return source


def _unusable(file: str, line: int | None, what: str) -> Problem:
    return Problem(file, line, "error", "", f"{what}; nothing in this file is used")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _plain(text: str) -> bool:
    """No alias (`*name`), merge key (`<<`) or explicit tag (`!`) anywhere in the text: the
    nodes are a tree of plain values, which `_build` turns into data in one walk."""
    return "*" not in text and "<<" not in text and "!" not in text


_STR_TAG = "tag:yaml.org,2002:str"


def _build(root: yaml.Node, source: YamlSource, loader: Any) -> Any:
    """Data, the line of every path, duplicate keys and the limits (depth, values, scalars) in
    one top-down walk of a tree without aliases, merge keys or tags; what PyYAML's
    constructor would give, at a fraction of its cost."""
    source.lines[()] = root.start_mark.line + 1
    count = 0
    result = _scalar(root, loader) if isinstance(root, yaml.ScalarNode) else _empty(root)
    stack: list[tuple[yaml.Node, Any, Path]] = []
    if not isinstance(root, yaml.ScalarNode):
        stack.append((root, result, ()))
    while stack:
        node, container, path = stack.pop()
        if len(path) >= MAX_DEPTH:
            raise LimitError(_too_deep(), node.start_mark)
        count += len(node.value)
        if count > MAX_NODES:
            raise LimitError(
                f"the document has over {MAX_NODES:,} values (the limit)", node.start_mark
            )
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise LimitError("a mapping key must be a plain value", key_node.start_mark)
                text = key_node.value
                plain = _LIBYAML and key_node.tag == _STR_TAG and len(text) <= MAX_NUMBER_CHARS
                key = text if plain else _scalar(key_node, loader)
                line = key_node.start_mark.line + 1
                if key_node.value in first_seen:
                    full = (*path, key_node.value)
                    source.problems.append(_duplicate(source.file, full, line, first_seen))
                else:
                    first_seen[key_node.value] = line
                child_path = (*path, key_node.value)
                source.lines[child_path] = line
                container[key] = _child(value_node, child_path, stack, loader)
        else:
            for index, item in enumerate(node.value):
                child_path = (*path, index)
                source.lines[child_path] = item.start_mark.line + 1
                container.append(_child(item, child_path, stack, loader))
    return result


def _child(
    node: yaml.Node, path: Path, stack: list[tuple[yaml.Node, Any, Path]], loader: Any
) -> Any:
    if node.__class__ is yaml.ScalarNode:
        text = node.value
        if _LIBYAML and node.tag == _STR_TAG and len(text) <= MAX_NUMBER_CHARS:
            return text  # the common case, without a call (short: no limit to check)
        return _scalar(node, loader)
    container: Any = {} if node.__class__ is yaml.MappingNode else []
    stack.append((node, container, path))
    return container


def _empty(node: yaml.Node) -> Any:
    return {} if isinstance(node, yaml.MappingNode) else []


def _scalar(node: yaml.Node, loader: Any) -> Any:
    _check_scalar(node)
    if node.tag == _STR_TAG:
        return node.value
    constructor = loader.yaml_constructors.get(node.tag)
    if constructor is None:
        return loader.construct_object(node)  # PyYAML's own error for an unknown tag
    try:
        return constructor(loader, node)
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise LimitError(
            f"cannot read the value {_clip(str(node.value))}: {exc}", node.start_mark
        ) from None


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph that refers to itself, expands beyond MAX_NODES values or nests
    deeper than MAX_DEPTH once aliases are expanded, or holds a scalar beyond its limits;
    linear in the distinct nodes, without recursion."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, list[yaml.Node] | None]] = [(root, None)]
    while stack:
        node, children = stack.pop()
        key = id(node)
        if children is not None:  # all children done
            size[key] = 1 + sum(size[id(child)] for child in children)
            depth[key] = 1 + max((depth[id(child)] for child in children), default=0)
            open_nodes.discard(key)
            if size[key] > MAX_NODES:
                raise LimitError(
                    f"the aliases expand to over {MAX_NODES:,} values (the limit)", node.start_mark
                )
            continue
        # open_nodes: exactly the ancestors of `node` (depth-first order)
        if key in size:  # met again through an alias: its depth counts from here
            if len(open_nodes) + depth[key] > MAX_DEPTH:
                raise LimitError(_too_deep(), node.start_mark)
            continue
        if len(open_nodes) >= MAX_DEPTH:
            raise LimitError(_too_deep(), node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            _check_scalar(node)
            size[key] = depth[key] = 1
            continue
        if key in open_nodes:
            raise LimitError(
                "an alias refers to a node that contains it (recursive)", node.start_mark
            )
        open_nodes.add(key)
        children = _children(node)
        stack.append((node, children))
        stack.extend((child, None) for child in children)


def _record_lines(root: yaml.Node, source: YamlSource) -> None:
    """The line of every path, and duplicate keys; each distinct node is walked once (a node
    used again through an alias keeps the line of the key that uses it)."""
    source.lines[()] = root.start_mark.line + 1
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, Path]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[str, int] = {}
            children: list[tuple[yaml.Node, Path]] = []
            for key_node, value_node in node.value:
                if (
                    not isinstance(key_node, yaml.ScalarNode)
                    or key_node.tag == "tag:yaml.org,2002:merge"
                ):
                    continue
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key in first_seen:
                    source.problems.append(_duplicate(source.file, (*path, key), line, first_seen))
                else:
                    first_seen[key] = line
                source.lines[(*path, key)] = line
                children.append((value_node, (*path, key)))
            stack.extend(reversed(children))  # document order: an anchor before its aliases
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                source.lines[(*path, index)] = item.start_mark.line + 1
            stack.extend((item, (*path, i)) for i, item in reversed(list(enumerate(node.value))))


def _duplicate(file: str, full: Path, line: int, first_seen: dict[str, int]) -> Problem:
    key = str(full[-1])
    owner = str(full[1]) if len(full) >= 2 else None
    return Problem(
        file,
        line,
        "error",
        format_path(full),
        f"duplicate key '{key}' (first at line {first_seen[key]}): "
        "a key may appear only once in a mapping",
        plan_id=owner if full[0] == "plans" else None,
        policy_id=owner if full[0] == "policies" else None,
    )
