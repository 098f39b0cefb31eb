"""Forward passes that re-run only what a probe changed: fp32 activations cached at stage boundaries.

A sensitivity probe changes one layer. Everything the model computes before that layer's *stage*
(a transformer layer, a residual block: see ``find_stages``) is the same as in fp32, so it is run
once per data set and kept: ``ActivationReplay`` runs the fp32 model over the data once, keeping
each stage's output per batch, and a probe then runs the model with every stage that finished
before the changed layer's stage replaced by a module that returns its cached output. The glue
between stages (a mask computed from the inputs, a pooling after the last layer) still runs, so
the outputs are the model's own, computed from the changed layer onward.

Exact by construction, and checked: each stage's replay is compared with the full fp32 run on the
first samples when the cache is built, and a stage whose replay does not reproduce it (a module
whose caller relies on a side effect, such as an in-place edit of its input) is recomputed instead
of replayed. A layer called more than once per forward (shared weights) or outside every stage
runs the whole model.

Memory: one output per stage per sample (MiniLM at 128 tokens: about 7 MB per sample for its
19 stages). Past ``memory_budget`` bytes (default ``MEMORY_BUDGET``, 1 GiB) the outputs are spilled, batch
by batch as they are computed, to memory-mapped files in a private temporary folder: resident memory
stays about one batch's outputs, and a probe reads from disk (or the page cache) only what it uses,
since a replayed stage's output is consumed only by the first stage that runs after it.
"""

from __future__ import annotations

import itertools
import math
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezelab.engine.core.inputs import Inputs

__all__ = ["ActivationReplay", "Stage", "find_stages", "MEMORY_BUDGET"]

MEMORY_BUDGET = 1 << 30  # bytes of cached stage outputs kept in memory; past it they are spilled to disk

# Activations whose callers may rely on their in-place edit of the input: never replayed.
_INPLACE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
            nn.SiLU, nn.Mish, nn.Threshold, nn.RReLU, nn.Dropout)


@dataclass(frozen=True)
class Stage:
    """One replayable module: its name, when its one call started and ended (in module-call order)."""

    name: str
    start: int
    end: int


@dataclass
class _Call:
    count: int = 0
    start: int = -1
    end: int = -1
    tensors: bool = True  # its output is a tensor, or a tuple/list of tensors (and None)


def _is_tensors(out: Any) -> bool:
    if isinstance(out, torch.Tensor):
        return True
    return isinstance(out, (tuple, list)) and all(o is None or isinstance(o, torch.Tensor) for o in out)


def trace_calls(module: nn.Module, run: Any) -> dict[str, _Call]:
    """How many times each submodule is called during ``run()``, and when its first call started and ended."""
    calls: dict[str, _Call] = {}
    clock = [0]
    hooks = []

    def pre(name: str) -> Any:
        def hook(_m: nn.Module, _a: Any) -> None:
            call = calls.setdefault(name, _Call())
            call.count += 1
            if call.count == 1:
                call.start, clock[0] = clock[0], clock[0] + 1
        return hook

    def post(name: str) -> Any:
        def hook(_m: nn.Module, _a: Any, out: Any) -> None:
            call = calls[name]
            if call.count == 1:
                call.end, clock[0] = clock[0], clock[0] + 1
                call.tensors = _is_tensors(out)
        return hook

    for name, sub in module.named_modules():
        if name:
            hooks += [sub.register_forward_pre_hook(pre(name)), sub.register_forward_hook(post(name))]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return calls


def find_stages(model: nn.Module, calls: dict[str, _Call], layers: list[str], cap: int | None = None) -> list[Stage]:
    """The stages: the largest modules called once per forward that hold at most ``cap`` of ``layers`` and
    return tensors (default cap: an eighth of the layers, so a 6-layer transformer splits each layer into its
    attention and its feed-forward parts), in call order. Disjoint: none contains another."""
    cap = cap or max(1, math.ceil(len(layers) / 8))
    modules = dict(model.named_modules())
    chosen: list[str] = []
    for name in modules:  # pre-order: a parent is seen before its children
        call = calls.get(name)
        if not name or call is None or call.count != 1 or not call.tensors or isinstance(modules[name], _INPLACE):
            continue
        if any(name.startswith(c + ".") for c in chosen):
            continue  # inside a stage already
        held = sum(1 for layer in layers if layer == name or layer.startswith(name + "."))
        if held <= cap:
            chosen.append(name)
    return sorted((Stage(n, calls[n].start, calls[n].end) for n in chosen), key=lambda s: s.start)


