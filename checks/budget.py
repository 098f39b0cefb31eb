"""The budget model: what a compressed model may lose, and how it is read from TOML.

A team writes its budget in ``pyproject.toml``::

    [tool.squeezelab.budget]
    max_accuracy_drop = 0.01     # the drop of whatever metric is measured, absolute, in its units
    max_size_mb = 2.0            # 1 MB = 1,000,000 bytes
    min_compression = 4.0        # baseline bytes / candidate bytes
    min_speedup = 1.5            # baseline latency / candidate latency, same run

    [tool.squeezelab.budget.encoder]   # a named budget: inherits the keys above, overrides some
    max_drop = 0.002             # metric-neutral name of max_accuracy_drop (e.g. a cosine's drop)
    accuracy_gate = "strict"     # pass only when the whole confidence interval is within the limit

With ``pytest --compress-budget-compare=PATH`` (a run saved by ``--compress-budget-save``) three more
keys gate the change against that saved run: ``max_regression`` (the candidate's metric may fall by
this much, in its units), ``max_size_growth`` (fraction: 0.05 = 5 % more bytes) and
``min_speedup_ratio`` (this run's speedup / the saved speedup).

``max_accuracy_drop`` is the allowed drop (baseline minus candidate) of the
metric the check measures, in that metric's units: top-1 accuracy as a
fraction, a cosine as a cosine. ``max_drop`` / ``max_relative_drop`` are
metric-neutral names of the same two limits; setting both names of one limit
in one place is refused.

Unknown keys, wrong types and negative limits are refused with a ``BudgetError``
that names the key, the file and the valid keys.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeezelab.engine.core.arguments import as_integer, as_real
from squeezelab.engine.core.errors import SqueezeError

__all__ = [
    "Budget",
    "BudgetError",
    "BUDGET_KEYS",
    "BUDGET_ALIASES",
    "ACCURACY_GATES",
    "REGRESSION_KEYS",
    "canonical_keys",
    "valid_keys",
    "gating_keys",
    "load_budgets",
    "budgets_from_table",
]

# How the accuracy gates read the paired drop and its two-sided interval at `confidence`.
ACCURACY_GATES = {
    "measured": "fail when the measured drop is over the limit (the default)",
    "lenient": "fail only when the whole interval is over the limit",
    "strict": "pass only when the whole interval is within the limit",
}


class BudgetError(SqueezeError, ValueError):
    """A budget file or marker is malformed."""


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Limits for one gated model. ``None`` means "not gated".

    Attributes:
        max_accuracy_drop: largest allowed drop (baseline minus candidate) of the measured
            metric, absolute, in the metric's units (``max_drop`` in a file or marker).
        max_relative_accuracy_drop: the same as a fraction of the baseline's value of the
            metric (``max_relative_drop``); only for metrics whose values are positive.
        max_size_mb: largest candidate artifact, in MB of 1,000,000 bytes.
        min_compression: smallest baseline bytes / candidate bytes.
        min_speedup: smallest baseline / candidate latency, timed interleaved in one run.
        max_latency_ms: largest candidate median latency.
        require_executable: the candidate must run as real low-precision kernels.
        accuracy_gate: how the drop gates judge the paired drop: ``"measured"``
            (default: fail iff the measured drop > limit), ``"lenient"`` (fail only when
            the interval's low end > limit) or ``"strict"`` (pass only when its high end
            <= limit). Every mode shows the interval and says when it contains the limit.
        confidence: two-sided confidence of that interval, in [0.5, 0.9999] (default 0.95).
        latency_batch_size, latency_rounds, threads: how latency is measured.
        max_regression: largest allowed fall of the candidate's metric against a saved run
            (``--compress-budget-compare``), in the metric's units, judged in ``accuracy_gate`` mode.
        max_size_growth: largest allowed growth of the candidate's bytes against a saved run (0.05 = 5 %).
        min_speedup_ratio: smallest allowed speedup of this run / speedup of the saved run (same CPU only).
    """

    max_accuracy_drop: float | None = None
    max_relative_accuracy_drop: float | None = None
    max_size_mb: float | None = None
    min_compression: float | None = None
    min_speedup: float | None = None
    max_latency_ms: float | None = None
    require_executable: bool = False
    accuracy_gate: str = "measured"
    confidence: float = 0.95
    latency_batch_size: int = 1
    latency_rounds: int = 30
    threads: int = 1
    max_regression: float | None = None
    max_size_growth: float | None = None
    min_speedup_ratio: float | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # numbers stored plain: np.float32(0.5) reads and reports as 0.5
            object.__setattr__(self, f.name, _check_value(f.name, getattr(self, f.name), "Budget(...)"))

    def replace(self, source: str = "override", **changes: Any) -> Budget:
        """A copy with ``changes`` validated (unknown keys refused, naming ``source``; aliases accepted)."""
        changes = canonical_keys(changes, source)
        for key, value in changes.items():
            _check_key(key, source)
            _check_value(key, value, source)
        return dataclasses.replace(self, **changes)

    def gates(self) -> dict[str, Any]:
        """The limits that are set (``require_executable`` only when True)."""
        out = {k: getattr(self, k) for k in _LIMIT_KEYS if getattr(self, k) is not None}
        if self.require_executable:
            out["require_executable"] = True
        return out


