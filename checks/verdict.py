"""Judging measured figures against a budget.

``judge(pair, budget)`` compares a ``PairedMetrics`` (baseline and candidate
measured together by the engine) with a ``Budget`` and returns a ``Verdict``:
one ``Figure`` per gate, each with its value, limit, headroom and outcome.

The drop figures are named after the metric measured (``accuracy_drop`` for
top-1, ``cosine_drop`` for a cosine, ``relative_cosine_drop`` ...), in its
units. They are read in the budget's ``accuracy_gate`` mode ("measured",
"lenient" or "strict") against the paired drop's confidence interval (exact
binomial for 0/1 scores, a t-interval for continuous ones), which every drop
line shows, saying so when the interval contains the limit (the test set cannot
resolve the budget) and how many samples would. Nothing here measures; an
improvement never fails a gate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from squeezelab.checks.budget import Budget
from squeezelab.engine.core.errors import DataError

if TYPE_CHECKING:  # importing the engine's measurement pulls in torch; the plugin stays light
    from squeezelab.engine.measurement.paired import PairedMetrics

__all__ = ["Figure", "Verdict", "figure_detail", "interval_figure", "judge"]

MB = 1_000_000


@dataclass(frozen=True)
class Figure:
    """One gated figure. ``headroom`` is how far the judged value is inside its limit (negative: over).

    Drop figures (``<metric key>_drop``) also carry the ``metric`` measured, their gate
    ``mode``, the interval of the paired drop (``low``, ``high``, ``confidence``, ``method``
    and ``interval`` in words), whether the interval ``resolved`` the limit and, when it did
    not, ``samples_needed`` (None: no count would). The speedup carries the interval of its
    median and its ``reading``.
    """

    name: str
    value: float
    limit: float
    op: str  # "<=" or ">="
    passed: bool
    headroom: float
    judged: float  # the value the gate compared: the measured value, or an end of the interval
    note: str = ""
    mode: str = ""
    low: float | None = None
    high: float | None = None
    confidence: float | None = None
    method: str = ""
    interval: str = ""
    resolved: bool | None = None
    samples_needed: int | None = None
    reading: str = ""
    metric: str = ""

    def line(self) -> str:
        """``size_mb 2.5000 > max 2.0000 (over by 0.5000, 2,500,000 bytes)``; drop lines add interval and mode."""
        word = "max" if self.op == "<=" else "min"
        if self.name == "executable":
            state = "executable" if self.value else "SIMULATED (no low-precision kernel)"
            return f"executable: candidate is {state}; the budget requires an executable model"
        if self.mode:
            return self._drop_line()
        shown = _fmt(self.value)
        if self.passed:
            rel = f"{self.op} {word} {_fmt(self.limit)} (headroom {_fmt(self.headroom)}"
        else:
            bad = ">" if self.op == "<=" else "<"
            over = self.value - self.limit if self.op == "<=" else self.limit - self.value
            rel = f"{bad} {word} {_fmt(self.limit)} (over by {_fmt(over)}"
        extra = f", {self.note}" if self.note else ""
        return f"{self.name} {shown} {rel}{extra})"

    def _drop_line(self) -> str:
        # cosine_drop 0.0032 > max 0.0020 (over by 0.0012): FAIL, gate 'measured'; 95% CI [...], ...
        end = {"lenient": "interval low end", "strict": "interval high end"}.get(self.mode)
        shown = _fmt(self.value) + (f", {end} {_fmt(self.judged)}" if end else "")
        if self.passed:
            rel = f"<= max {_fmt(self.limit)} (headroom {_fmt(self.headroom)}): pass"
        else:
            rel = f"> max {_fmt(self.limit)} (over by {_fmt(-self.headroom)}): FAIL"
        return f"{self.name} {shown} {rel}, gate {self.mode!r}; {self.interval or self.note}{_unresolved(asdict(self))}"

    def detail(self) -> str:
        """The interval, mode and reading in words (what the end-of-run summary prints)."""
        return figure_detail(asdict(self))


def figure_detail(figure: dict[str, Any]) -> str:
    """``cosine_drop: 95% CI [...], t on paired differences, ...; gate 'measured'`` from a figure's dict; "" when plain."""
    if figure.get("mode"):
        return f"{figure['name']}: {figure['interval'] or figure['note']}; gate {figure['mode']!r}{_unresolved(figure)}"
    if figure.get("reading"):
        return f"{figure['name']}: {figure['interval']}: {figure['reading']}"
    return ""


