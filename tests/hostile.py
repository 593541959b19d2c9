"""Hostile config files of issue 15: each is one reproduction (a file that once took every DAG
down or cost seconds and gigabytes), shared by the regression tests and
benchmarks/hostile_parse.py. Bytes, so non-UTF-8 files are possible."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import strategies as st

GOOD_PLAN = b"""\
plans:
  good-plan:
    plugin: crm-sync
    policy: standard-grey
    target_version: 2.4.0
    window: {schedule: "0 2 * * SAT", duration: 4h, timezone: Europe/Berlin}
"""


def _bomb(levels: int, fan: int, under: str = "x-bomb") -> bytes:
    """`levels` anchors, each a list of `fan` aliases of the one before: fan**levels values
    from a few hundred bytes (10 x 6 levels: 10^6 values from about 570 bytes)."""
    lines = [b"version: 1", b"x-l0: &l0 [" + b", ".join([b"lol"] * fan) + b"]"]
    for level in range(1, levels):
        refs = b", ".join([f"*l{level - 1}".encode()] * fan)
        lines.append(f"x-l{level}: &l{level} [".encode() + refs + b"]")
    lines.append(f"{under}: [".encode() + b", ".join([f"*l{levels - 1}".encode()] * fan) + b"]")
    return b"\n".join(lines) + b"\n"


def _plan_with(window_timezone: str = "UTC", extra: str = "") -> bytes:
    return (
        "plans:\n"
        "  hostile-plan:\n"
        "    plugin: crm-sync\n"
        "    policy: standard-grey\n"
        f"    window: {{schedule: '0 2 * * SAT', duration: 4h, timezone: {window_timezone}}}\n"
        f"{extra}"
    ).encode()


HOSTILE_FILES: dict[str, bytes] = {
    "non_utf8": b"version: 1\nplans:\n  caf\xe9: {plugin: crm-sync, policy: standard-grey}\n",
    "nul": b"version: 1\nplans:\n  p: {plugin: crm\x00sync, policy: standard-grey}\n",
    "recursive_alias": b"version: 1\nx-a: &a [*a]\n",
    "recursive_mapping": b"version: 1\nplans: &p\n  loop: *p\n",
    "deep_flow": b"version: 1\nx-deep: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "deep_block": b"version: 1\nx-deep:\n"
    + b"".join(b"  " * i + b"- \n" for i in range(1, 400))
    + b"  " * 400
    + b"- leaf\n",
    "deep_alias_chain": b"version: 1\nx-a0: &a0 [leaf]\n"
    + b"".join(f"x-a{i}: &a{i} [*a{i - 1}]\n".encode() for i in range(1, 300)),
    "huge_int": b"version: 1\nx-n: " + b"9" * 4400 + b"\n",
    "huge_int_in_plan": _plan_with(
        extra="    tenants: {represent: {by: [tier], per_segment: " + "7" * 4400 + "}}\n"
    ),
    "ratio_overflow": b"policies:\n  overflow:\n    batches: [{ratio: 1.0e+400, bake: 10m}]\n",
    "ratio_1e400_override": _plan_with(
        extra="    overrides: {batches: [{ratio: 1e400, bake: 10m}]}\n"
    ),
    "long_timezone": _plan_with("A" * 5000),
    "timezone_path": _plan_with("../../../../etc/passwd"),
    "long_string": _plan_with(extra="    description: " + "d" * 20_000 + "\n"),
    "lone_surrogate": _plan_with(extra='    description: "\\ud800"\n'),
    "bad_timestamp": b"version: 1\nx-when: 2026-13-45\n",
    "explicit_int_tag": b"version: 1\nx-n: !!int not-a-number\n",
    "alias_bomb": _bomb(6, 10),
    "alias_bomb_in_plan": _bomb(6, 10, under="plans"),
    "merge_key_bomb": b"version: 1\nx-m0: &m0 {a: 1, b: 2}\n"
    + b"".join(
        f"x-m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 10)}], k{i}: {i}}}\n".encode()
        for i in range(1, 8)
    ),
    "too_large": b"version: 1\nx-filler: |\n"
    + b"".join(b"  " + b"y" * 80 + b"\n" for _ in range(4000)),
    "python_tag": b"version: 1\nx: !!python/object/apply:os.system [echo hi]\n",
}
"""name -> file content; each must disable its own file only."""

UNREADABLE = ("dangling_symlink", "directory")
"""Files that cannot be read at all, made by `write_unreadable`."""


def write_unreadable(plans: Path) -> list[str]:
    """Under `plans/`: a dangling symlink and a directory, both named like plan files (the
    tests run as root, so a mode-000 file would still be readable)."""
    (plans / "dangling_symlink.yaml").symlink_to(plans / "no-such-target.yaml")
    (plans / "directory.yaml").mkdir()
    return ["dangling_symlink.yaml", "directory.yaml"]


# ---------------------------------------------------------------------------------------------
# Generated malformed plans (hypothesis): structured mutations of a full plan, text mutations
# with YAML's special characters, and the hostile shapes above at random sizes.
# ---------------------------------------------------------------------------------------------


POLICIES = """\
version: 1
policies:
  std:
    batches: [{name: canary, ratio: 0.1, bake: 10m}, {ratio: 1.0, bake: 10m}]
    gate: {checks: [{metric: error_rate, op: "<=", limit: 0.05}]}
