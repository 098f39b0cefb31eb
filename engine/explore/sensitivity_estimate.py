"""A fast *estimate* of per-layer sensitivity: each layer's output error, carried to the model's output.

Changing one layer's weight by ``dW`` changes its output by ``dz = dW x`` on its cached fp32 inputs
``x``, and the model's output by about ``J dz`` (``J``: the Jacobian from that layer's output to the
model's). For unit-norm outputs (a sentence embedding) ``1 - cosine ~ ||J dz||^2 / 2``; for other
outputs the same quantity, divided by ``||y||^2``, is the relative squared error. ``||J dz||^2`` is
estimated without forming ``J``: for random directions ``v`` (one per sample, Gaussian),
``E[(v . J dz)^2] = ||J dz||^2``, and ``J^T v`` at *every* layer's output comes from one backward pass.
So ``directions`` backward passes over ``samples`` samples give every layer's and every value's
estimate (Hutchinson's trick, as in Hessian-trace sensitivity: HAWQ-V2, Dong et al. 2020).

What it is: a second-order estimate, in units of ``1 - cosine`` of the output to fp32, on a few
samples, with Monte-Carlo noise (about ``sqrt(2 / (samples * directions))`` relative). What it is
not: a measurement. Tables label every estimated row (``estimated=True``) and ``layer_sensitivity``
verifies the top rows with exact probes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from squeezelab.engine.core.copying import copy_model
from squeezelab.engine.core.examples import probe_example
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.outputs import OutputSelector, SelectedOutput
from squeezelab.engine.core.quantizers import QuantizationConfig
from squeezelab.engine.pruning.prune import bake_masks_, magnitude_masks
from squeezelab.engine.quantization.encoding import encode_tensor

__all__ = ["estimate_sensitivity", "ESTIMATE_NOTE"]

ESTIMATE_NOTE = (
    "estimate, not measured: ||J dz||^2 / (2 ||y||^2), the layer's output error on cached fp32 inputs carried to the "
    "model's output by random-projection backward passes (about 1 - cosine to fp32); rows with estimated=False were "
    "measured by exact probes"
)


def _changed(weight: torch.Tensor, axis: str, value: float, quantizer: QuantizationConfig) -> torch.Tensor:
    """The weight a probe gives the layer (as ``layer_probes.LayerProbes`` does)."""
    if axis == "bits":
        return encode_tensor(weight, quantizer.with_bits(int(value))).decode().to(weight.dtype)
    (mask,) = magnitude_masks([weight], float(value), "layer")
    return weight * mask.to(weight.dtype)


class _Recorder:
    """Each layer's inputs (forward) and the gradient reaching its output (backward), per call."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.inputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
        self.grads: dict[str, list[list[torch.Tensor]]] = {name: [] for name in layers}  # [call][direction]
        self.hooks = [model.get_submodule(name).register_forward_hook(self._forward(name)) for name in layers]

    def _forward(self, name: str) -> Any:
        def hook(_m: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            self.inputs[name].append(args[0].detach())
            slot: list[torch.Tensor] = []
            self.grads[name].append(slot)
            if not out.requires_grad:  # nothing before it is tracked (frozen weights, integer inputs): start here,
                out = out.detach().requires_grad_(True) * 1.0  # as a non-leaf, which in-place ops downstream may edit
            out.register_hook(lambda g, slot=slot: slot.append(g.detach()))
            return out
        return hook

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


def _per_sample(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` summed to one value per sample (dim 0 is the batch)."""
    return x.reshape(n, -1).sum(dim=1)


def estimate_sensitivity(
    model: nn.Module, inputs: Inputs, output: OutputSelector, layers: Sequence[str], probes: Sequence[tuple[str, str, float]],
    quantizer: QuantizationConfig, *, samples: int = 16, directions: int = 4, seed: int = 0,
) -> dict[tuple[str, str, float], float]:
    """``{(layer, axis, value): estimated 1 - cosine}`` for each probe (see the module docstring)."""
    work = copy_model(model).eval()
    bake_masks_(work)
    part = inputs.slice(0, min(samples, len(inputs)))
    _, spec = probe_example(work, part.slice(0, 1), output)
    runner = SelectedOutput(work, spec.kind, spec.names, output).eval()
    for p in work.parameters():
        p.requires_grad_(False)
    recorder = _Recorder(work, layers)
    try:
        args, kwargs = part.check(spec).torch()
        with torch.enable_grad():
            y = runner(*args, *kwargs.values()).float()
            n = y.shape[0]
            scale = y.detach().reshape(n, -1).pow(2).sum(dim=1).clamp_min(1e-12)  # ||y||^2 per sample
            generator = torch.Generator().manual_seed(seed)
            for d in range(directions):
                v = torch.randn(y.shape, generator=generator, dtype=y.dtype)
                y.backward(v, retain_graph=d < directions - 1)
    finally:
        recorder.close()
    return {probe: _estimate(work, recorder, probe, quantizer, scale, directions) for probe in probes}


def _estimate(work: nn.Module, rec: _Recorder, probe: tuple[str, str, float], quantizer: QuantizationConfig,
              scale: torch.Tensor, directions: int) -> float:
    layer, axis, value = probe
    if not rec.inputs[layer]:
        return float("nan")  # never called on these inputs: nothing to estimate
    if all(not grads for grads in rec.grads[layer]):
        return 0.0  # called, but the selected output does not depend on it (a pooler beside the embeddings)
    module = work.get_submodule(layer)
    weight = module.weight.detach()
    delta = {"weight": _changed(weight, axis, value, quantizer) - weight}
    if getattr(module, "bias", None) is not None:
        delta["bias"] = torch.zeros_like(module.bias)
    n = scale.shape[0]
    projected = torch.zeros(directions, n)
    with torch.no_grad():
        for x, grads in zip(rec.inputs[layer], rec.grads[layer]):
            dz = functional_call(module, delta, (x,))  # the layer is linear in its weight: f(x; dW, 0) = dW x
            for d, g in enumerate(grads):  # one gradient per backward pass, in the order of the directions
                projected[d] += _per_sample(g * dz, n)
    return float((projected.pow(2).mean(dim=0) / scale).mean() / 2)
