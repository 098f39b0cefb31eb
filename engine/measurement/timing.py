"""Where measured milliseconds come from: the real clock, a scrambled clock, or a cost model.

Every model timing in squeezelab goes through ``interleaved_latency``, which asks ``active_timer()``
for a ``Clock`` per measurement: ``measure``, ``measure_pair``, ``compare``, ``sweep``,
``layer_sensitivity``, ``search``, the Explorer and the budget gate all read their times from it.

Which variant runs faster depends on the CPU (ONNX Runtime's int8 GEMM is ~4x its fp32 one with
AVX-512 VNNI, ~1.1x on AVX2-only), so code that *acts* on timings (the latency search keeping the
faster recipe, a speed gate, a "faster" reading) must be tested with the times it acts on fixed:

- ``using_timer(CostModel(...))`` injects a cost model for a block: fixed milliseconds per thing
  timed (e.g. ``CostModel.by_size()``: time proportional to the file's bytes), so the outcome is
  deterministic by construction on every machine;
- ``SQUEEZELAB_SCRAMBLE_TIMINGS=<integer seed>`` in the environment (read at every measurement, not
  at import; unset or empty: off) multiplies each runner's measured times by a random factor,
  log-uniform in [1/4, 4], drawn per runner per measurement from ``random.Random(seed)``. Runners
  compared in one measurement get independent factors, so a ratio moves by up to 16x either way:
  a test that passes only where one variant happens to be faster fails under it. The whole test
  suite must pass with it on (docs/guide/cpus.md, "Tests on every CPU"). ONNX Runtime's profiler times (``op_times``) are
  scrambled the same way, per op type.

A point timed by anything but the real clock says so in ``Point.details["timing"]``, results timed
that way never share cache entries with real ones (``Timer.key``), and the scramble logs a warning
once per process. An injected timer is process-wide for its block (the Explorer's worker thread
sees it); process-pool workers see only the environment switch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

from squeezelab.engine.core.errors import ConfigError

__all__ = ["Timer", "ScrambledTimer", "CostModel", "Clock", "active_timer", "using_timer", "SCRAMBLE_ENV"]

logger = logging.getLogger(__name__)

SCRAMBLE_ENV = "SQUEEZELAB_SCRAMBLE_TIMINGS"

# ``clock(name, run, inner)``: milliseconds per call of ``run`` (``inner`` calls make one sample).
Clock = Callable[[Hashable, Callable[[], Any], int], float]


def _perf_counter_ms(name: Hashable, run: Callable[[], Any], inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        run()
    return (time.perf_counter() - start) * 1000.0 / inner


class Timer:
    """The real clock: ``time.perf_counter`` around the calls. Subclasses change where times come from.

    ``key``: what the figures depend on besides the machine, for cache keys; None for real time.
    """

    key: tuple | None = None

    def clock(self, subjects: Mapping[Hashable, Any]) -> Clock:
        """The clock of one measurement of the runners named by ``subjects`` (name -> what it runs, or None)."""
        return _perf_counter_ms

    def factors(self, names: Sequence[Hashable]) -> dict[Hashable, float]:
        """Multipliers for times read elsewhere (ONNX Runtime's profiler), one per name: 1 for real time."""
        return {name: 1.0 for name in names}

    def describe(self) -> str | None:
        """Words for ``Point.details["timing"]``; None for real time."""
        return None


class ScrambledTimer(Timer):
    """Real times, each runner's multiplied by a seeded random factor drawn per measurement.

    Args:
        seed: seeds a local ``random.Random`` (the global RNG is not touched); the factors of a
            process's measurements follow from it in order.
        spread: factors are log-uniform in ``[1/spread, spread]``.
        base: the timer whose times are scrambled (default: the real clock).
    """

    def __init__(self, seed: int, *, spread: float = 4.0, base: Timer | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"ScrambledTimer: seed={seed!r}; give an integer seed.")
        if not (isinstance(spread, (int, float)) and math.isfinite(spread) and spread > 1):
            raise ConfigError(f"ScrambledTimer: spread={spread!r}; give a finite number > 1 (4 = factors in [1/4, 4]).")
        self.seed, self.spread, self.base = seed, float(spread), base or Timer()
        self.key = ("scrambled", seed, self.spread)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # measurements on several threads draw from one stream

    def factors(self, names: Sequence[Hashable]) -> dict[Hashable, float]:
        width = math.log(self.spread)
        with self._lock:
            return {name: math.exp(self._rng.uniform(-width, width)) for name in names}

    def clock(self, subjects: Mapping[Hashable, Any]) -> Clock:
        base, factor = self.base.clock(subjects), self.factors(list(subjects))
        return lambda name, run, inner: base(name, run, inner) * factor[name]

    def describe(self) -> str:
        return f"scrambled: measured times x random factors in [1/{self.spread:g}, {self.spread:g}] ({SCRAMBLE_ENV}={self.seed})"


class CostModel(Timer):
    """Fixed milliseconds per thing timed, for tests: nothing is run or measured in the timed rounds.

    Args:
        cost: ``cost(subject) -> ms``, where ``subject`` is what was timed (the ``Compressed`` result
            in ``measure``, ``sweep``, ``search``, the Explorer and the budget gate; the runner's name
            where ``interleaved_latency`` is given no subjects), or a mapping from runner name to ms.
        name: names the model in ``Point.details["timing"]`` and in cache keys: results timed by
            cost models of one name share cache entries. Without it, entries are this instance's
            own (a function's name does not say what a closure or a dict holds).

    The warm-up calls of ``interleaved_latency`` still run every runner once or more, so a model
    that fails to run still fails.
    """

    def __init__(self, cost: Callable[[Any], float] | Mapping[Hashable, float], *, name: str | None = None) -> None:
        if not callable(cost) and not isinstance(cost, Mapping):
            raise ConfigError(f"CostModel: cost={cost!r}; give a function subject -> milliseconds, or a dict name -> milliseconds.")
        self.cost = cost
        self.name = name or getattr(cost, "__qualname__", None) or "by runner name"
        self.key = ("cost model", name if name else f"{self.name} {uuid.uuid4().hex}")

    @classmethod
    def by_size(cls, ms_per_mb: float = 10.0) -> CostModel:
        """Time proportional to the bytes of the file (``Compressed.size_bytes``): smaller is faster."""
        def by_size(subject: Any) -> float:
            size = getattr(subject, "size_bytes", None)
            if not isinstance(size, (int, float)):
                raise ConfigError(f"CostModel.by_size: {subject!r} has no size_bytes; time Compressed results, or give a cost function.")
            return ms_per_mb * size / 1e6

        return cls(by_size, name=f"by_size({ms_per_mb:g} ms/MB)")

    def ms(self, name: Hashable, subject: Any) -> float:
        """The modelled milliseconds of the runner ``name`` that runs ``subject``."""
        if isinstance(self.cost, Mapping):
            if name not in self.cost:
                raise ConfigError(f"CostModel: no cost for runner {name!r}; the mapping names {sorted(map(repr, self.cost))}.")
            value = self.cost[name]
        else:
            value = self.cost(name if subject is None else subject)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"CostModel {self.name}: cost {value!r} for runner {name!r}; a cost is a finite number of ms > 0.")
        return float(value)

    def clock(self, subjects: Mapping[Hashable, Any]) -> Clock:
        costs = {name: self.ms(name, subject) for name, subject in subjects.items()}  # refused before any round
        return lambda name, run, inner: costs[name]

    def describe(self) -> str:
        return f"cost model: {self.name} (not measured)"


