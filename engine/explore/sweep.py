"""``sweep(model, data, bits=[...], sparsity=[...]) -> Sweep``: many recipes, measured and cached.

Every grid point is a ``Recipe`` built by ``grid_recipe`` (the JupyterLab
explorer builds its slider positions the same way, so a slider landing on a
swept point is a cache hit). Points are measured by an ``Evaluator``: already
cached ones cost a file read; the rest are handed to ``executor`` (default:
this process, one after the other) and stored the moment each finishes.

Ctrl-C (or a killed process) loses at most the points still running: the
next call with the same arguments reads the finished ones from the cache and
computes only the rest. In this process, Ctrl-C raises ``SweepInterrupted``
(a ``KeyboardInterrupt``) carrying the partial ``Sweep``.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from squeezelab.engine.core import choices
from squeezelab.engine.core.arguments import check_executor, fraction, grid_lists, scalar, width
from squeezelab.engine.core.errors import CacheError, ConfigError, SqueezeError
from squeezelab.engine.explore.evaluation import Evaluator, PointTask, asked_sparsity, check_calibration, run_point
from squeezelab.engine.measurement.point import Point, Settings
from squeezelab.engine.explore.pareto import SweepTable
from squeezelab.engine.core.pruners import ChannelPruning, LayerPruning, MagnitudePruning, NMPruning, PruningConfig
from squeezelab.engine.core.quantizers import FixedPoint, Float16, LinearQuantization, QuantizationConfig
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.runtimes import Int8Dynamic, Int8Static, Onnx, Runtime, WeightOnly

__all__ = ["sweep", "Sweep", "SweepInterrupted", "SweepError", "check_layer_names", "grid_recipe", "weight_quantizer"]


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``sweep``: ``.sweep`` holds the finished points (all of them cached)."""

    def __init__(self, partial: Sweep, done: int, total: int) -> None:
        super().__init__(
            f"sweep interrupted: {done} of {total} points finished and cached; "
            "call sweep() again with the same arguments to resume."
        )
        self.sweep = partial


class SweepError(SqueezeError, RuntimeError):
    """Some points failed: ``.failures`` maps their labels to the errors; ``.sweep`` holds the rest (cached)."""

    def __init__(self, partial: Sweep, failures: dict[str, BaseException], total: int) -> None:
        first = "; ".join(f"{label}: {type(e).__name__}: {e}" for label, e in list(failures.items())[:3])
        super().__init__(
            f"{len(failures)} of {total} sweep points failed ({first}). The {total - len(failures)} that "
            "succeeded are cached and in .sweep; fix or drop the failing recipes and run again."
        )
        self.sweep = partial
        self.failures = failures


def weight_quantizer(quantization: str | QuantizationConfig, *, width_based: bool = False) -> QuantizationConfig:
    """The quantizer a name (see ``squeezelab.engine.core.choices.QUANTIZATIONS``) or config stands for.

    ``width_based=True`` refuses float16, whose width cannot be chosen (sensitivity, search).
    """
    template = choices.resolve("quantization", quantization)
    if width_based and isinstance(template, Float16):
        raise ConfigError(
            f"quantization={quantization!r} has no width to choose; use a width-based quantizer "
            f"({', '.join(k for k in choices.names('quantization') if k != 'float16')})."
        )
    return template


def _quantizer(quantization: str | QuantizationConfig, bits: int) -> QuantizationConfig | None:
    template = weight_quantizer(quantization)
    if bits == 32:
        return None
    if isinstance(template, Float16):
        if bits != 16:
            raise ConfigError(f"float16 stores 16 bits; bits={bits} does not apply (use bits=[16] or 32).")
        return template
    if bits == 16 and not isinstance(template, (LinearQuantization, FixedPoint)):
        raise ConfigError(f"{type(template).__name__} goes up to 8 bits; bits=16 does not apply.")
    return template.with_bits(bits)


