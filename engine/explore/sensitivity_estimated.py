"""``layer_sensitivity(method="estimate")``: every row estimated, the top rows of each axis measured exactly.

The estimate (``sensitivity_estimate``) ranks; the exact probes (``layer_probes``) verify where a
decision is taken: the ``verify`` rows of each axis the estimate ranks highest. Both are cached: the
estimate under the evaluator's key of its first probe, so a second call reads files only.
"""

from __future__ import annotations

from typing import Any

from squeezelab.engine.core.fingerprints import fingerprint
from squeezelab.engine.core.quantizers import QuantizationConfig
from squeezelab.engine.explore.evaluation import Evaluator
from squeezelab.engine.explore.layer_probes import Planned, measure_probes, probe_table
from squeezelab.engine.explore.sensitivity_estimate import ESTIMATE_NOTE, estimate_sensitivity

__all__ = ["estimated_table", "cached_estimate"]

_VERSION = "estimate/1"  # part of the cache key: a change to the estimate's arithmetic must change it
_SAMPLES, _DIRECTIONS, _SEED = 16, 4, 0


def cached_estimate(ev: Evaluator, names: list[str], quantizer: QuantizationConfig, probes: list[Planned]) -> list[float]:
    """The estimate of each probe, in order: from the cache, or computed once and stored."""
    keys = [(p.layer, p.axis, float(p.value)) for p, _ in probes]
    key = fingerprint(_VERSION, [ev.key(p.recipe) for p, _ in probes], _SAMPLES, _DIRECTIONS, _SEED)
    stored = ev.cache.get(key)
    if stored is not None and len(stored) == len(keys):
        return [float("nan") if v is None else float(v) for v in stored]
    found = estimate_sensitivity(ev.model, ev.samples.inputs, ev.settings.output, names, keys, quantizer,
                                 samples=_SAMPLES, directions=_DIRECTIONS, seed=_SEED)
    values = [found[k] for k in keys]
    ev.cache.put(key, [None if v != v else v for v in values])  # NaN is not JSON
    return values


def _top(probes: list[Planned], estimates: list[float], verify: int) -> list[Planned]:
    """The ``verify`` probes of each axis with the highest estimates."""
    chosen = []
    for axis in dict.fromkeys(p.axis for p, _ in probes):
        ranked = sorted((i for i, (p, _) in enumerate(probes) if p.axis == axis and estimates[i] == estimates[i]),
                        key=lambda i: -estimates[i])
        chosen += [probes[i] for i in ranked[:verify]]
    return chosen


def estimated_table(ev: Evaluator, names: list[str], quantizer: QuantizationConfig, probes: list[Planned], *,
                    verify: int, progress: bool, deadline: float | None) -> Any:
    """The estimated table (see ``layer_sensitivity``), its top rows measured."""
    estimates = cached_estimate(ev, names, quantizer, probes)
    checked = _top(probes, estimates, max(int(verify), 0))
    points, base = measure_probes(ev, names, quantizer, checked, progress, deadline)
    table = probe_table(probes, points, base, quantizer)
    measured = [p.recipe in points for p, _ in probes]
    table["estimate"] = estimates
    table["estimated"] = [not m for m in measured]
    if not base.metric_key.startswith("cosine"):  # an estimate in cosine units is no drop of another metric
        return _labelled(table, drop_from_estimate=False)
    for column in ("drop", f"{base.metric_key}_drop"):
        table.loc[table["estimated"], column] = table.loc[table["estimated"], "estimate"]
    return _labelled(table, drop_from_estimate=True)


def _labelled(table: Any, *, drop_from_estimate: bool) -> Any:
    note = ESTIMATE_NOTE + ("; estimated rows' drop is the estimate" if drop_from_estimate else
                            "; estimated rows have no drop (the metric is not a cosine): see the estimate column")
    table.attrs["estimate"] = note
    table.attrs["verified"] = int((~table["estimated"]).sum())
    return table