# key -> (type, lower bound, bound inclusive?, upper bound)
_RULES: dict[str, tuple[type, float | None, bool, float | None]] = {
    "max_accuracy_drop": (float, 0.0, True, None),
    "max_relative_accuracy_drop": (float, 0.0, True, 1.0),
    "max_size_mb": (float, 0.0, False, None),
    "min_compression": (float, 0.0, False, None),
    "min_speedup": (float, 0.0, False, None),
    "max_latency_ms": (float, 0.0, False, None),
    "require_executable": (bool, None, True, None),
    "accuracy_gate": (str, None, True, None),  # one of ACCURACY_GATES
    "confidence": (float, 0.5, True, 0.9999),
    "latency_batch_size": (int, 1, True, None),
    "latency_rounds": (int, 1, True, None),
    "threads": (int, 1, True, None),
    "max_regression": (float, 0.0, True, None),
    "max_size_growth": (float, 0.0, True, None),
    "min_speedup_ratio": (float, 0.0, False, None),
}
BUDGET_KEYS = tuple(_RULES)
_SETTING_KEYS = ("accuracy_gate", "confidence", "latency_batch_size", "latency_rounds", "threads")
# Metric-neutral names: the gated figure is the drop of whatever metric is measured (a cosine, an MSE ...).
BUDGET_ALIASES = {"max_drop": "max_accuracy_drop", "max_relative_drop": "max_relative_accuracy_drop"}
_LIMIT_KEYS = (
    "max_accuracy_drop",
    "max_relative_accuracy_drop",
    "max_size_mb",
    "min_compression",
    "min_speedup",
    "max_latency_ms",
    "max_regression",
    "max_size_growth",
    "min_speedup_ratio",
)
# The limits judged against a saved run (--compress-budget-compare), not against this run's baseline.
REGRESSION_KEYS = ("max_regression", "max_size_growth", "min_speedup_ratio")


def valid_keys() -> str:
    """The valid keys in words, each alias beside its key (for error messages)."""
    alias_of = {key: alias for alias, key in BUDGET_ALIASES.items()}
    return ", ".join(f"{k} (or {alias_of[k]})" if k in alias_of else k for k in BUDGET_KEYS)


def canonical_keys(changes: dict[str, Any], source: str) -> dict[str, Any]:
    """``changes`` with aliases (``max_drop``) under their keys; both names of one limit are refused."""
    out = dict(changes)
    for alias, key in BUDGET_ALIASES.items():
        if alias not in out:
            continue
        if key in out:
            raise BudgetError(
                f"{source}: {alias} and {key} are two names of one limit (the allowed drop of the measured "
                f"metric); set one of them."
            )
        out[key] = out.pop(alias)
    return out


def _check_key(key: str, source: str) -> None:
    if key not in _RULES:
        raise BudgetError(f"{source}: unknown budget key {key!r}; valid keys: {valid_keys()}.")


def _check_value(key: str, value: Any, source: str) -> Any:
    """``value`` checked against the key's rule; numbers come back as plain ``float`` / ``int``."""
    kind = _RULES[key][0]
    if value is None and kind is float:
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise BudgetError(f"{source}: {key} = {value!r} must be true or false.")
        return value
    if kind is str:
        if not isinstance(value, str) or value not in ACCURACY_GATES:
            modes = "; ".join(f"{mode!r}: {what}" for mode, what in ACCURACY_GATES.items())
            raise BudgetError(f"{source}: {key} = {value!r} is not a gate mode; valid modes: {modes}.")
        return value
    number = as_real(value) if kind is float else as_integer(value)  # numpy scalars count; 4.0 is no integer
    if number is None:
        want = "a number" if kind is float else "an integer"
        raise BudgetError(f"{source}: {key} = {value!r} must be {want}, not {type(value).__name__}.")
    _check_range(key, number, value, source)
    return number


