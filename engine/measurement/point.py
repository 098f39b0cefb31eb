"""One measured point and one set of measurement settings, shared by every path.

``Settings`` says how to measure (metric, output, latency batch size, rounds,
warm-up, threads, confidence); ``measure``, ``measure_pair``, ``sweep``,
``layer_sensitivity``, ``search``, the Explorer and the budget fixture all
take one, so no signature repeats the list.

``Point`` is what a measurement gives: the recipe, the figures (the metric's
value and its per-sample scores, size, latency), and — for a candidate
measured against a baseline — the paired drop with its interval and the
speedup with its interval, both from the same samples and the same timing
rounds. A sweep's table is one ``Point.to_row()`` per point; the cache stores
rows and ``Point.from_row`` reads them back.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from squeezelab.engine.core.arguments import as_integer, as_real
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.fingerprints import callable_fingerprint
from squeezelab.engine.core.outputs import OutputSelector, check_selector
from squeezelab.engine.measurement.scoring import Metric, as_metric
from squeezelab.engine.measurement.stats import DropInterval, RatioInterval

__all__ = ["Settings", "Point", "pack_scores", "unpack_scores"]


def _positive_int(settings: Settings, name: str, *, zero_ok: bool = False) -> None:
    """Check an integer field (numpy integers accepted, floats such as 4.0 refused) and store it as an ``int``."""
    value = getattr(settings, name)
    number = as_integer(value)
    if number is None or number < (0 if zero_ok else 1):
        want = "a non-negative integer" if zero_ok else "a positive integer"
        raise ConfigError(f"{name}={value!r} must be {want}.")
    object.__setattr__(settings, name, number)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How to measure.

    Attributes:
        metric: a ``Metric``, a callable ``metric(outputs, reference) -> scores``, one of the
            names in ``squeezelab.engine.measurement.scoring.METRICS``, or ``None``: top-1 accuracy when
            the data has targets, cosine to the uncompressed model's outputs when it has none.
        output: which model output is evaluated and exported (see ``engine.outputs``).
        batch_size: batch size of the latency measurement.
        rounds: interleaved timing rounds (0 skips timing: accuracy and size only).
        warmup: untimed runs of each model before the rounds.
        threads: intra-op threads while timing (recorded). 1 by default: one thread gives the steadiest
            timings, and ratios that hold on a busy machine; ``None`` = ONNX Runtime's default (all cores).
        confidence: two-sided confidence of every drop and speedup interval.
        eval_batch_size: batch size while evaluating the metric (memory, not results).

    These defaults are the only ones (with ``for_sweeps``, the sweeps' fewer rounds): a verb that
    measures takes ``settings=`` and reads its keyword arguments (``rounds=``, ``threads=``, ...) as
    overrides of it (``measurement.metrics.settings_of``).
    """

    metric: Metric | Callable[..., Any] | str | None = None
    output: OutputSelector = None
    batch_size: int = 1
    rounds: int = 30
    warmup: int = 5
    threads: int | None = 1
    confidence: float = 0.95
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        _positive_int(self, "batch_size")
        _positive_int(self, "rounds", zero_ok=True)
        _positive_int(self, "warmup", zero_ok=True)
        _positive_int(self, "eval_batch_size")
        if self.threads is not None:
            _positive_int(self, "threads")
        c = as_real(self.confidence)
        if c is None or not 0 < c < 1:
            raise ConfigError(f"confidence={self.confidence!r} must be a number in (0, 1), e.g. 0.95.")
        object.__setattr__(self, "confidence", c)
        check_selector(self.output)
        if self.metric is not None and not isinstance(self.metric, (Metric, str)) and not callable(self.metric):
            raise ConfigError(f"metric={self.metric!r}; pass a Metric, a callable or a metric name.")
        if isinstance(self.metric, str):
            as_metric(self.metric)  # an unknown name fails now, not after the first model ran

    @classmethod
    def for_sweeps(cls) -> Settings:
        """The defaults of a sweep, the explorer and a search (``Evaluator``): 20 timing rounds after 3
        warm-up runs. They time many points, each paired round by round with the baseline, so fewer
        rounds than a single comparison's 30 after 5 still give each speedup its interval.

        Examples:
            >>> (Settings.for_sweeps().rounds, Settings.for_sweeps().warmup, Settings().rounds)
            (20, 3, 30)
        """
        return cls(rounds=20, warmup=3)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)

    def resolved_metric(self, has_targets: bool) -> Metric:
        """The metric object for data with or without targets."""
        return as_metric(self.metric, has_targets=has_targets)

    def key_parts(self) -> list[Any]:
        """What of these settings changes a measured figure (for cache keys)."""
        metric = self.metric
        metric_key = None if metric is None else (metric if isinstance(metric, str) else callable_fingerprint(
            metric.fn if isinstance(metric, Metric) else metric))
        described = metric.describe() if isinstance(metric, Metric) else None
        output = self.output if not callable(self.output) else callable_fingerprint(self.output)
        return [metric_key, described, output, self.batch_size, self.rounds, self.warmup, self.threads]


def pack_scores(scores: np.ndarray | None) -> dict[str, Any] | None:
    """Per-sample scores as JSON: 0/1 scores as bits, others as float32, base64-coded."""
    if scores is None:
        return None
    scores = np.asarray(scores, dtype=np.float64)
    if np.all((scores == 0) | (scores == 1)):
        data, kind = np.packbits(scores.astype(bool)).tobytes(), "bits"
    else:
        data, kind = scores.astype(np.float32).tobytes(), "float32"
    return {"kind": kind, "n": int(len(scores)), "data": base64.b64encode(data).decode("ascii")}