def _pruner(pruning: str | PruningConfig, sparsity: float) -> PruningConfig | None:
    if sparsity == 0:
        return None
    template = choices.resolve("pruning", pruning)
    return _pruning_at(template, sparsity)


def _pruning_at(template: PruningConfig, sparsity: float) -> PruningConfig:
    """``template`` pruning ``sparsity`` of what it prunes (weights, channels, blocks, N of every M)."""
    if isinstance(template, (MagnitudePruning, ChannelPruning)):
        return template.with_amount(sparsity)
    if isinstance(template, LayerPruning):  # the grid's amount is the fraction of removable blocks dropped
        return dataclasses.replace(template, keep=None, ratio=sparsity)
    if isinstance(template, NMPruning):  # no continuous amount: the grid's sparsity picks N of M
        m = template.m
        n = round((1 - sparsity) * m)
        if not 1 <= n <= m or abs((m - n) / m - sparsity) > 1e-9:
            allowed = [f"{(m - k) / m:g}" for k in range(1, m)]
            raise ConfigError(f"N:M pruning with m={m} gives sparsity {', '.join(allowed)}; got {sparsity}.")
        return NMPruning(n=n, m=m)
    raise choices.unknown_choice("pruning", template)


def grid_recipe(
    bits: int,
    sparsity: float = 0.0,
    *,
    quantization: str | QuantizationConfig = "linear-symmetric",
    pruning: str | PruningConfig = "magnitude",
    runtime: str | Runtime = "simulated",
) -> Recipe:
    """The recipe at one grid point: weights at ``bits`` (32 = float), ``sparsity`` pruned.

    With an int8 runtime the quantizer is ONNX Runtime's, so ``bits`` must be 8
    (or 32: the float model, pruned, as an ONNX model); with ``WeightOnly`` 4 or 8
    (a ``WeightOnly`` config given as the runtime is a template: its bits are replaced). Float weights with the
    simulated runtime are measured as an ONNX model too, so every float point
    is executable.

    Examples:
        >>> grid_recipe(4, 0.5).label
        'magnitude50%-layer + linear4-sym-perchannel (simulated)'
        >>> grid_recipe(8, 0.0, runtime="int8-dynamic").label
        'int8-dynamic'
        >>> grid_recipe(4, 0.0, runtime="weight-only").label
        'weightonly4-b32-rtn'
    """
    # values read back from a table arrive as numpy scalars; recipes hold plain numbers (JSON, TOML)
    bits, sparsity = width(scalar(bits)), fraction(scalar(sparsity))
    rt = choices.resolve("runtime", runtime)
    prune = _pruner(pruning, sparsity)
    if isinstance(rt, (Int8Dynamic, Int8Static)):
        if bits not in (8, 32):
            raise ConfigError(
                f"bits={bits} with runtime {type(rt).__name__}: ONNX Runtime's int8 path stores 8 bits. "
                "Use bits 8 (or 32 for the float model), or runtime='simulated' for other widths."
            )
        return Recipe(pruning=prune, runtime=rt if bits == 8 else Onnx())
    if isinstance(rt, WeightOnly):
        if bits not in (4, 8, 32):
            raise ConfigError(
                f"bits={bits} with runtime WeightOnly: ONNX Runtime's MatMulNBits stores 4 or 8 bits. "
                "Use bits 4 or 8 (or 32 for the float model), or runtime='simulated' for other widths."
            )
        return Recipe(pruning=prune, runtime=dataclasses.replace(rt, bits=bits) if bits != 32 else Onnx())
    quant = _quantizer(quantization, bits)
    if quant is None or isinstance(quant, Float16):  # float32 and float16 run for real in ORT
        return Recipe(pruning=prune, quantization=quant, runtime=Onnx())
    return Recipe(pruning=prune, quantization=quant, runtime=rt)


