"""Hostile config files of issue 15: each is one reproduction (a file that once took every DAG
down or cost seconds and gigabytes), shared by the regression tests and
benchmarks/hostile_parse.py. Bytes, so non-UTF-8 files are possible."""

from __future__ import annotations

from pathlib import Path

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