def _check_range(key: str, number: float, value: Any, source: str) -> None:
    """``number`` (``value`` as given, for the message) within the key's bounds."""
    _, low, inclusive, high = _RULES[key]
    if not math.isfinite(number):
        raise BudgetError(f"{source}: {key} = {value!r} must be a finite number.")
    if key == "confidence" and number == 0:
        # Before accuracy_gate existed, 0 meant "compare the measured drop": that is the default mode now.
        raise BudgetError(
            f"{source}: confidence = 0 no longer means a point comparison; the default "
            "accuracy_gate = \"measured\" already judges the measured drop. Remove the key, or set "
            "confidence in [0.5, 0.9999] (the two-sided level of the interval shown beside the drop)."
        )
    if low is not None and (number < low or (number == low and not inclusive)):
        sign = ">=" if inclusive else ">"
        raise BudgetError(f"{source}: {key} = {value!r} must be {sign} {low:g}.")
    if high is not None and number > high:
        raise BudgetError(f"{source}: {key} = {value!r} must be <= {high:g}.")


def gating_keys() -> str:
    """The keys that gate something, in words (for the message refusing a budget that gates nothing)."""
    alias_of = {key: alias for alias, key in BUDGET_ALIASES.items()}
    limits = [f"{k} (or {alias_of[k]})" if k in alias_of else k for k in _LIMIT_KEYS]
    return ", ".join(limits) + ", require_executable = true"


def _check_gates_something(budgets: dict[str, Budget], source: str, table_name: str, table: dict[str, Any]) -> None:
    """Refuse budgets none of which gates anything: every check would pass, whatever it measured."""
    if any(budget.gates() for budget in budgets.values()):
        return
    given = sorted(k for k, v in table.items() if not isinstance(v, dict))
    what = f"holds only {', '.join(given)}, which gate nothing" if given else "is empty"
    raise BudgetError(
        f"{source}: the {table_name} table {what}, so every check would pass whatever it measured. Add at "
        f"least one limit: {gating_keys()} (e.g. max_accuracy_drop = 0.01); its other keys ({', '.join(_SETTING_KEYS)}) "
        "only say how figures are measured and judged."
    )


def budgets_from_table(table: Any, source: str, table_name: str = "budget") -> dict[str, Budget]:
    """``{"default": Budget, name: Budget, ...}`` from a ``[...budget]`` table.

    Keys whose values are tables are named budgets; they inherit the default's keys. A table whose
    budgets gate nothing (empty, or only settings such as ``confidence``) is refused: it would pass
    every check silently. ``table_name`` is how messages name the table (``[tool.squeezelab.budget]``).
    """
    if not isinstance(table, dict):
        raise BudgetError(f"{source}: the budget must be a table of keys, got {type(table).__name__}.")
    top = {k: v for k, v in table.items() if not isinstance(v, dict)}
    named = {k: v for k, v in table.items() if isinstance(v, dict)}
    default = Budget().replace(source, **top)
    budgets = {"default": default}
    if "default" in named:
        raise BudgetError(f"{source}: 'default' is the name of the top-level budget; name the sub-table otherwise.")
    for name, sub in named.items():
        nested = [k for k, v in sub.items() if isinstance(v, dict)]
        if nested:
            raise BudgetError(f"{source}: budget {name!r} nests tables {nested}; one level of names only.")
        budgets[name] = default.replace(f"{source} [budget.{name}]", **sub)
    _check_gates_something(budgets, source, table_name, table)
    return budgets


def load_budgets(path: str | Path) -> dict[str, Budget]:
    """Read budgets from ``pyproject.toml`` (``[tool.squeezelab.budget]``) or a budget file.

    A budget file may hold the same ``[tool.squeezelab.budget]`` table, a
    ``[budget]`` table, or the keys at its top level.
    """
    path = Path(path)
    if not path.is_file():
        raise BudgetError(f"budget file {str(path)!r} not found; create it or pass --compress-budget=PATH.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BudgetError(f"budget file {str(path)!r} is not valid TOML: {exc}.") from exc
    tool = data.get("tool")
    squeezelab = tool.get("squeezelab") if isinstance(tool, dict) else None
    table = squeezelab.get("budget") if isinstance(squeezelab, dict) else None
    if table is None and path.name == "pyproject.toml":
        raise BudgetError(
            f"{str(path)!r} has no [tool.squeezelab.budget] table; add one (e.g. max_accuracy_drop = 0.01) "
            "or pass --compress-budget=PATH."
        )
    name = "[tool.squeezelab.budget]"
    if table is None:
        table, name = (data["budget"], "[budget]") if "budget" in data else (data, "top-level")
    return budgets_from_table(table, str(path), name)