def unpack_scores(packed: dict[str, Any] | None) -> np.ndarray | None:
    if not packed:
        return None
    raw = base64.b64decode(packed["data"])
    if packed["kind"] == "bits":
        return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[: packed["n"]].astype(np.float64)
    return np.frombuffer(raw, dtype=np.float32).astype(np.float64)


@dataclass(frozen=True, kw_only=True, eq=False)
class Point:
    """One measured model (a recipe's result, or the fp32 baseline). ``executable=False`` marks a simulation.

    Attributes:
        label: the recipe's label.
        recipe: the recipe as a plain dict (``Recipe.from_dict`` rebuilds it).
        metric: the metric's name (``"top-1 accuracy"``, ``"cosine to fp32"``, ...); ``metric_key``
            its table column; ``percent``: shown in % and pp.
        value: the metric's figure (mean of ``scores``); ``None`` when measured without data.
        scores: per-sample scores (``None`` for a scalar-only metric or without data).
        drop: the paired drop ``baseline - this`` with its interval (candidates measured against a baseline).
        speedup: baseline latency / this latency, per round, with its interval (same rounds).
        latency_ms: median of the timed rounds; ``None`` when not timed.
        latency_p25_ms, latency_p75_ms: the spread of the timed rounds (their 25th and 75th
            percentiles: the middle half of the rounds); ``None`` when not timed.
        details: choices made while compressing (reduce_range, exporter, ...).
    """

    label: str
    recipe: dict[str, Any]
    executable: bool
    runtime: str
    bits: int
    weight_sparsity: float
    quantized_weight_fraction: float | None = None
    metric: str = "top-1 accuracy"
    metric_key: str = "accuracy"
    percent: bool = True
    value: float | None = None
    scores: np.ndarray | None = None
    n_samples: int = 0
    size_bytes: int = 0
    latency_ms: float | None = None
    latency_p25_ms: float | None = None
    latency_p75_ms: float | None = None
    latency_batch_size: int = 1
    latency_rounds: int = 0
    threads: int | None = 1
    drop: DropInterval | None = None
    speedup: RatioInterval | None = None
    details: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    seconds: float | None = None

    # ------------------------------------------------------------ reading

    @property
    def kind(self) -> str:
        return "executable" if self.executable else "simulated"

    @property
    def accuracy(self) -> float | None:
        """The metric's value (named ``accuracy`` in older code; it is whatever ``metric`` is)."""
        return self.value

    @property
    def latency_repeats(self) -> int:
        return self.latency_rounds

    @property
    def sparsity(self) -> float:
        return self.weight_sparsity

    def with_baseline(self, drop: DropInterval | None, speedup: RatioInterval | None) -> Point:
        return dataclasses.replace(self, drop=drop, speedup=speedup)

    def replace(self, **changes: Any) -> Point:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------ rows (tables, the cache)

    def to_row(self) -> dict[str, Any]:
        """A flat dict of plain values: one table row, or one cache entry."""
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("scores", "drop", "speedup", "recipe")}
        row["kind"] = self.kind
        row["recipe"] = json.dumps(self.recipe, sort_keys=True)
        row["scores"] = pack_scores(self.scores)
        row[self.metric_key] = self.value  # the figure, under its metric's own name too
        row.update(_drop_columns(self.drop, self.metric_key))
        row.update(_speed_columns(self.speedup))
        return row

    def to_dict(self) -> dict[str, Any]:
        """The same flat dict as ``to_row`` (the name ``Metrics.to_dict`` had)."""
        return self.to_row()

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Point:
        names = {f.name for f in dataclasses.fields(cls)} - {"scores", "drop", "speedup", "recipe"}
        kwargs = {k: row[k] for k in names if k in row}
        recipe = row.get("recipe", "{}")
        speed = None
        if row.get("speedup_confidence") is not None:  # a candidate timed against the baseline
            speed = RatioInterval(
                float(row["speedup"]), float(row["speedup_low"]), float(row["speedup_high"]),
                int(row.get("latency_rounds") or 0), float(row["speedup_confidence"]),
            )
        recipe = json.loads(recipe) if isinstance(recipe, str) else dict(recipe)
        return cls(recipe=recipe, scores=unpack_scores(row.get("scores")), speedup=speed, **kwargs)

    def __repr__(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:.4f}"
        return f"Point({self.label!r}, {self.metric} {value}, {self.size_bytes:,} bytes, {self.kind})"


def _drop_columns(drop: DropInterval | None, key: str) -> dict[str, Any]:
    if drop is None:
        return {}
    return {
        "drop": drop.drop,
        f"{key}_drop": drop.drop,
        "drop_low": drop.low if math.isfinite(drop.low) else None,
        "drop_high": drop.high if math.isfinite(drop.high) else None,
        "drop_method": drop.method,
    }


def _speed_columns(speedup: RatioInterval | None) -> dict[str, Any]:
    if speedup is None:
        return {}
    return {
        "speedup": speedup.median,
        "speedup_low": speedup.low,
        "speedup_high": speedup.high,
        "speedup_confidence": speedup.confidence,
        "speed_reading": speedup.reading,
    }
