"""``layer_sensitivity(method="auto")``, the default: exact where the exact table is cheap, else estimated.

The exact table's cost is predicted from work, not from a clock: each probe re-runs the model from
the probed layer onward (``replay``), so its cost is about the multiply-adds of the Linear/Conv
layers called from that layer's first call on, times the samples. One forward pass on one sample
(``layer_probes.layer_work``: hooks on the prunable layers) gives each layer's multiply-adds and call order; probes already in
the cache cost nothing. At most ``EXACT_WORK`` multiply-adds: every probe is measured (``"exact"``);
above it: every row estimated and the top rows of each axis measured (``"estimate"``, labelled).

Work, not seconds, so the choice is the same on every CPU and under scrambled timings (a test never
depends on this machine's speed), and a second call of a table already measured is exact (no work
left). The limit is set from the benchmark machine (benchmarks/maps.py, 2-core AVX-512 EPYC): the
exact MiniLM table (64 sentences x 128 tokens, 4 bits and 50 % sparsity: 74 probes) is 3.4e12
multiply-adds and took 96 s; EfficientNet-Lite0 on 64 images at 4 bits (50 probes) is 0.66e12 and took
45 s (its depthwise convolutions do little work per second). The limit, 1e12, keeps tables of about a
minute or less exact and sends larger ones to the estimate.
"""

from __future__ import annotations

from torch import nn

from squeezelab.engine.explore.evaluation import Evaluator
from squeezelab.engine.explore.layer_probes import Planned, layer_work

__all__ = ["EXACT_WORK", "choose_method", "exact_work", "layer_work"]

EXACT_WORK = 1.0e12  # multiply-adds: at most this left to measure, the default measures every probe


def exact_work(model: nn.Module, ev: Evaluator, names: list[str], probes: list[Planned]) -> tuple[float, int]:
    """The multiply-adds the exact table still needs (probes not in the cache), and how many probes that is."""
    missing = [p for p, _ in probes if ev.cached(p.recipe) is None]
    if not missing:
        return 0.0, 0
    per_sample = layer_work(model, ev, names)
    return sum(per_sample.get(p.layer, 0.0) for p in missing) * len(ev.samples), len(missing)


def choose_method(work: float, missing: int, limit: float | None = None) -> tuple[str, str]:
    """``("exact" | "estimate", why)`` for ``work`` multiply-adds left over ``missing`` probes."""
    limit = EXACT_WORK if limit is None else limit
    if work <= limit:
        return "exact", (f"method='auto': exact ({missing} probes left to measure, {work:.2g} multiply-adds <= "
                         f"{limit:.2g}); every row measured")
    return "estimate", (f"method='auto': estimated ({missing} probes left to measure, {work:.2g} multiply-adds > "
                        f"{limit:.2g}, about a minute or more on 2 cores); pass method='exact' to measure every row")