def check_layer_names(model: nn.Module | bytes, recipe: Recipe) -> None:
    """Raise ``ConfigError`` when ``recipe.layers`` names a layer without weights in ``model``."""
    if not recipe.layers:
        return
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{recipe.label}: per-layer settings need the PyTorch model; an ONNX file has no layers to set.")
    from squeezelab.engine.core.layers import chosen_layers

    known = [name for name, _ in chosen_layers(model)]
    if isinstance(recipe.pruning, ChannelPruning):  # an attention module's setting is its fraction of heads
        from squeezelab.engine.pruning.attention import attention_modules

        known += list(attention_modules(model))
    unknown = sorted({item.name for item in recipe.layers} - set(known))
    if unknown:
        raise ConfigError(
            f"{recipe.label}: per-layer settings name {unknown}, which are not Linear/Conv layers of "
            f"{type(model).__name__}; its layers are {known}."
        )


class Sweep(SweepTable):
    """The measured grid: ``table`` (a pandas DataFrame) and its Pareto frontier.

    ``table`` has one row per recipe, the fp32 baseline first (``is_baseline``); its
    columns are ``SweepTable``'s: the metric's ``value`` and paired ``drop`` (with its
    interval, and under the metric's own name: ``accuracy`` / ``accuracy_drop`` for top-1),
    ``size_bytes``, ``compression``, ``latency_ms`` and ``speedup`` with its interval (a
    reading of "faster" or "slower" needs the whole interval on one side of 1.0), ``cached``
    and ``recipe`` (JSON; ``Sweep.recipe(i)`` rebuilds it). ``points`` holds the ``Point`` objects.
    """


# One grid point: its recipe and the coordinates the table shows for it (bits, sparsity).
GridPoint = tuple[Recipe, dict[str, Any]]


def _recipe_list(recipes: Any) -> tuple[Recipe, ...]:
    try:
        items = tuple(recipes)
    except TypeError:
        raise ConfigError(f"recipes={recipes!r}; pass a Recipe or a list of Recipe objects.") from None
    for recipe in items:
        if not isinstance(recipe, Recipe):
            raise ConfigError(f"recipes must hold Recipe objects, got {type(recipe).__name__}.")
    return items


def _grid(bits: Any, sparsity: Any, recipes: Any, quantization: Any, pruning: Any, runtime: Any) -> list[GridPoint]:
    """The checked grid: the fp32 baseline first, then every (bits, sparsity) recipe, then ``recipes``;
    each recipe once (grid points that name the same recipe are measured once)."""
    recipes = (recipes,) if isinstance(recipes, Recipe) else _recipe_list(recipes)
    bits, sparsity = grid_lists(bits, sparsity, layout="product", recipes=bool(recipes))
    points: list[GridPoint] = [(Recipe(), {"bits": 32, "sparsity": 0.0})]
    seen = {Recipe()}
    for b in bits:
        for s in sparsity:
            recipe = grid_recipe(b, s, quantization=quantization, pruning=pruning, runtime=runtime)
            if recipe not in seen:
                seen.add(recipe)
                points.append((recipe, {"bits": b, "sparsity": float(s)}))
    for recipe in recipes:
        if recipe not in seen:
            seen.add(recipe)
            points.append((recipe, {"bits": recipe.bits, "sparsity": asked_sparsity(recipe)}))
    return points


