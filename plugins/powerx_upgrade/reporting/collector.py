"""Python's cyclic garbage collector paused while a report's records, document and files are
made: hundreds of thousands of acyclic rows and dicts at fleet scale, which each full
collection would walk again and again (2 of 6 CPU seconds at 100,000 tenants; issue 16)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic collector for the block; on leaving, it runs again if it ran before
    (nested or concurrent pauses leave it as the outermost found it). Reference counting still
    frees everything acyclic at once; the few cycles made meanwhile wait for the next run."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