def _unresolved(figure: dict[str, Any]) -> str:
    if figure.get("resolved") is not False:
        return ""
    needed = figure.get("samples_needed")
    rate = "disagreement rate" if figure.get("method") == "exact-binomial" else "spread of the differences"
    more = (
        f"about {needed:,} samples would (at the observed {rate})"
        if needed is not None
        else "no sample count would (the measured drop sits on the limit)"
    )
    return f"; the interval contains the limit: this test set cannot resolve the budget, {more}"


def _fmt(x: float) -> str:
    """Four decimals; three significant digits below 0.001 (a cosine's drop can be 3e-05); thousands grouped."""
    if abs(x) >= 1000:
        return f"{x:,.1f}"
    if x == 0 or abs(x) >= 0.001 or not math.isfinite(x):
        return f"{x:.4f}"
    return f"{x:.3g}"


@dataclass(frozen=True)
class Verdict:
    """All gated figures of one check, and the metric whose drop was judged (its name, key, units)."""

    budget_name: str
    baseline: str
    candidate: str
    executable: bool
    n_samples: int
    figures: tuple[Figure, ...]
    budget: dict[str, Any] = field(default_factory=dict)
    accuracy_gate: str = "measured"
    confidence: float = 0.95
    metric: str = "top-1 accuracy"
    metric_key: str = "accuracy"
    percent: bool = True
    summary: dict[str, Any] = field(default_factory=dict)
    not_judged: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.figures)

    def failure_message(self) -> str:
        failed = [f for f in self.figures if not f.passed]
        kind = "executable" if self.executable else "SIMULATED"
        measured = f" (metric: {self.metric}, n={self.n_samples})" if any(f.metric for f in self.figures) else ""
        head = (
            f"compress budget {self.budget_name!r} broken by {self.candidate} ({kind}) "
            f"vs {self.baseline}: {len(failed)} of {len(self.figures)} gate(s) failed{measured}"
        )
        lines = [head, *("  " + f.line() for f in failed)]
        return "\n".join(lines + [f"  not judged: {reason}" for reason in self.not_judged])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _check_inputs(pair: PairedMetrics, budget: Budget, gates: dict[str, Any]) -> None:
    """Refuse figures that cannot be judged, naming what is missing and how to get it."""
    base, cand = pair.baseline, pair.candidate
    drop_gated = "max_accuracy_drop" in gates or "max_relative_accuracy_drop" in gates
    key = cand.metric_key
    if drop_gated and pair.accuracy_drop is None:
        raise DataError(
            f"the budget gates the drop of the measured metric ({key}_drop) but there is no {cand.metric} to "
            "judge: pass data=(inputs, targets), or (inputs, None) to compare with the uncompressed model's "
            "outputs, to compress_budget.check(...), or Points measured with data."
        )
    if drop_gated and (base.metric, base.metric_key) != (cand.metric, key):
        raise DataError(
            f"the baseline was measured with {base.metric!r} and the candidate with {cand.metric!r}; a drop "
            "compares one metric: measure both with the same metric=."
        )
    interval = pair.drop_interval
    if drop_gated and budget.accuracy_gate != "measured" and interval is None:
        raise DataError(
            f"accuracy_gate = {budget.accuracy_gate!r} judges the confidence interval of the paired drop, "
            "and there is none: it needs per-sample scores of both models on the same samples (Points "
            "measured separately, or a metric that returns one number, have none). Pass both models, ONNX "
            "files or Compressed results with data and a per-sample metric, or use accuracy_gate = \"measured\"."
        )
    if drop_gated and interval is not None and interval.confidence != budget.confidence:
        raise DataError(
            f"the paired drop's interval is at confidence {interval.confidence:g} but the budget asks for "
            f"{budget.confidence:g}; measure with measure_pair(..., confidence={budget.confidence:g})."
        )
    if "max_relative_accuracy_drop" in gates and not (base.value is not None and base.value > 0):
        raise DataError(
            f"the baseline's {key} is {base.value!r}: a drop relative to it is undefined (a relative drop "
            "needs a positive baseline value); gate max_accuracy_drop (absolute, in the metric's units) instead."
        )
    if ("min_compression" in gates or "max_size_mb" in gates) and cand.size_bytes <= 0:
        raise DataError(f"the candidate's size is {cand.size_bytes} bytes; a shipped model has at least one byte.")
    if ("min_speedup" in gates or "max_latency_ms" in gates) and not (
        (base.latency_ms or 0) > 0 and (cand.latency_ms or 0) > 0 and math.isfinite(pair.speedup)
    ):
        raise DataError(
            f"latency must be positive to gate speed; got baseline {base.latency_ms!r} ms and "
            f"candidate {cand.latency_ms!r} ms."
        )


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _drop_figure(name: str, limit: float, pair: PairedMetrics, budget: Budget, scale: float, note: str) -> Figure:
    """Judge the paired drop of the metric (times ``scale``: 1, or 1 / baseline value) in the budget's mode."""
    metric = pair.candidate.metric
    relative = name.startswith("relative_")
    return interval_figure(name, limit, pair.accuracy_drop, pair.drop_interval, budget.accuracy_gate, metric,
                           scale=scale, note=note, note_in_interval=relative)


