"""Regression gates: this run's candidate judged against a saved run of the same gate.

A fixed budget cannot see a candidate slipping from 0.3 to 0.9 points of a 1-point budget; these
three limits (``max_regression``, ``max_size_growth``, ``min_speedup_ratio``) judge the change against
the run saved with ``--compress-budget-save`` and given to ``--compress-budget-compare``:

- ``<metric>_regression``: the saved candidate's metric minus this one's, in the metric's units. When the
  data are the same (equal fingerprints) it is paired sample by sample across the two runs and read
  exactly as the drop from the baseline is (``verdict.interval_figure``: the same interval rules, the
  same ``accuracy_gate`` modes). When they differ the figure says it cannot pair and compares the two
  summary figures, without an interval (only the measured difference can be judged then).
- ``size_growth``: this run's bytes / the saved bytes - 1.
- ``speedup_ratio``: this run's speedup / the saved speedup. A speedup depends on the CPU (int8 against
  fp32 is ~4x with AVX-512 VNNI, ~1.1x on AVX2 only), so across different CPUs, or times from different
  clocks (a cost model, a scrambled clock), the comparison is refused: not judged, with the reason.

A gate missing from the saved run (a new test) is not judged either, and says so.
"""

from __future__ import annotations

from typing import Any

from squeezelab.checks.budget import REGRESSION_KEYS, Budget
from squeezelab.checks.history import SavedResults, cpu_text, machine, same_cpu
from squeezelab.checks.verdict import Figure, interval_figure
from squeezelab.engine.core.errors import DataError
from squeezelab.engine.measurement.paired import PairedMetrics
from squeezelab.engine.measurement.point import unpack_scores
from squeezelab.engine.measurement.stats import paired_drop_interval

__all__ = ["regression_figures"]


def regression_figures(
    saved: SavedResults, key: str, pair: PairedMetrics, data_fingerprint: str | None, budget: Budget
) -> tuple[list[Figure], list[str]]:
    """The regression figures of gate ``key`` against ``saved``, and the reasons for any limit not judged.

    Raises:
        DataError: the saved run measured another metric, or one of the runs has no value of it.
    """
    limits = {k: getattr(budget, k) for k in REGRESSION_KEYS if getattr(budget, k) is not None}
    if not limits:
        return [], []
    entry = saved.entry(key)
    if entry is None:
        return [], [f"{', '.join(limits)}: no saved result for this gate ({key!r}) in {saved.source}, a new gate?"]
    figures: list[Figure] = []
    not_judged: list[str] = []
    if "max_regression" in limits:
        figures.append(_metric_figure(entry, pair, data_fingerprint, budget, saved.source))
    if "max_size_growth" in limits:
        before, now = int(entry["candidate"]["size_bytes"]), pair.candidate.size_bytes
        growth = now / before - 1 if before > 0 else float("inf")
        note = f"saved run {before:,} -> {now:,} bytes"
        figures.append(Figure("size_growth", growth, limits["max_size_growth"], "<=", growth <= limits["max_size_growth"],
                              limits["max_size_growth"] - growth, growth, note))
    if "min_speedup_ratio" in limits:
        figure, refused = _speed_figure(entry, saved, pair, limits["min_speedup_ratio"])
        figures += [figure] if figure is not None else []
        not_judged += [refused] if refused else []
    return figures, not_judged


def _metric_figure(entry: dict[str, Any], pair: PairedMetrics, data_fingerprint: str | None, budget: Budget, source: str) -> Figure:
    """``<metric key>_regression``: paired across the two runs where the data are the same, summary figures otherwise."""
    saved, now = entry["candidate"], pair.candidate
    if saved["metric"] != now.metric:
        raise DataError(
            f"the saved run ({source}) measured {saved['metric']!r} and this run {now.metric!r}; a regression compares "
            "one metric: save a run measured with this metric (--compress-budget-save) before comparing with it."
        )
    if saved.get("value") is None or now.value is None:
        raise DataError(
            f"max_regression compares the candidate's {now.metric} across runs, and the {'saved' if saved.get('value') is None else 'current'} "
            "run has no value of it (measured without data): pass data= to the check in both runs."
        )
    name, limit = f"{now.metric_key}_regression", budget.max_regression
    before_scores, now_scores = unpack_scores(saved.get("scores")), now.scores
    why = _unpaired_reason(entry.get("data_fingerprint"), data_fingerprint, before_scores, now_scores)
    words = f"saved run {saved['value']:.4f} -> now {now.value:.4f}"
    if why is None:
        iv = paired_drop_interval(before_scores, now_scores, budget.confidence)
        return interval_figure(name, limit, iv.drop, iv, budget.accuracy_gate, now.metric,
                               note=f"{words}, paired on the same {iv.n} samples", note_in_interval=True)
    mode_words = "" if budget.accuracy_gate == "measured" else f"; gate {budget.accuracy_gate!r} needs a paired interval, so the measured difference is judged"
    return interval_figure(name, limit, saved["value"] - now.value, None, "measured", now.metric, note=words,
                           unpaired=f"cannot pair: {why}; compared the summary figures, no interval{mode_words}")


def _unpaired_reason(saved_fp: str | None, now_fp: str | None, before: Any, now: Any) -> str | None:
    """Why the two runs' scores cannot be paired sample by sample; None when they can."""
    if saved_fp is None or now_fp is None:
        return "the data's fingerprint is unknown for one run (Points measured elsewhere carry none)"
    if saved_fp != now_fp:
        return f"the data differ (fingerprint saved {saved_fp[:12]}, now {now_fp[:12]})"
    if before is None or now is None:
        return "a run has no per-sample scores (a metric returning one number)"
    if len(before) != len(now):
        return f"the runs scored {len(before)} and {len(now)} samples"
    return None


def _speed_figure(entry: dict[str, Any], saved: SavedResults, pair: PairedMetrics, limit: float) -> tuple[Figure | None, str]:
    """``speedup_ratio``, or the reason it is refused (another CPU, another clock, a run without timing)."""
    name = "min_speedup_ratio"
    now_cpu = machine()
    if not same_cpu(saved.cpu, now_cpu):
        return None, (
            f"{name}: refused: the saved run was timed on {cpu_text(saved.cpu)} and this one on {cpu_text(now_cpu)}; "
            "a speedup depends on the CPU's int8 kernels, so speed is compared only on the same CPU. Save a run "
            "on this CPU (--compress-budget-save) to gate speed against it."
        )
    before_clock, now_clock = entry.get("timing"), pair.candidate.details.get("timing")
    if before_clock != now_clock:
        return None, (
            f"{name}: refused: the saved run was timed by {before_clock or 'the real clock'} and this one by "
            f"{now_clock or 'the real clock'}; speeds from different clocks do not compare."
        )
    before = entry["candidate"].get("speedup")
    if not isinstance(before, (int, float)) or before <= 0:
        return None, f"{name}: refused: the saved run has no speedup (its budget timed nothing); save a run with min_speedup_ratio set."
    now = pair.speedup
    ratio = now / before
    note = f"speedup saved run {before:.3f}x -> now {now:.3f}x, same CPU {saved.cpu.get('name')!r}"
    return Figure("speedup_ratio", ratio, limit, ">=", ratio >= limit, ratio - limit, ratio, note), ""
