"""The wall time and peak memory of each stage of a long computation, recorded as it runs.

``compress`` on a large encoder takes minutes and gigabytes; a user should see where. Inside
``recording()``, each ``stage(name)`` block logs its start and end on this module's logger (the
progress of a long run: ``logging.basicConfig(level=logging.INFO)`` shows it) and records

- ``wall_s``: the block's wall time; ``cpu_s``: the process's CPU time meanwhile (all threads; on a
  shared, loaded machine the wall time grows and the CPU time much less);
- ``peak_rss_bytes``: the highest resident memory of the process seen while the block ran
  (sampled every ``SAMPLE_S`` seconds by a thread that lives only as long as the recording,
  and at the block's start and end: a spike shorter than the period can be missed);
- ``rss_end_bytes``: the resident memory when it ended.

Stages nest (``convert`` holds ``convert.fusion`` and ``convert.quantize``). Outside
``recording()`` a ``stage`` costs nothing and records nothing. Resident memory is read from
``/proc/self/statm`` (Linux); elsewhere from ``resource``'s peak, so each stage then shows the
process peak so far, and says so (``"memory": "process peak so far"``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["recording", "is_recording", "stage", "StageLog", "resident_bytes", "release_memory", "SAMPLE_S"]

log = logging.getLogger(__name__)

SAMPLE_S = 0.02  # 20 ms: a whole-model copy of a few hundred MB takes longer than that to make
_STATM = "/proc/self/statm"


def resident_bytes() -> tuple[int, bool]:
    """``(bytes, exact)``: this process's resident memory now (exact), or its peak so far where
    ``/proc`` is missing (not exact)."""
    try:
        with open(_STATM, "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"), True
    except (OSError, ValueError, IndexError):
        import resource  # POSIX only; reached where /proc is missing

        scale = 1 if os.uname().sysname == "Darwin" else 1024  # macOS reports bytes, Linux kilobytes
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, False


def release_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc's ``malloc_trim``).

    ONNX Runtime's quantizer and the protobuf models it builds free gigabytes on a large model that glibc keeps
    for the process: on a 2.9 GB encoder the resident memory stayed ~6 GB above the model after the int8
    conversion, and the next step started there. Where ``malloc_trim`` is missing (not glibc) only the
    collection runs.
    """
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


@dataclass
class _Open:
    name: str
    started: float
    cpu: float
    peak: int


@dataclass
class StageLog:
    """The stages recorded so far, in the order they ended (a nested stage before its parent)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    exact: bool = True
    _open: list[_Open] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sample(self) -> int:
        rss, exact = resident_bytes()
        with self._lock:
            self.exact = self.exact and exact
            for entry in self._open:
                entry.peak = max(entry.peak, rss)
        return rss

    def peak_rss_bytes(self) -> int:
        return max((r["peak_rss_bytes"] for r in self.records), default=0)

    def summary(self) -> dict[str, Any]:
        """What ``Compressed.details`` keeps: the stages, and the highest memory seen in any."""
        return {
            "stages": [dict(r) for r in self.records],
            "peak_rss_bytes": self.peak_rss_bytes(),
            "memory": "resident (RSS), sampled" if self.exact else "process peak so far",
        }


class _Active(threading.local):
    """The recording of this thread (compresses in an executor's threads record apart)."""

    stack: list[StageLog]

    def __init__(self) -> None:
        self.stack = []


_ACTIVE = _Active()


def is_recording() -> bool:
    """Whether a ``recording()`` is active in this thread."""
    return bool(_ACTIVE.stack)


@contextlib.contextmanager
def recording() -> Iterator[StageLog]:
    """Record every ``stage`` run inside the block (nested recordings record into the outermost)."""
    if _ACTIVE.stack:
        yield _ACTIVE.stack[0]
        return
    stages, stop = StageLog(), threading.Event()

    def sampler() -> None:
        while not stop.wait(SAMPLE_S):
            stages.sample()

    thread = threading.Thread(target=sampler, name="squeezelab-memory", daemon=True)
    _ACTIVE.stack.append(stages)
    thread.start()
    try:
        yield stages
    finally:
        stop.set()
        thread.join()
        _ACTIVE.stack.remove(stages)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """One named stage: timed, its peak memory sampled, its start and end logged (inside ``recording()``)."""
    if not _ACTIVE.stack:
        yield
        return
    stages = _ACTIVE.stack[0]
    parent = stages._open[-1].name if stages._open else ""  # already the full name of the enclosing stage
    full = f"{parent}.{name}" if parent else name
    rss = stages.sample()
    entry = _Open(full, time.perf_counter(), time.process_time(), rss)
    with stages._lock:
        stages._open.append(entry)
    log.info("%s: started (resident %.2f GB)", full, rss / 1e9)
    try:
        yield
    finally:
        end = stages.sample()
        with stages._lock:
            stages._open.remove(entry)
        wall, cpu = time.perf_counter() - entry.started, time.process_time() - entry.cpu
        stages.records.append({
            "stage": full, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "peak_rss_bytes": entry.peak,
            "rss_end_bytes": end,
        })
        log.info("%s: %.1f s, peak resident %.2f GB", full, wall, entry.peak / 1e9)