def interval_figure(
    name: str, limit: float, drop: float, iv: Any, mode: str, metric: str, *, scale: float = 1.0, note: str = "",
    note_in_interval: bool = False, unpaired: str = "no interval (no per-sample scores measured together)",
) -> Figure:
    """A drop (``drop``, paired interval ``iv`` or None; both times ``scale``) judged against ``limit`` in ``mode``.

    The one reading of a paired drop: the drop of a candidate from its baseline, and the regression of a
    candidate from a saved run of it (``checks.regression``), are both judged here. Without an interval
    only the measured value can be judged (callers refuse other modes, or say why there is none:
    ``unpaired``); ``note_in_interval`` appends ``note`` to the interval's words.
    """
    from squeezelab.engine.measurement.stats import samples_to_resolve

    value = drop * scale
    if iv is None:
        note = f"{note}; {unpaired}" if note else unpaired
        return Figure(name, value, limit, "<=", value <= limit, limit - value, value, note, mode=mode, metric=metric)
    low, high = iv.low * scale, iv.high * scale
    judged = {"measured": value, "lenient": low, "strict": high}[mode]
    resolved = not iv.contains(limit / scale)
    return Figure(
        name, value, limit, "<=", judged <= limit, limit - judged, judged, note,
        mode=mode,
        low=_finite(low),
        high=_finite(high),
        confidence=iv.confidence,
        method=iv.method,
        interval=_interval_text(iv, scale) + (f", {note}" if note_in_interval else ""),
        resolved=resolved,
        samples_needed=None if resolved else samples_to_resolve(iv, limit / scale),
        metric=metric,
    )


def _interval_text(iv: Any, scale: float) -> str:
    """``95% CI [2.95e-05, 3.07e-05], t on paired differences, n=64``: the ends as the figures are shown.

    Like ``DropInterval.describe``, with ends that stay readable for drops below 0.001 (a cosine's).
    """
    words = iv.describe(scale)
    if iv.sided != "two":
        return words
    tail = words.split("], ", 1)[1]  # "exact binomial, 9 vs 0 discordant of n=450" or "t on paired differences, n=64"
    return f"{iv.confidence * 100:g}% CI [{_fmt(iv.low * scale)}, {_fmt(iv.high * scale)}], {tail}"


def _speed_figure(pair: PairedMetrics, limit: float) -> Figure:
    """``min_speedup`` is judged on the median ratio; the line shows its interval and reading."""
    value, speed = pair.speedup, pair.speedup_interval
    note = f"median of {pair.latency_rounds} interleaved rounds, batch {pair.candidate.latency_batch_size}"
    if speed is None:
        note += "; separate runs: no interval"
        return Figure("speedup", value, limit, ">=", value >= limit, value - limit, value, note)
    pct = f"{speed.confidence * 100:g}%"
    spread = f"{pct} interval {speed.low:.4f}-{speed.high:.4f}" if math.isfinite(speed.high) else f"too few rounds for a {pct} interval"
    interval = str(speed) + (f", {pct} interval of the median of {speed.rounds} rounds" if math.isfinite(speed.high) else "")
    return Figure(
        "speedup", value, limit, ">=", value >= limit, value - limit, value, f"{note}; {spread}: {speed.reading}",
        low=speed.low, high=_finite(speed.high), confidence=speed.confidence, method="order statistics",
        interval=interval, reading=speed.reading,
    )


