"""``sweep(model, data, bits=[...], sparsity=[...]) -> Sweep``: many recipes, measured and cached.

Which recipes is one ``Grid`` (``sweep(model, data, grid=Grid(bits=[8, 4]))``), or its fields as keywords.

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
from dataclasses import dataclass
from typing import Any

from torch import nn

from squeezelab.engine.core.arguments import check_executor
from squeezelab.engine.core.errors import CacheError, SqueezeError
from squeezelab.engine.core.runtimes import Int8Static
from squeezelab.engine.explore.evaluation import Evaluator, PointTask, asked_sparsity, check_calibration, run_point
from squeezelab.engine.explore.grid import (Grid, GridPoint, NotApplicable, build_grid, check_layer_names, grid_recipe,
                                            weight_quantizer)
from squeezelab.engine.explore.overrides import with_overrides
from squeezelab.engine.explore.pareto import SweepTable
from squeezelab.engine.measurement.point import Point, Settings
from squeezelab.engine.runtime.onnx_files import is_onnx_model, load_onnx_model

__all__ = ["sweep", "Sweep", "Grid", "SweepInterrupted", "SweepError", "check_layer_names", "grid_recipe", "weight_quantizer"]


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


class Sweep(SweepTable):
    """The measured grid: ``table`` (a pandas DataFrame) and its Pareto frontier.

    ``table`` has one row per recipe, the fp32 baseline first (``is_baseline``); its
    columns are ``SweepTable``'s: the metric's ``value`` and paired ``drop`` (with its
    interval, and under the metric's own name: ``accuracy`` / ``accuracy_drop`` for top-1),
    ``size_bytes``, ``compression``, ``latency_ms`` and ``speedup`` with its interval (a
    reading of "faster" or "slower" needs the whole interval on one side of 1.0), ``cached``
    and ``recipe`` (JSON; ``Sweep.recipe(i)`` rebuilds it). ``points`` holds the ``Point`` objects.
    """


def _check_target(model: Any, evaluator: Evaluator | None) -> nn.Module | bytes | None:
    """What the grid is checked against: the PyTorch model or the ONNX file's bytes (None: neither; the
    Evaluator then says what was passed)."""
    if evaluator is not None:
        return evaluator.model
    if isinstance(model, nn.Module):
        return model

    return load_onnx_model(model)[0] if is_onnx_model(model) else None


def sweep(
    model: Any,
    data: Any,
    settings: Settings | None = None,
    *,
    grid: Grid | None = None,
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
        settings: how to measure (``Settings``: metric, output, timing; default ``Settings.for_sweeps()``,
            20 timing rounds), the argument after the data, as in ``measure``.
        grid: which recipes (``Grid``: ``bits``, ``sparsity``, ``quantization``, ``pruning``, ``runtime``,
            ``recipes``); None: ``Grid()``, the widths and sparsities that apply to the model. Left to their
            defaults with an ONNX file and no ``runtime``, ``bits`` and ``sparsity`` give no grid: ONNX Runtime's
            recipes that apply are measured instead (``engine.explore.grid``), and ``Sweep.left_out`` says what
            was left out and why. A point asked for that cannot run on the model (dynamic int8 on a CNN,
            simulated widths of an ONNX file) is refused before any work.
        **overrides: any ``Grid`` field (``bits=[8, 4]``, ``runtime="int8-dynamic"``, ...) applied on top of
            ``grid``, or any ``Settings`` field (``metric=``, ``rounds=``, ...) applied on top of ``settings``;
            another keyword is a ``ConfigError`` that names both lists.
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
    grid, measuring = with_overrides("sweep", Grid, grid, overrides, keyword="grid", given_as_settings=settings)
    calibrated = (calibration_data if evaluator is None else evaluator.calibration) is not None
    points, left_out = build_grid(_check_target(model, evaluator), grid, calibrated=calibrated)
    check_executor(executor)
    if evaluator is None:  # before the cache folder is made
        for recipe, _ in points:
            check_calibration(recipe, calibration_data)
    ev = evaluator or Evaluator(model, data, settings, calibration_data=calibration_data, cache=cache, **measuring)
    for recipe, _ in points:  # a misspelt layer name or missing calibration fails now, not after the other points ran
        check_layer_names(ev.model, recipe)
        ev.check_calibration(recipe)
    return _SweepRun(ev, points, _RunOptions(executor=executor, deadline=deadline, progress=progress), left_out).run()


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

    def __init__(self, ev: Evaluator, grid: list[GridPoint], options: _RunOptions, left_out: list[NotApplicable]) -> None:
        self.ev, self.grid, self.options, self.left_out = ev, grid, options, left_out
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
                                 misses=len(self.todo), complete=len(self.done) == len(self.grid),
                                 left_out=self.left_out, calibration=self._calibration_note())

    def _calibration_note(self) -> str | None:
        """Where static int8 points were calibrated, for the table and the report; None without such points."""
        calibration = self.ev.calibration
        if calibration is None or not any(isinstance(r.runtime, Int8Static) for r, _ in self.grid):
            return None
        return (f"static int8 calibrated on the {len(calibration)} calibration_data inputs, kept apart from the "
                f"{len(self.ev.samples)} samples evaluated")

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
