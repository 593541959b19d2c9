"""Issue 15: bounded parsing. Each limit refuses just past its value with file:line and a clear
message, and accepts its value; aliases are walked once; the one-walk builder for plain files
gives what PyYAML's constructor gives."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings

from powerx_upgrade.domain import yaml_source
from powerx_upgrade.domain.config import parse_config
from powerx_upgrade.domain.yaml_source import (
    MAX_DEPTH,
    MAX_FILE_CHARS,
    MAX_NODES,
    MAX_NUMBER_CHARS,
    MAX_STRING_CHARS,
    parse_yaml,
)
from tests.hostile import structured_plans

pytestmark = pytest.mark.unit


def problems(text: str) -> list[str]:
    return [str(p) for p in parse_yaml(text, "plans/f.yaml").problems]


def flow(depth: int) -> str:
    return "x: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"  # the mapping is level 1


def test_depth_limit_at_its_value():
    assert problems(flow(MAX_DEPTH)) == []
    assert problems(flow(MAX_DEPTH + 1)) == [
        "plans/f.yaml:1: error: nesting deeper than 50 levels (the limit); nothing in this file is used"
    ]


def test_block_nesting_names_the_line_where_it_passes_the_limit():
    text = "x:\n" + "".join("  " * i + "-\n" for i in range(1, 80))
    (found,) = problems(text)
    assert found.startswith("plans/f.yaml:51: error: nesting deeper than 50 levels")


def test_string_and_number_lengths():
    assert problems(f"x: {'a' * MAX_STRING_CHARS}\n") == []
    (long_string,) = problems(f"x: {'a' * (MAX_STRING_CHARS + 1)}\n")
    assert (
        "plans/f.yaml:1: error: a value of 10,001 characters (the limit is 10,000)" in long_string
    )
    assert problems(f"x: {'9' * MAX_NUMBER_CHARS}\n") == []
    (long_number,) = problems(f"\nx: {'9' * 4301}\n")
    assert (
        "plans/f.yaml:2: error: number '99999999999999999999'... (4,301 characters) is too long"
        in long_number
    )


def test_file_size_limit():
    body = "x: |\n" + "".join("  " + "y" * 70 + "\n" for _ in range(MAX_FILE_CHARS // 73 + 10))
    (found,) = problems(body)
    assert "the limit is 262,144" in found


def test_the_570_byte_bomb_is_refused_also_under_x_keys_and_in_plans():
    levels = ["x-l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n in range(1, 6):
        levels.append(f"x-l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]")
    for under in ("x-bomb", "plans"):
        text = "\n".join([*levels, f"{under}: [" + ", ".join(["*l5"] * 10) + "]"]) + "\n"
        assert len(text) < 600
        (found,) = problems(text)
        assert "the aliases expand to over 100,000 values (the limit)" in found


def test_an_alias_budget_just_under_the_limit_is_accepted():
    per = 300  # 1 + 300 + 300 * (1 + 300) < 100,000
    text = "x-a: &a [" + ", ".join(["v"] * per) + "]\nx-b: [" + ", ".join(["*a"] * per) + "]\n"
    assert problems(text) == []
    assert 1 + per + per * (1 + per) < MAX_NODES


def test_recursive_aliases():
    for text in ("x-a: &a [*a]\n", "plans: &p\n  loop: *p\n", "a: &a {b: [1, {c: *a}]}\n"):
        (found,) = problems(text)
        assert "an alias refers to a node that contains it (recursive)" in found


def test_aliased_nodes_are_walked_once_for_lines():
    """`_record_lines` once walked every use of an alias again (24 s, 4.6 GB for a bomb)."""
    text = (
        "x-a: &a [" + ", ".join(f"v{i}" for i in range(100)) + "]\n"
        "x-b: [" + ", ".join(["*a"] * 900) + "]\n"
    )
    source = parse_yaml(text, "f.yaml")
    assert source.problems == []
    assert len(source.data["x-b"]) == 900 and source.data["x-b"][0] is source.data["x-b"][1]
    # the paths of x-a's items once, x-b's 900 items, never 900 x 100 item paths
    assert len(source.lines) < 1100
    assert source.line_of(("x-b", 5, 7)) == 1  # inside an alias: where the anchor was written


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x: 1.0e+400\n", "number '1.0e+400' is out of range (it overflows to infinity)"),
        ("x: 2026-13-45\n", "cannot read the value '2026-13-45': month must be in 1..12"),
        ("x: !!int abc\n", "cannot read the value 'abc'"),
        ("x: \x00\n", "invalid YAML: character U+0000 is not allowed"),
        ("x: a\ny: \ud800\n", "plans/f.yaml:2: error: the text holds a lone surrogate"),
    ],
)
def test_values_that_cannot_be_read_are_located_problems(text, message):
    (found,) = problems(text)
    assert message in found and found.startswith("plans/f.yaml:")


def test_a_long_time_zone_is_a_field_error_not_an_os_error():
    text = (
        "policies:\n  p:\n    batches: [{ratio: 1.0, bake: 1m}]\n"
        "    gate: {checks: [{metric: error_rate, op: '<=', limit: 0.05}]}\n"
        f"plans:\n  q:\n    plugin: a\n    policy: p\n"
        f"    window: {{schedule: '0 2 * * SAT', duration: 1h, timezone: {'A' * 5000}}}\n"
    )
    result = parse_config([("f.yaml", text)])
    (error,) = result.errors
    assert error.path == "plans.q.window.timezone" and error.line == 9
    assert "unknown time zone of 5,000 characters" in error.message


def _pyyaml(text: str):
    loader = yaml_source._Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


@settings(max_examples=200)
@given(text=structured_plans())
def test_the_one_walk_builder_gives_what_pyyaml_gives(text):
    if not yaml_source._plain(text):
        return
    try:
        expected = _pyyaml(text)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError):
        return  # refused either way; the builder's refusals are tested above
    source = parse_yaml(text, "f.yaml")
    if not source.problems:
        assert source.data == expected or repr(source.data) == repr(expected)  # nan != nan