def judge(
    pair: PairedMetrics,
    budget: Budget,
    *,
    budget_name: str = "default",
    labels: tuple[str, str] | None = None,
) -> Verdict:
    """Compare measured figures with the budget's limits.

    The drop figures (named after the metric: ``<metric key>_drop`` and
    ``relative_<metric key>_drop``) are judged in ``budget.accuracy_gate`` mode on
    the pair's interval (at ``budget.confidence``); every other figure on its
    measured value. ``labels`` names baseline and candidate in messages (default:
    their recipe labels).

    Raises:
        DataError: a gated figure cannot be judged (no value of the metric, two metrics,
            no interval for a "lenient" / "strict" gate, an interval at another confidence,
            a relative drop of a non-positive baseline value, no size, no latency).
    """
    base, cand = pair.baseline, pair.candidate
    gates = budget.gates()
    _check_inputs(pair, budget, gates)
    figures: list[Figure] = []

    def upper_limit(name: str, value: float, limit: float, note: str = "") -> None:
        figures.append(Figure(name, value, limit, "<=", value <= limit, limit - value, value, note))

    def lower_limit(name: str, value: float, limit: float, note: str = "") -> None:
        figures.append(Figure(name, value, limit, ">=", value >= limit, value - limit, value, note))

    key = cand.metric_key
    if "max_accuracy_drop" in gates:
        note = f"n={pair.n_samples}"
        figures.append(_drop_figure(f"{key}_drop", gates["max_accuracy_drop"], pair, budget, 1.0, note))
    if "max_relative_accuracy_drop" in gates:
        note = f"relative to baseline {key} {base.value:.4f}"
        limit = gates["max_relative_accuracy_drop"]
        figures.append(_drop_figure(f"relative_{key}_drop", limit, pair, budget, 1 / base.value, note))
    if "max_size_mb" in gates:
        upper_limit("size_mb", cand.size_bytes / MB, gates["max_size_mb"], note=f"{cand.size_bytes:,} bytes")
    if "min_compression" in gates:
        lower_limit(
            "compression",
            base.size_bytes / cand.size_bytes,
            gates["min_compression"],
            note=f"{base.size_bytes:,} -> {cand.size_bytes:,} bytes",
        )
    if "min_speedup" in gates:
        figures.append(_speed_figure(pair, gates["min_speedup"]))
    if "max_latency_ms" in gates:
        upper_limit(
            "latency_ms",
            cand.latency_ms,
            gates["max_latency_ms"],
            note=f"median of {cand.latency_repeats}, batch {cand.latency_batch_size}, threads {cand.threads}",
        )
    if gates.get("require_executable"):
        ok = bool(cand.executable)
        figures.append(Figure("executable", float(ok), 1.0, ">=", ok, float(ok) - 1.0, float(ok)))
    return Verdict(
        budget_name=budget_name,
        baseline=labels[0] if labels else base.label,
        candidate=labels[1] if labels else cand.label,
        executable=cand.executable,
        n_samples=pair.n_samples,
        figures=tuple(figures),
        budget=gates,
        accuracy_gate=budget.accuracy_gate,
        confidence=budget.confidence,
        metric=cand.metric,
        metric_key=key,
        percent=cand.percent,
        summary=pair_summary(pair),
    )


def pair_summary(pair: PairedMetrics) -> dict[str, Any]:
    """The measured figures a reader wants beside the gates (the Markdown table): values, drop, bytes, speedup."""
    base, cand, iv, speed = pair.baseline, pair.candidate, pair.drop_interval, pair.speedup_interval
    return {
        "baseline_value": base.value,
        "candidate_value": cand.value,
        "drop": pair.accuracy_drop,
        "drop_low": None if iv is None else _finite(iv.low),
        "drop_high": None if iv is None else _finite(iv.high),
        "baseline_bytes": base.size_bytes,
        "candidate_bytes": cand.size_bytes,
        "speedup": None if not math.isfinite(pair.speedup) else pair.speedup,
        "speedup_low": None if speed is None else _finite(speed.low),
        "speedup_high": None if speed is None else _finite(speed.high),
        "timing": cand.details.get("timing"),
    }