class _Replayed(nn.Module):
    """Stands in for a stage: returns its cached output for the current batch.

    The cached tensors themselves, not copies (copying MiniLM's stages costs a sixth of a probe): a caller
    that edits one in place computes what it computed on the module's own output, and ``ActivationReplay``
    sees the edit (the tensor's version counter), refills the cache and copies that stage's output from then on.
    """

    def __init__(self, outputs: list[Any], cursor: list[int], copy: bool) -> None:
        super().__init__()
        self._outputs, self._cursor, self._copy = outputs, cursor, copy

    def forward(self, *_args: Any, **_kwargs: Any) -> Any:
        out = self._outputs[self._cursor[0]]
        if not self._copy:
            return out
        if isinstance(out, torch.Tensor):
            return out.clone()
        return type(out)(o.clone() if isinstance(o, torch.Tensor) else o for o in out)


def _versions(outputs: list[Any]) -> list[tuple[int, ...]]:
    """The version counters of each cached output's tensors (an in-place edit bumps them)."""
    return [tuple(t._version for t in ((out,) if isinstance(out, torch.Tensor) else out) if isinstance(t, torch.Tensor))
            for out in outputs]


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, child = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), child


class ActivationReplay:
    """The fp32 run of ``runner`` (a ``SelectedOutput`` over ``model``) on ``inputs``, kept at stage boundaries.

    ``outputs(layer)`` runs the model as it is now (the caller has changed ``layer``'s weight in place)
    from ``layer``'s stage onward, batch by batch, and returns the selected output of every sample; the
    caller puts the weight back and calls ``refresh()``.
    ``batches``: the sample ranges, in the evaluation's own batch size (the same batches as a full run).
    """

    def __init__(self, model: nn.Module, runner: nn.Module, prepare: Any, inputs: Inputs, layers: list[str],
                 batch_size: int, cap: int | None = None, check_samples: int = 2,
                 memory_budget: int | None = None) -> None:
        self.model, self.runner, self.prepare = model, runner, prepare
        self.memory_budget = MEMORY_BUDGET if memory_budget is None else memory_budget
        self.spilled = False  # whether the cached outputs live in memory-mapped files (see the module docstring)
        self._folder: str | None = None
        self._names = itertools.count()
        n = len(inputs)
        self.batches = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
        self.inputs = inputs
        first = inputs.slice(0, min(check_samples, n))
        self.copied: set[str] = set()  # stages whose replayed output a caller edited in place: copied from then on
        self.edited: set[str] = set()  # ... edited by the last run: refresh() refills the cache
        calls = trace_calls(model, lambda: self._forward(first))
        stages = find_stages(model, calls, layers, cap)
        stages = self._checked(stages, first)
        self.stages = stages
        self.layer_start = {layer: calls[layer].start for layer in layers if layer in calls and calls[layer].count == 1}
        self._cursor = [0]
        self.fp32 = self._fill()  # (N, ...) the selected fp32 output, from this PyTorch run

    def _forward(self, inputs: Inputs) -> torch.Tensor:
        with torch.no_grad():
            return self.runner(*self.prepare(inputs))

    def _fill(self) -> np.ndarray:
        """Run fp32 once over every batch, keeping each stage's output (and its tensors' versions)."""
        self._cache: dict[str, list[Any]] = {s.name: [] for s in self.stages}
        hooks = [
            self.model.get_submodule(s.name).register_forward_hook(
                lambda _m, _a, out, name=s.name: self._cache[name].append(_detached(out)))
            for s in self.stages
        ]
        outs = []
        try:
            for index, (a, b) in enumerate(self.batches):
                outs.append(self._forward(self.inputs.slice(a, b)))
                if index == 0:  # the first batch's outputs, times the batches: what the whole cache would hold
                    first = sum(_nbytes(outputs[0]) for outputs in self._cache.values())
                    self.spilled = first * len(self.batches) > self.memory_budget
                if self.spilled:
                    for outputs in self._cache.values():
                        outputs[-1] = self._spill(outputs[-1])
        finally:
            for h in hooks:
                h.remove()
        self._versions = {name: _versions(outputs) for name, outputs in self._cache.items()}
        return np.concatenate([o.detach().float().numpy() for o in outs], axis=0)

    def _spill(self, out: Any) -> Any:
        """``out`` with each tensor replaced by one over a memory-mapped file (copy-on-write: an in-place edit
        stays in memory and bumps the version counter, as on a tensor in memory)."""
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="squeezelab_replay_")
            weakref.finalize(self, shutil.rmtree, self._folder, True)  # the files go with the replay

        def one(t: Any) -> Any:
            if not isinstance(t, torch.Tensor) or t.dtype == torch.bfloat16:  # numpy has no bfloat16: kept in memory
                return t
            path = f"{self._folder}/{next(self._names)}.npy"
            np.save(path, t.contiguous().numpy())
            return torch.from_numpy(np.load(path, mmap_mode="c"))

        return one(out) if isinstance(out, torch.Tensor) else type(out)(one(o) for o in out)

    def _checked(self, stages: list[Stage], first: Inputs) -> list[Stage]:
        """The stages whose replay reproduces the fp32 output on ``first`` exactly (see the module docstring)."""
        kept: dict[str, list[Any]] = {s.name: [] for s in stages}
        hooks = [self.model.get_submodule(s.name).register_forward_hook(
            lambda _m, _a, out, name=s.name: kept[name].append(_detached(out))) for s in stages]
        try:
            want = self._forward(first)
        finally:
            for h in hooks:
                h.remove()
        good = []
        for stage in stages:
            with self._swapped([stage], {stage.name: kept[stage.name]}):
                got = self._forward(first)
            if torch.equal(got, want):
                good.append(stage)
        return good

    @contextmanager
    def _swapped(self, stages: list[Stage], cache: dict[str, list[Any]]) -> Iterator[None]:
        """``stages`` replaced in the model by their cached outputs, put back afterwards."""
        cursor = [0]
        self._cursor = cursor
        originals = []
        try:
            for stage in stages:
                parent, child = _parent(self.model, stage.name)
                originals.append((parent, child, getattr(parent, child)))
                setattr(parent, child, _Replayed(cache[stage.name], cursor, copy=stage.name in self.copied))
            yield
        finally:
            for parent, child, module in reversed(originals):
                setattr(parent, child, module)

    def replayed_before(self, layer: str) -> list[Stage]:
        """The stages that finish before ``layer`` is called (none when ``layer`` is called more than once)."""
        start = self.layer_start.get(layer)
        if start is None:
            return []
        return [s for s in self.stages if s.end < start]

    def outputs(self, layer: str) -> np.ndarray:
        """The selected output on every sample, the model run from ``layer``'s stage onward."""
        outs = []
        replayed = self.replayed_before(layer)
        with self._swapped(replayed, self._cache):
            for index, (a, b) in enumerate(self.batches):
                self._cursor[0] = index
                outs.append(self._forward(self.inputs.slice(a, b)).detach().float().numpy())
        # this run computed what the model computes; an edited cache is no longer fp32's: refresh() refills it
        self.edited |= {s.name for s in replayed if _versions(self._cache[s.name]) != self._versions[s.name]}
        return np.concatenate(outs, axis=0)

    def refresh(self) -> None:
        """Refill the cache if a run edited a replayed output in place (call with the model back in fp32)."""
        if self.edited:
            self.copied |= self.edited
            self.edited = set()
            self._fill()

    def share_replayed(self, layer: str) -> float:
        """The fraction of stages a probe of ``layer`` replays (0: it runs the whole model)."""
        return len(self.replayed_before(layer)) / len(self.stages) if self.stages else 0.0


def _nbytes(out: Any) -> int:
    tensors = (out,) if isinstance(out, torch.Tensor) else out
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _detached(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.detach()
    return type(out)(o.detach() if isinstance(o, torch.Tensor) else o for o in out)
