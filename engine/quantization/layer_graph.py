"""Which convolution or Linear layer feeds which, and through what: read from one forward pass.

Cross-layer equalisation may rescale a channel only where nothing but a per-channel,
positive-homogeneous path joins two layers, and bias correction must know where each layer's bias
lives. Module order cannot tell: a residual connection reads a layer's output a second time with a
plain ``+`` that no module hook sees, and ``torch.fx`` cannot trace models that check shapes in
``forward`` (EfficientNet-Lite). So ``trace`` runs one sample under a ``TorchFunctionMode`` that
records every torch function called, the tensors it read and the tensor it returned. A tensor is
known by ``(id, version)`` (an in-place ReLU returns the same object, one version on), and every
tensor is kept alive for the trace so an id is never reused. A tensor read by two functions is
shared: no chain passes through it.

``fold_batchnorm_`` folds each BatchNorm that reads nothing but one layer's output into that layer's
weights (ONNX Runtime's pre-processing folds it the same way before it quantizes the weights, so the
weights int8 sees are the folded ones) and leaves the BatchNorm as a pure per-channel bias add
(weight 1, mean 0, variance ``1 - eps``): module names, state-dict keys and the exported graph's
shape stay as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from squeezelab.engine.core.inputs import Inputs

__all__ = ["Call", "Step", "Chain", "LayerGraph", "trace", "fold_batchnorm_", "bias_only_batchnorm"]

Key = tuple[int, int]  # (id(tensor), tensor._version)

_RELU = {"relu", "relu_"}
_POOL = {"max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d",
         "adaptive_max_pool2d", "_adaptive_max_pool2d"}
_LAYER_CALLS = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "linear": nn.Linear}


@dataclass
class Call:
    """One torch function call of the traced forward."""

    name: str  # the function's name: 'conv2d', 'batch_norm', 'hardtanh', 'add', ...
    data: Key | None  # the first tensor argument (the data a layer or activation reads)
    reads: list[Key]  # every tensor argument (nested lists included)
    out: Key | None  # the tensor returned, if one was
    args: tuple
    kwargs: dict
    owner: str | None = None  # the module whose weight the call read (conv2d / linear / batch_norm)


@dataclass(frozen=True)
class Step:
    """A function between two layers: its kind, and the module it belongs to (a BatchNorm)."""

    kind: str  # 'batchnorm', 'relu', 'relu6', 'identity', 'pad', 'pool', 'flatten'
    module: str | None = None


@dataclass
class Chain:
    """What reads a layer's output, one function at a time, while each tensor has exactly one reader."""

    steps: list[Step] = field(default_factory=list)
    next: str | None = None  # the layer the chain ends in, or None
    stop: str = ""  # why it ended without a next layer: 'a model output', 'a shared output ...', 'joined by <function>'


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _key(t: torch.Tensor) -> Key:
    return (id(t), t._version)


class _Recorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.alive: list[torch.Tensor] = []  # keeps every tensor's id unique for the whole trace

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = list(_tensors((args, kwargs)))
        reads = [_key(t) for t in inputs]  # versions before the call: an in-place op bumps them
        first = next(_tensors(args), None)
        data = _key(first) if first is not None else None
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor):  # size / dim / shape queries are not uses of the data
            self.alive.extend([*inputs, out])
            self.calls.append(Call(getattr(func, "__name__", repr(func)), data, reads, _key(out), args, kwargs))
        return out


@dataclass
class LayerGraph:
    """The traced calls, who reads each tensor, and the layers (modules called once)."""

    calls: list[Call]
    readers: dict[Key, list[int]]  # tensor -> indices of the calls that read it
    layers: dict[str, nn.Module]  # Conv1d / Conv2d / Linear modules called exactly once, in call order
    layer_call: dict[str, int]  # layer -> index of its call
    batchnorm_calls: dict[str, int]  # BatchNorm module -> index of its call (called exactly once)
    input_shapes: dict[str, tuple[int, ...]]  # layer -> shape of its data input in the trace

    def chain(self, name: str) -> Chain:
        """Follow ``name``'s output through single readers to the next layer (see ``Step`` for the kinds)."""
        chain = Chain()
        key = self.calls[self.layer_call[name]].out
        while True:
            readers = self.readers.get(key, [])
            if len(readers) != 1:
                chain.stop = "a model output" if not readers else "a shared output (a residual or a branch)"
                return chain
            call = self.calls[readers[0]]
            if call.data != key:
                chain.stop = f"joined by {call.name}"
                return chain
            if call.owner in self.layers and self.layer_call[call.owner] == readers[0]:
                chain.next = call.owner
                return chain
            step = self._step(call, readers[0])
            if step is None:
                chain.stop = f"joined by {call.name}"
                return chain
            chain.steps.append(step)
            key = call.out

    def _step(self, call: Call, index: int) -> Step | None:
        name, args, kwargs = call.name, call.args, call.kwargs
        if name == "batch_norm" and call.owner is not None and self.batchnorm_calls.get(call.owner) == index:
            return Step("batchnorm", call.owner)
        if name in _RELU or name == "threshold" and _arg(args, kwargs, 1, "threshold") == 0 and _arg(args, kwargs, 2, "value") == 0:
            return Step("relu")
        if name in ("hardtanh", "hardtanh_", "clamp", "clip", "relu6"):
            low, high = (0.0, 6.0) if name == "relu6" else _bounds(name, args, kwargs)
            if low == 0 and high is None:
                return Step("relu")
            return Step("relu6") if (low, high) == (0, 6) else None
        if name == "dropout" and not _arg(args, kwargs, 2, "training", True):
            return Step("identity")
        if name in ("contiguous", "clone"):
            return Step("identity")
        if name == "pad" and _arg(args, kwargs, 2, "mode", "constant") == "constant" and not _arg(args, kwargs, 3, "value", 0):
            return Step("pad")
        if name in _POOL:
            return Step("pool")
        if name == "flatten" and _arg(args, kwargs, 1, "start_dim", 0) == 1:
            return Step("flatten")
        return None


