"""Seeded, order-independent randomness: every draw is a hash of the seed and what it is about."""

from __future__ import annotations

import hashlib

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_BUCKET_STEP = 0xD1B54A32D192ED03
_TO_UNIT = 1.0 / (1 << 53)


def key_hash(*parts: object) -> int:
    """A stable 64-bit hash of the parts' text (the same on every machine and Python run)."""
    text = "\x1f".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def unit(*parts: object) -> float:
    """A number in [0, 1) that depends only on the parts: a seeded draw without a global RNG."""
    return (key_hash(*parts) >> 11) * _TO_UNIT


def mix(value: int) -> int:
    """splitmix64 finaliser: cheap enough for the metric hot path, well spread for noise."""
    value = (value + _GOLDEN) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def bucket_hash(base: int, bucket: int) -> int:
    """The hash of one time bucket of one series (base = key_hash of seed and series)."""
    return mix(base ^ ((bucket * _BUCKET_STEP) & _MASK))


def to_unit(value: int) -> float:
    """Map a 64-bit hash to [0, 1)."""
    return (value >> 11) * _TO_UNIT


def symmetric(value: int) -> float:
    """Map a 64-bit hash to [-1, 1)."""
    return to_unit(value) * 2.0 - 1.0


def bucket_noise(base: int, bucket: int) -> tuple[float, float, float]:
    """Three symmetric draws in [-1, 1) for one bucket of one series (the metric hot path).

    The same as symmetric() of bucket_hash(), mix() of that, and mix() again, unrolled because
    a 1,000-tenant hour-long query calls this 360,000 times.
    """
    m = _MASK
    x = ((base ^ ((bucket * _BUCKET_STEP) & m)) + _GOLDEN) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    first = x ^ (x >> 31)
    x = (first + _GOLDEN) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    second = x ^ (x >> 31)
    x = (second + _GOLDEN) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    third = x ^ (x >> 31)
    scale = 2.0 * _TO_UNIT
    return (
        (first >> 11) * scale - 1.0,
        (second >> 11) * scale - 1.0,
        (third >> 11) * scale - 1.0,
    )
