"""Latency measured side by side: warm-up, interleaved rounds, medians, per-round ratios.

On a small machine, running variants in a fixed order biases results (a
runtime's worker threads keep a core busy after a run and slow whatever runs
next). ``interleaved_latency`` therefore runs every variant once per round in
a freshly shuffled order, and ``ratio_median`` compares two variants round by
round, so slow phases of the machine hit both sides of a ratio alike
(``stats.ratio_interval`` adds the interval of that median and its reading).

The milliseconds come from ``timing.active_timer()``: the real clock, unless a test injected a
cost model or ``SQUEEZELAB_SCRAMBLE_TIMINGS`` scrambles them (see ``engine.measurement.timing``).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import torch

from squeezelab.engine.measurement.timing import active_timer
from squeezelab.engine.measurement.stats import ratio_interval

__all__ = ["interleaved_latency", "ratio_median", "torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Set PyTorch's intra-op thread count for a block, restoring it afterwards."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def interleaved_latency(
    runners: Mapping[Hashable, Callable[[], Any]],
    *,
    rounds: int = 30,
    warmup: int = 3,
    inner: int = 1,
    seed: int = 0,
    on_round: Callable[[int, int], None] | None = None,
    subjects: Mapping[Hashable, Any] | None = None,
) -> dict[Hashable, list[float]]:
    """Milliseconds per call of each runner, one sample per round.

    Args:
        runners: name -> zero-argument function doing one inference.
        rounds: samples per runner; each round runs every runner once, shuffled.
        warmup: untimed calls per runner before the first round.
        inner: calls per sample (the sample is their mean), for very short calls.
        seed: seeds the local shuffling RNG (the global RNG is not touched).
        on_round: ``on_round(done, rounds)`` after every round (progress displays), outside the timing.
        subjects: name -> what the runner runs (a ``Compressed`` result), for a cost model (``timing``).
    """
    rng = random.Random(seed)
    names = list(runners)
    # The clock first: a cost model that cannot price a runner is refused before any run.
    clock = active_timer().clock({name: (subjects or {}).get(name) for name in names})
    for name in names:
        for _ in range(warmup):
            runners[name]()
    samples: dict[Hashable, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        rng.shuffle(names)
        for name in names:
            samples[name].append(clock(name, runners[name], inner))
        if on_round is not None:
            on_round(len(samples[names[0]]), rounds)
    return samples


def ratio_median(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median of per-round ratios ``numerator[i] / denominator[i]`` (e.g. baseline / candidate = speedup).

    The median of ``stats.ratio_interval``, which also gives its interval and reading.
    """
    return ratio_interval(numerator, denominator).median
