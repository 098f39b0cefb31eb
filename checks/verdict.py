"""Judging measured figures against a budget.

``judge(pair, budget)`` compares a ``PairedMetrics`` (baseline and candidate
measured together by the engine) with a ``Budget`` and returns a ``Verdict``:
one ``Figure`` per gate, each with its value, limit, headroom and outcome.
Nothing here measures; an improvement never fails a gate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from squeezelab.checks.budget import Budget
from squeezelab.engine.errors import DataError

if TYPE_CHECKING:  # importing the engine's measurement pulls in torch; the plugin stays light
    from squeezelab.engine.paired import PairedMetrics

__all__ = ["Figure", "Verdict", "judge"]

MB = 1_000_000


@dataclass(frozen=True)
class Figure:
    """One gated figure. ``headroom`` is how far the value is inside its limit (negative: over)."""

    name: str
    value: float
    limit: float
    op: str  # "<=" or ">="
    passed: bool
    headroom: float
    judged: float  # the value the gate compared: a confidence bound where there is one
    note: str = ""

    def line(self) -> str:
        """``accuracy_drop 0.0182 > max 0.0100 (over by 0.0082, n=1797, 95% bound 0.0151)``."""
        word = "max" if self.op == "<=" else "min"
        if self.name == "executable":
            state = "executable" if self.value else "SIMULATED (no low-precision kernel)"
            return f"executable: candidate is {state}; the budget requires an executable model"
        shown = _fmt(self.value)
        if self.passed:
            rel = f"{self.op} {word} {_fmt(self.limit)} (headroom {_fmt(self.headroom)}"
        else:
            bad = ">" if self.op == "<=" else "<"
            over = self.value - self.limit if self.op == "<=" else self.limit - self.value
            rel = f"{bad} {word} {_fmt(self.limit)} (over by {_fmt(over)}"
        extra = f", {self.note}" if self.note else ""
        return f"{self.name} {shown} {rel}{extra})"


def _fmt(x: float) -> str:
    return f"{x:.4f}" if abs(x) < 1000 else f"{x:,.1f}"


@dataclass(frozen=True)
class Verdict:
    """All gated figures of one check."""

    budget_name: str
    baseline: str
    candidate: str
    executable: bool
    n_samples: int
    figures: tuple[Figure, ...]
    budget: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.figures)

    def failure_message(self) -> str:
        failed = [f for f in self.figures if not f.passed]
        kind = "executable" if self.executable else "SIMULATED"
        head = (
            f"compress budget {self.budget_name!r} broken by {self.candidate} ({kind}) "
            f"vs {self.baseline}: {len(failed)} of {len(self.figures)} gate(s) failed"
        )
        return "\n".join([head, *("  " + f.line() for f in failed)])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def judge(
    pair: PairedMetrics,
    budget: Budget,
    *,
    budget_name: str = "default",
    labels: tuple[str, str] | None = None,
) -> Verdict:
    """Compare measured figures with the budget's limits.

    ``labels`` names baseline and candidate in messages (default: their recipe labels).
    """
    base, cand = pair.baseline, pair.candidate
    figures: list[Figure] = []
    pct = f"{budget.confidence * 100:g}%"

    def upper_limit(name: str, value: float, limit: float, judged: float | None = None, note: str = "") -> None:
        # The gate compares `judged` (a confidence bound where there is one); headroom follows it,
        # so its sign always agrees with the verdict.
        judged = value if judged is None else judged
        if value > limit >= judged:
            note += f"; point value over the limit but within sampling noise at {pct}"
        figures.append(Figure(name, value, limit, "<=", judged <= limit, limit - judged, judged, note))

    def lower_limit(name: str, value: float, limit: float, note: str = "") -> None:
        figures.append(Figure(name, value, limit, ">=", value >= limit, value - limit, value, note))

    gates = budget.gates()
    accuracy_gated = "max_accuracy_drop" in gates or "max_relative_accuracy_drop" in gates
    if accuracy_gated and pair.accuracy_drop is None:
        raise DataError(
            "the budget gates accuracy but there is no accuracy to judge: pass data=(x, y) to "
            "compress_budget.check(...), or Metrics measured with data."
        )
    if ("min_compression" in gates or "max_size_mb" in gates) and cand.size_bytes <= 0:
        raise DataError(f"the candidate's size is {cand.size_bytes} bytes; a shipped model has at least one byte.")
    if ("min_speedup" in gates or "max_latency_ms" in gates) and not (
        base.latency_ms > 0 and cand.latency_ms > 0 and math.isfinite(pair.speedup)
    ):
        raise DataError(
            f"latency must be positive to gate speed; got baseline {base.latency_ms!r} ms and "
            f"candidate {cand.latency_ms!r} ms."
        )
    if "max_accuracy_drop" in gates:
        bound = pair.drop_lower_bound(budget.confidence)
        note = f"n={pair.n_samples}"
        if budget.confidence > 0 and pair.drop_std_error is not None:
            note += f", {pct} bound {_fmt(bound)}"
        upper_limit("accuracy_drop", pair.accuracy_drop, gates["max_accuracy_drop"], bound, note)
    if "max_relative_accuracy_drop" in gates:
        rel = pair.relative_accuracy_drop or 0.0
        bound = pair.drop_lower_bound(budget.confidence)
        rel_bound = bound / base.accuracy if base.accuracy else rel
        note = f"n={pair.n_samples}, baseline accuracy {base.accuracy:.4f}"
        if budget.confidence > 0 and pair.drop_std_error is not None:
            note += f", {pct} bound {_fmt(rel_bound)}"
        upper_limit("relative_accuracy_drop", rel, gates["max_relative_accuracy_drop"], rel_bound, note)
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
        lower_limit(
            "speedup",
            pair.speedup,
            gates["min_speedup"],
            note=f"median of {pair.latency_rounds} interleaved rounds, batch {cand.latency_batch_size}",
        )
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
    )