def sweep(
    model: Any,
    data: Any,
    settings: Settings | None = None,
    *,
    bits: int | Sequence[int] = (8, 6, 4, 3, 2),
    sparsity: float | Sequence[float] = (0.0, 0.5, 0.75, 0.9),
    quantization: str | QuantizationConfig = "linear-symmetric",
    pruning: str | PruningConfig = "magnitude",
    runtime: str | Runtime = "simulated",
    recipes: Recipe | Iterable[Recipe] = (),
    calibration_data: Any = None,
    executor: cf.Executor | None = None,
    cache: Any = True,
    progress: bool = True,
    evaluator: Evaluator | None = None,
    deadline: float | None = None,
    **overrides: Any,
) -> Sweep:
    """Measure every (bits, sparsity) combination of ``model`` on ``data``, plus the fp32 baseline.

    Args:
        model: the PyTorch model (never changed), or an ONNX file (int8 / float runtimes only).
        data: evaluation data, ``(inputs, targets)`` in any form (targets ``None``: fidelity to
            the uncompressed model); held-out data, not the training set.
        settings: how to measure (``Settings``: metric, output, timing); keyword overrides such
            as ``metric=`` or ``rounds=`` change single fields (20 timing rounds by default).
        bits: weight widths (2..8, 16; 32 = float weights); one width means a list of one.
        sparsity: fractions pruned, in [0, 1); one value means a list of one. ``bits`` and
            ``sparsity`` both need values, or both be empty when ``recipes`` gives the points.
        quantization: ``"linear-symmetric"``, ``"linear-affine"``, ``"linear-pertensor"``,
            ``"kmeans"``, ``"fixed-point"``, ``"float16"``, or a config used as a template.
        pruning: ``"magnitude"``, ``"structured"`` (channels and neurons removed), ``"structured-heads"``
            (attention heads too), ``"layers"`` (whole blocks removed) or ``"n:m"``, or a config.
        runtime: ``"simulated"`` (packed codes: pruning does not shrink the file),
            ``"simulated-huffman"`` (Deep-Compression coding: zeros and frequent codes cost
            less), ``"int8-dynamic"``, ``"int8-static"``, ``"weight-only"`` (ONNX Runtime's
            4/8-bit ``MatMulNBits``: bits 4 and 8), or a Runtime config. The names of these three
            arguments, and the old spellings still read, are ``squeezelab.engine.core.choices``'s table.
        recipes: more recipes (or one) to measure alongside the grid.
        calibration_data: inputs that calibrate static int8 (``runtime="int8-static"``, ``Int8Static``
            recipes), kept apart from ``data``; without them such points are refused before any work
            (``CalibrationError``): a sweep never calibrates on the samples it scores.
        executor: any ``concurrent.futures.Executor`` (a process pool, Dask's
            ``Client.get_executor()``); None runs the points here, one by one.
        cache: True (``~/.cache/squeezelab`` or ``$SQUEEZELAB_CACHE``), False, a folder, or a ``ResultCache``.
        progress: show a tqdm bar (a notebook bar in Jupyter).
        evaluator: reuse an ``Evaluator`` (its model, data, settings and cache win).
        deadline: a ``time.monotonic()`` value after which no new point is started; the
            result is then marked incomplete (``Sweep.complete``) and holds the points measured.

    Raises:
        ConfigError: bad arguments, before any work.
        CalibrationError: a static int8 point and no ``calibration_data``, before any work.
        CacheError: the cache folder cannot be written (before any work), or a point could not be
            stored (disk full): ``.sweep`` then holds the points finished so far.
        SweepError: some points failed; ``.sweep`` holds the others.
    """
    grid = _grid(bits, sparsity, recipes, quantization, pruning, runtime)
    check_executor(executor)
    if evaluator is None:  # before the cache folder is made
        for recipe, _ in grid:
            check_calibration(recipe, calibration_data)
    ev = evaluator or Evaluator(model, data, settings, calibration_data=calibration_data, cache=cache, **overrides)
    for recipe, _ in grid:  # a misspelt layer name or missing calibration fails now, not after the other points ran
        check_layer_names(ev.model, recipe)
        ev.check_calibration(recipe)
    return _SweepRun(ev, grid, _RunOptions(executor=executor, deadline=deadline, progress=progress)).run()


@dataclass(frozen=True)
class _RunOptions:
    """How a sweep's points run: where (``executor``, None: here, one by one), until when, with a bar or not."""

    executor: cf.Executor | None
    deadline: float | None
    progress: bool

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