"""
"""The one policy the generated plans use (small, so a DAG loader case stays cheap)."""

FULL_PLAN = {
    "version": 1,
    "x-anchor": {"note": "free"},
    "plans": {
        "fuzz": {
            "description": "generated",
            "plugin": "crm-sync",
            "policy": "std",
            "target_version": "2.4.0",
            "artifact": {"uri": "s3://builds/x.zip", "sha256": "a" * 64},
            "overrides": {
                "batches": [{"ratio": "50%", "bake": "1m"}, {"ratio": 1.0, "bake": "2m"}]
            },
            "tenants": {
                "select": {"tier": ["gold", "silver"]},
                "exclude": ["t-9", {"region": "eu"}],
                "canary": ["t-1"],
                "order": ["tier", {"label": "region", "values": ["eu", "us"]}],
                "represent": {"by": ["tier"], "per_segment": 1, "through_batch": 1},
            },
            "window": {
                "schedule": "0 2 * * SAT",
                "duration": "4h",
                "timezone": "Europe/Berlin",
                "freeze": ["2026-12-24/2026-12-26"],
            },
            "owners": ["ops@example.com"],
            "notify": {"channels": ["slack:#releases"], "on": ["run_end"]},
        }
    },
}

_SNIPPETS = [
    "&a ",
    "*a",
    "*b",
    "&b [*a, *a]",
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "\n  ",
    "\n",
    "\t",
    "'",
    '"',
    "#",
    "? ",
    "|",
    ">",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "!!int ",
    "!!float ",
    "!!str ",
    "!!binary ",
    "!!set ",
    "!!python/name:os.system ",
    "<<: ",
    '"\\ud800"',
    '"\\x00"',
    "\x00",
    "\x85",
    "\ufeff",
    "\ud800",
    "9" * 60,
    "1.0e+400",
    "-1.0e+400",
    ".nan",
    "1e400",
    "0x" + "f" * 30,
    "2026-13-45",
    "1:2:3:4:5",
    "A" * 300,
    "~",
    "null",
    "yes",
    "on",
    "\u2028",
    "é",
    "😀",
]

_scalars = st.one_of(
    st.integers(),
    st.integers(min_value=10**40, max_value=10**90),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30),
    st.sampled_from(
        [
            "1e400",
            "-1",
            "0",
            "10%",
            "+20%",
            "-300%",
            "1e400%",
            "99999999999999999999%",
            "0s",
            "99999999999d",
            "1h30m",
            "0 2 * * SAT",
            "61 25 * * *",
            "A" * 5000,
            "../../etc/passwd",
            "UTC",
            "Europe/Berlin",
            "Mars/Olympus",
            "",
            " ",
            "2026-12-24/2026-12-23",
            "2026-02-30/2026-03-01",
            "x" * 201,
            "s3://x",
            "a" * 64,
            "required",
            "pause",
        ]
    ),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["ratio", "bake", "name", "approval", "extra", "by", "label", "x"])
            | st.text(max_size=8),
            inner,
            max_size=4,
        )
    ),
    max_leaves=8,
)


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


_PLAN_PATHS = _paths(FULL_PLAN)


@st.composite
def structured_plans(draw: st.DrawFn) -> str:
    """The full plan with 1-3 values replaced, deleted, or joined by an unknown key."""
    doc = copy.deepcopy(FULL_PLAN)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_PLAN_PATHS))
        parent: object = doc
        try:
            for part in path[:-1]:
                parent = parent[part]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            continue
        action = draw(st.sampled_from(["replace", "replace", "delete", "unknown"]))
        if not path:
            doc = draw(_values)
            continue
        key = path[-1]
        try:
            if action == "delete" and isinstance(parent, dict):
                parent.pop(key, None)
            elif action == "unknown" and isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=8))] = draw(_values)
            else:
                parent[key] = draw(_values)  # type: ignore[index]
        except (IndexError, TypeError):
            continue
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=1000)


@st.composite
def mutated_texts(draw: st.DrawFn) -> str:
    """A plan's or a hostile file's text with 1-6 snippets inserted, slices cut or lines doubled."""
    bases = [yaml.safe_dump(FULL_PLAN, sort_keys=False)]
    bases += [
        data.decode("utf-8", "replace")
        for name, data in HOSTILE_FILES.items()
        if name != "too_large"
    ]
    base = draw(st.sampled_from(bases))
    text = base
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "insert", "insert", "cut", "double"]))
        if action == "insert":
            text = text[:at] + draw(st.sampled_from(_SNIPPETS) | st.text(max_size=5)) + text[at:]
        elif action == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
        else:
            line_start = text.rfind("\n", 0, at) + 1
            line_end = text.find("\n", at)
            line_end = len(text) if line_end < 0 else line_end + 1
            text = text[:line_end] + text[line_start:line_end] + text[line_end:]
    return text


@st.composite
def hostile_shapes(draw: st.DrawFn) -> str:
    """Alias bombs, alias chains, deep nesting and long values at random sizes and places."""
    kind = draw(st.sampled_from(["bomb", "chain", "flow", "block", "long", "number"]))
    under = draw(st.sampled_from(["x-a", "plans", "policies", "x-a"]))
    if kind == "bomb":
        return _bomb(draw(st.integers(1, 8)), draw(st.integers(1, 12)), under=under).decode()
    if kind == "chain":
        count = draw(st.integers(1, 400))
        return (
            "version: 1\nx-a0: &a0 [leaf]\n"
            + "".join(f"x-a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, count))
            + f"{under}: *a{count - 1}\n"
        )
    if kind == "flow":
        depth = draw(st.integers(1, 3000))
        return f"{under}: " + "[" * depth + "]" * depth + "\n"
    if kind == "block":
        depth = draw(st.integers(1, 600))
        return (
            f"{under}:\n"
            + "".join("  " * i + "- \n" for i in range(1, depth))
            + "  " * depth
            + "- x\n"
        )
    if kind == "long":
        return f"{under}: " + draw(st.sampled_from("aZ9 ")) * draw(st.integers(1, 30_000)) + "\n"
    return (
        f"{under}: "
        + "9" * draw(st.integers(1, 6000))
        + draw(st.sampled_from(["", ".5", "e+400"]))
        + "\n"
    )


malformed_plans = st.one_of(structured_plans(), mutated_texts(), hostile_shapes())
"""A malformed (or sometimes valid) plan file's text."""


@st.composite
def malformed_files(draw: st.DrawFn) -> bytes:
    """A plan file's bytes: a malformed text, sometimes in another encoding or with stray bytes."""
    text = draw(malformed_plans)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1", "utf-16", "bytes"]))
    if encoding == "bytes":
        data = text.encode("utf-8", "surrogatepass")
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return text.encode(encoding, "surrogatepass" if encoding == "utf-8" else "replace")