_INJECTED: list[Timer] = []  # a stack: the innermost ``using_timer`` wins
_INJECTED_LOCK = threading.Lock()
_SCRAMBLED: dict[int, ScrambledTimer] = {}  # one per seed per process, so its stream continues across measurements


def active_timer() -> Timer:
    """The timer measurements use now: the innermost injected one, else the scramble when its switch is on, else real time."""
    with _INJECTED_LOCK:
        if _INJECTED:
            return _INJECTED[-1]
    seed = _scramble_seed()
    if seed is None:
        return Timer()
    with _INJECTED_LOCK:
        if seed not in _SCRAMBLED:
            _SCRAMBLED[seed] = ScrambledTimer(seed)
            logger.warning("%s=%d: every measured time is multiplied by a random factor; speeds and speedups are not measurements.", SCRAMBLE_ENV, seed)
        return _SCRAMBLED[seed]


def _scramble_seed() -> int | None:
    value = os.environ.get(SCRAMBLE_ENV, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{SCRAMBLE_ENV}={value!r}; give an integer seed (e.g. 1), or unset it for real timings.") from None


@contextlib.contextmanager
def using_timer(timer: Timer) -> Iterator[Timer]:
    """Time every measurement inside the block with ``timer`` (process-wide), restoring the previous one after.

    Examples:
        >>> from squeezelab.engine.measurement.latency import interleaved_latency
        >>> with using_timer(CostModel({"fp32": 2.0, "int8": 0.5})):
        ...     ms = interleaved_latency({"fp32": lambda: None, "int8": lambda: None}, rounds=3, warmup=0)
        >>> ms["fp32"], ms["int8"]
        ([2.0, 2.0, 2.0], [0.5, 0.5, 0.5])
    """
    if not isinstance(timer, Timer):
        raise ConfigError(f"using_timer({timer!r}); give a squeezelab Timer: CostModel(...), ScrambledTimer(seed) or Timer().")
    with _INJECTED_LOCK:
        _INJECTED.append(timer)
    try:
        yield timer
    finally:
        with _INJECTED_LOCK:
            _INJECTED.remove(timer)