class _SweepRun:
    """One call's points: those already done (cached or measured), those to measure, the failures.

    Every measured point is stored the moment it finishes, so an interruption loses only the
    points still running.
    """

    def __init__(self, ev: Evaluator, grid: list[GridPoint], options: _RunOptions) -> None:
        self.ev, self.grid, self.options = ev, grid, options
        self.done: dict[int, Point] = {i: hit for i, (recipe, _) in enumerate(grid) if (hit := ev.cached(recipe)) is not None}
        self.todo = [i for i in range(len(grid)) if i not in self.done]
        self.failures: dict[str, BaseException] = {}
        self.pending: dict[cf.Future, int] = {}
        self.bar: Any = None

    def run(self) -> Sweep:
        """Measure the points not cached; the table of all, or one of the errors ``sweep`` documents."""
        from tqdm.auto import tqdm

        total, cached = len(self.grid), len(self.grid) - len(self.todo)
        self.bar = tqdm(total=total, initial=cached, desc="sweep", disable=not self.options.progress, unit="point")
        try:
            if self.options.executor is None:
                self._run_here()
            else:
                self._run_on(self.options.executor)
        except KeyboardInterrupt:
            self._keep_finished_cancel_rest()
            raise SweepInterrupted(self.table(), len(self.done), total) from None
        except CacheError as exc:  # storing failed: stop, hand back what was measured
            for future in self.pending:
                future.cancel()
            exc.sweep = self.table()
            raise
        finally:
            self.bar.close()
        if self.failures:
            raise SweepError(self.table(), self.failures, total)
        return self.table()

    def table(self) -> Sweep:
        """The points done so far, as a ``Sweep``."""
        # Relative columns need the baseline: without it (interrupted before it finished) no row is shown.
        order = sorted(self.done) if 0 in self.done else []
        extra = [{"sparsity": asked_sparsity(self.grid[i][0]), **self.grid[i][1]} for i in order]
        return Sweep.from_points([self.done[i] for i in order], extra, hits=len(self.grid) - len(self.todo),
                                 misses=len(self.todo), complete=len(self.done) == len(self.grid))

    def _task(self, i: int) -> PointTask:
        task = self.ev.task(self.grid[i][0])
        # N worker processes share the cores: one PyTorch thread each, or they oversubscribe them N times.
        return task if self.options.executor is None else dataclasses.replace(task, worker_threads=1)

    def _keep(self, i: int, outcome: Point | BaseException) -> None:
        recipe, _ = self.grid[i]
        if isinstance(outcome, BaseException):
            self.failures[recipe.label] = outcome
        else:
            try:
                self.done[i] = self.ev.store(recipe, outcome)
            except CacheError:  # measured but not stored (disk full): still one of the finished points
                self.done[i] = outcome
                raise
        self.bar.update()

    def _run_here(self) -> None:
        for i in self.todo:
            if i > 0 and self.options.past_deadline():
                break  # (the baseline is measured whatever the deadline: every other figure needs it)
            try:
                outcome: Point | BaseException = run_point(self._task(i), self.ev.model_key)
            except Exception as exc:  # one bad point must not cost the others
                outcome = exc
            self._keep(i, outcome)

    def _run_on(self, executor: cf.Executor) -> None:
        self.pending = {executor.submit(run_point, self._task(i), self.ev.model_key): i for i in self.todo}
        for future in cf.as_completed(self.pending):
            i = self.pending.pop(future)
            self._keep(i, future.exception() or future.result())
            if self.options.past_deadline():
                for rest in self.pending:
                    rest.cancel()
                break

    def _keep_finished_cancel_rest(self) -> None:
        """After Ctrl-C: keep the points that finished meanwhile, cancel the others."""
        for future, i in list(self.pending.items()):
            if future.done() and not future.cancelled() and future.exception() is None:
                self._keep(i, future.result())
            else:
                future.cancel()