def _arg(args: tuple, kwargs: dict, position: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else default


def _bounds(name: str, args: tuple, kwargs: dict) -> tuple[Any, Any]:
    if name.startswith("hardtanh"):
        return _arg(args, kwargs, 1, "min_val", -1.0), _arg(args, kwargs, 2, "max_val", 1.0)
    return _arg(args, kwargs, 1, "min"), _arg(args, kwargs, 2, "max")


def trace(model: nn.Module, inputs: Inputs) -> LayerGraph:
    """The ``LayerGraph`` of ``model`` from one forward pass on the first sample of ``inputs``."""
    owners = {id(p): name for name, module in model.named_modules() for p in module.parameters(recurse=False)}
    owners.update({id(b): name for name, module in model.named_modules() for b in module.buffers(recurse=False)})
    modules = dict(model.named_modules())
    recorder = _Recorder()
    with torch.no_grad(), recorder:
        inputs.slice(0, 1).call(model)
    readers: dict[Key, list[int]] = {}
    count: dict[str, int] = {}
    for index, call in enumerate(recorder.calls):
        for key in dict.fromkeys(call.reads):
            readers.setdefault(key, []).append(index)
        if call.name in _LAYER_CALLS or call.name == "batch_norm":
            weight = _arg(call.args, call.kwargs, 1, "weight") if call.name in _LAYER_CALLS else _arg(call.args, call.kwargs, 3, "weight")
            call.owner = owners.get(id(weight)) if isinstance(weight, torch.Tensor) else None
            if call.owner is not None:
                count[call.owner] = count.get(call.owner, 0) + 1
    layers, layer_call, batchnorms, shapes = {}, {}, {}, {}
    for index, call in enumerate(recorder.calls):
        module = modules.get(call.owner) if call.owner else None
        if module is None or count[call.owner] != 1:
            continue  # a layer called twice (shared weights) is no single link of a chain
        if call.name in _LAYER_CALLS and isinstance(module, _LAYER_CALLS[call.name]):
            layers[call.owner], layer_call[call.owner] = module, index
            shapes[call.owner] = tuple(call.args[0].shape)
        elif call.name == "batch_norm" and isinstance(module, nn.modules.batchnorm._BatchNorm):
            batchnorms[call.owner] = index
    return LayerGraph(recorder.calls, readers, layers, layer_call, batchnorms, shapes)


def _foldable(bn: nn.Module) -> bool:
    return not bn.training and bn.running_mean is not None and bn.affine


def bias_only_batchnorm(bn: nn.Module) -> bool:
    """A BatchNorm ``fold_batchnorm_`` left: weight 1, mean 0, variance ``1 - eps`` (it adds its bias)."""
    return (_foldable(bn) and bool(torch.all(bn.weight == 1)) and bool(torch.all(bn.running_mean == 0))
            and bool(torch.all(bn.running_var == 1.0 - bn.eps)))


def fold_batchnorm_(model: nn.Module, graph: LayerGraph) -> list[tuple[str, str]]:
    """Fold each BatchNorm that reads only a layer's output into the layer; the (layer, BatchNorm) pairs folded.

    The layer's weight is scaled by ``gamma / sqrt(var + eps)`` per output channel and the whole bias
    (the layer's own, if any, included) moves into the BatchNorm, which then only adds it.
    """
    modules = dict(model.named_modules())
    folded = []
    for name, layer in graph.layers.items():
        chain = graph.chain(name)
        first = chain.steps[0] if chain.steps else None
        if first is None or first.kind != "batchnorm" or not _foldable(bn := modules[first.module]):
            continue
        if bias_only_batchnorm(bn) or bn.num_features != layer.weight.shape[0]:
            continue
        with torch.no_grad():
            gain = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)  # (C_out,)
            bias = bn.bias.double() - bn.running_mean.double() * gain
            if layer.bias is not None:
                bias += layer.bias.double() * gain
                layer.bias.zero_()
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            layer.weight.copy_((layer.weight.double() * gain.view(shape)).to(layer.weight.dtype))
            bn.weight.fill_(1.0)
            bn.bias.copy_(bias.to(bn.bias.dtype))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        folded.append((name, first.module))
    return folded
