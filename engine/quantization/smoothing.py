"""Smoothing (SmoothQuant): move activation outliers into the weights before int8, exactly in fp32.

A Linear layer computes ``y = x @ W.T``. For any positive vector ``s`` over the input channels,
``y = (x / s) @ (W * s).T``: dividing channel ``j`` of the activation by ``s_j`` and multiplying
column ``j`` of the weight by it changes nothing in fp32. int8 quantizes the activation with one
range per tensor, which a few outlier channels stretch (in BERT a handful of channels carry values
20x the rest, and the [CLS] token most of all); the weights are quantized per output channel and have
room to spare. SmoothQuant (Xiao et al., 2023) picks ``s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)``
to split the difficulty between the two.

Where the division by ``s`` goes decides whether smoothing is free:

- **into the value projection**, for an attention's output projection: the attention output is a
  weighted sum of the value rows, channel by channel, so dividing the value projection's output
  channel ``j`` (its weight row and bias) by ``s_j`` divides the output projection's input channel
  ``j``. No new op. Recognised by module names (``_VALUE_OF``) and checked by shapes.
- **onto the branch**, everywhere else: the Linear layers of a group (the layers that read one
  tensor, e.g. an attention's query, key and value) become ``SmoothedLinear``, which multiplies its
  input by ``1 / s`` first. The tensor itself is left alone, so a residual connection that also
  reads it (post-LN BERT: a LayerNorm's output is both the next block's input and its residual) is
  unchanged. Folding ``1 / s`` into that LayerNorm instead would change the residual.
  ``engine.runtime.graph_cleanup`` merges the group's identical multiplications into one after
  export, and folds it into a LayerNorm whose output goes nowhere else (pre-LN models).

``alpha="auto"`` chooses alpha per group on the calibration data: the value that minimises the
group's output error under the runtime's int8 arithmetic (per-tensor uint8 activations, per-channel
symmetric int8 weights), simulated with PyTorch's ``fake_quantize_*`` ops; 0 (no smoothing) is a
candidate, so a group smoothing would not help is left alone.

``smooth_`` checks its own work: the smoothed model must compute what the model did, on the
calibration samples, to a float32 tolerance, or it raises ``SmoothingError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from squeezelab.engine.core.errors import ModelError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.outputs import select_output

__all__ = [
    "SmoothedLinear", "SmoothingGroup", "SmoothingError", "Int8Arithmetic", "choose_alpha", "output_changed", "find_groups", "smoothing_scales", "smooth_",
    "ALPHA_GRID",
]

# The alphas "auto" chooses from; 0.0 is "leave this group alone".
ALPHA_GRID: tuple[float, ...] = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# Output projection suffix -> the value projection whose output channels feed it one to one.
_VALUE_OF: dict[str, str] = {
    "attention.output.dense": "attention.self.value",  # BERT, RoBERTa, MiniLM, ELECTRA
    "attention.out_lin": "attention.v_lin",  # DistilBERT
    "self_attn.out_proj": "self_attn.v_proj",  # BART, OPT, LLaMA (checked by shape: grouped K/V heads differ)
}

# Activation rows kept per group to judge alpha (a random sample of the calibration tokens).
_ROWS_KEPT = 512


class SmoothingError(ModelError, ValueError):
    """Smoothing could not be applied exactly to this model (the message names the layers)."""


class SmoothedLinear(nn.Linear):
    """``F.linear(x * inv_scale, weight, bias)``: a Linear whose input channels were smoothed.

    A subclass of ``nn.Linear`` with the same parameter names, so the layer keeps its name, its
    state-dict keys and its place in the exported graph (a ``Mul`` before its ``MatMul``).
    """

    def __init__(self, linear: nn.Linear, scale: torch.Tensor) -> None:
        with torch.random.fork_rng(devices=[]):  # nn.Linear draws initial weights; overwritten, and the caller's RNG kept
            super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None,
                             device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            self.weight.copy_(linear.weight * scale)  # (out, in) * (in,)
            if linear.bias is not None:
                self.bias.copy_(linear.bias)
        self.register_buffer("inv_scale", (1.0 / scale).to(linear.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x * self.inv_scale, self.weight, self.bias)


@dataclass
class SmoothingGroup:
    """Linear layers that read one activation, with that activation's statistics over the calibration data.

    ``fold_into`` names the value projection that absorbs ``1 / s`` (an attention's output projection),
    or is None (the layers multiply their input by ``1 / s`` themselves).
    """

    layers: tuple[str, ...]
    fold_into: str | None
    abs_max: torch.Tensor  # (C,) max |x_j| over every calibration row
    low: torch.Tensor  # (C,) min x_j
    high: torch.Tensor  # (C,) max x_j
    rows: torch.Tensor  # (R, C) a sample of the calibration rows
    alpha: float = 0.0
    exact: bool = True  # False: applying it changed the float output, so it was put back
    errors: dict[float, float] = field(default_factory=dict)  # alpha -> simulated output error (auto)


def _linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and name}


def _batches(inputs: Inputs, batch_size: int) -> list[Inputs]:
    return [inputs.slice(i, min(i + batch_size, len(inputs))) for i in range(0, len(inputs), batch_size)]


def find_groups(model: nn.Module, inputs: Inputs, *, batch_size: int = 16, seed: int = 0) -> list[SmoothingGroup]:
    """The smoothing groups of ``model`` and their activation statistics, from a pass over ``inputs``.

    Layers read one activation when their forward received the very same tensor object in the
    first batch (an attention's query, key and value read ``hidden_states``). A Linear whose input
    has fewer than 2 dimensions of features, or a layer called more than once per forward (weights
    shared between places), is left out: its inputs are not one activation.
    """
    linears = _linears(model)
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in linears}
    hooks = [m.register_forward_pre_hook(_recorder(seen[name])) for name, m in linears.items()]
    stats: dict[str, list] = {}
    generator = torch.Generator().manual_seed(seed)
    groups: list[tuple[str, ...]] = []
    try:
        with torch.no_grad():
            for index, batch in enumerate(_batches(inputs, batch_size)):
                for items in seen.values():
                    items.clear()
                batch.call(model)
                if index == 0:
                    groups = _shared_input_groups(seen)
                # a layer not called exactly once in this batch (a data-dependent path): not one activation
                groups = [g for g in groups if all(len(seen[name]) == 1 for name in g)]
                for group in groups:
                    _accumulate(stats, group, seen[group[0]][0], generator)
    finally:
        for hook in hooks:
            hook.remove()
    return [_group(model, group, stats[group[0]], generator) for group in groups]


def _recorder(store: list[torch.Tensor]):
    def hook(module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            store.append(args[0])
    return hook


def _shared_input_groups(seen: dict[str, list[torch.Tensor]]) -> list[tuple[str, ...]]:
    """Names of layers called once with a float input, grouped by the identity of that input."""
    by_tensor: dict[int, list[str]] = {}  # (``seen`` holds the tensors, so an id is not reused meanwhile)
    for name, items in seen.items():
        if len(items) != 1 or not items[0].is_floating_point() or items[0].dim() < 2:
            continue
        by_tensor.setdefault(id(items[0]), []).append(name)
    return [tuple(names) for names in by_tensor.values()]


def _accumulate(stats: dict[str, list], group: tuple[str, ...], x: torch.Tensor, generator: torch.Generator) -> None:
    """Fold one batch into the group's minimum, maximum and row samples (``_ROWS_KEPT`` from each batch)."""
    rows = x.detach().reshape(-1, x.shape[-1]).float()  # (tokens, C)
    low, high = rows.amin(0), rows.amax(0)
    sample = rows[torch.randperm(len(rows), generator=generator)[:_ROWS_KEPT]]
    if group[0] not in stats:
        stats[group[0]] = [low, high, [sample]]
        return
    old_low, old_high, samples = stats[group[0]]
    stats[group[0]] = [torch.minimum(old_low, low), torch.maximum(old_high, high), [*samples, sample]]


def _group(model: nn.Module, layers: tuple[str, ...], stat: list, generator: torch.Generator) -> SmoothingGroup:
    low, high, samples = stat
    rows = torch.cat(samples)
    rows = rows[torch.randperm(len(rows), generator=generator)[:_ROWS_KEPT]]  # every batch equally likely
    return SmoothingGroup(
        layers=layers, fold_into=_value_projection(model, layers), abs_max=torch.maximum(low.abs(), high.abs()),
        low=low, high=high, rows=rows,
    )


def _value_projection(model: nn.Module, layers: tuple[str, ...]) -> str | None:
    """The value projection that can absorb ``1 / s`` for an attention output projection, or None."""
    if len(layers) != 1:
        return None
    modules = dict(model.named_modules())
    for out_suffix, value_suffix in _VALUE_OF.items():
        if layers[0] == out_suffix or layers[0].endswith("." + out_suffix):
            value = layers[0][: len(layers[0]) - len(out_suffix)] + value_suffix
            out, v = modules.get(layers[0]), modules.get(value)
            if isinstance(v, nn.Linear) and type(v) is nn.Linear and v.out_features == out.in_features:
                return value
    return None


# --------------------------------------------------------------------------- scales


def smoothing_scales(group: SmoothingGroup, weights: Sequence[torch.Tensor], alpha: float) -> torch.Tensor:
    """``s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)`` over the group's weights (1 where a channel is silent)."""
    w_max = torch.stack([w.detach().abs().amax(0) for w in weights]).amax(0).float()
    x_max = group.abs_max.float()
    if alpha == 0.0:
        return torch.ones_like(x_max)
    scale = x_max.clamp(min=1e-5).pow(alpha) / w_max.clamp(min=1e-5).pow(1 - alpha)
    silent = (x_max <= 1e-8) | (w_max <= 1e-8)
    return torch.where(silent, torch.ones_like(scale), scale).clamp(1e-4, 1e4)


@dataclass(frozen=True)
class Int8Arithmetic:
    """The int8 arithmetic alpha is judged under: the runtime's weight codes and granularity, activation type."""

    weight_max: int = 127  # 64 with reduce_range (ONNX Runtime's [-64, 64])
    per_channel: bool = True  # one weight scale per output channel (False: one per tensor)
    signed_activations: bool = False  # int8 activations (S8S8) instead of uint8


def _fake_int8_error(group: SmoothingGroup, weights: Sequence[torch.Tensor], references: Sequence[torch.Tensor],
                     scale: torch.Tensor, arithmetic: Int8Arithmetic) -> float:
    """Squared output error of the group under int8 arithmetic with this scale, relative to its fp32 output.

    Activations: one 8-bit range for the whole tensor, from the calibration minimum and maximum of ``x / s``
    (what static int8 calibrates, and about what dynamic int8 sees per batch). Weights: symmetric int8 per
    output channel (or per tensor), at most ``weight_max``. ``references`` are the fp32 outputs of the rows.
    """
    low = min(float((group.low / scale).min()), 0.0)
    high = max(float((group.high / scale).max()), 0.0)
    step = max((high - low) / 255.0, 1e-12)
    codes = (-128, 127) if arithmetic.signed_activations else (0, 255)
    zero = codes[0] + int(round(-low / step))
    xq = torch.fake_quantize_per_tensor_affine(group.rows / scale, step, zero, *codes)
    top = arithmetic.weight_max
    error = total = 0.0
    for w, reference in zip(weights, references):
        ws = w.detach().float() * scale  # (out, in)
        if arithmetic.per_channel:
            w_step = (ws.abs().amax(1) / top).clamp(min=1e-12)
            wq = torch.fake_quantize_per_channel_affine(ws, w_step, torch.zeros_like(w_step, dtype=torch.int32), 0, -top, top)
        else:
            wq = torch.fake_quantize_per_tensor_affine(ws, max(float(ws.abs().max()) / top, 1e-12), 0, -top, top)
        error += float((xq @ wq.T - reference).square().sum())
        total += float(reference.square().sum())
    return error / max(total, 1e-30)


def choose_alpha(group: SmoothingGroup, weights: Sequence[torch.Tensor], *, arithmetic: Int8Arithmetic = Int8Arithmetic(),
                 grid: Sequence[float] = ALPHA_GRID) -> float:
    """The alpha of ``grid`` with the smallest simulated int8 output error (ties: the smaller alpha)."""
    references = [group.rows @ w.detach().float().T for w in weights]
    group.errors = {
        a: _fake_int8_error(group, weights, references, smoothing_scales(group, weights, a), arithmetic) for a in grid
    }
    return min(grid, key=lambda a: (group.errors[a], a))


# --------------------------------------------------------------------------- applying


def smooth_(
    model: nn.Module,
    calibration: Inputs,
    *,
    alpha: float | str = "auto",
    arithmetic: Int8Arithmetic = Int8Arithmetic(),
    batch_size: int = 16,
    check_output: Callable[[nn.Module, Inputs], torch.Tensor] | None = None,
) -> list[SmoothingGroup]:
    """Smooth every group of Linear layers of ``model`` in place; returns the groups with their alphas.

    The result is checked: the model's output on two calibration samples must stay what it was. If it
    does not, the groups are applied again one at a time, and each that changes the output is put back
    and recorded as ``exact=False`` (a module that reads its Linear layers' weights without calling
    them, as PyTorch's fused ``TransformerEncoderLayer`` fast path does, cannot be smoothed this way).

    Args:
        model: changed in place (``compress`` calls this on its own copy).
        calibration: the inputs whose activation statistics set the scales.
        alpha: a number in [0, 1] for every group, or ``"auto"`` (chosen per group, see the module).
        arithmetic: the runtime's int8 arithmetic, which ``"auto"`` judges alpha under.
        check_output: ``callable(model, inputs) -> tensor``, the output to keep unchanged
            (default: the model's first output tensor).

    Raises:
        SmoothingError: the smoothed model's output on the calibration samples differs from the
            original's beyond float32 rounding (the message names the groups).
    """
    run = check_output or (lambda m, x: select_output(x.call(m)))
    probe = calibration.slice(0, min(len(calibration), 2))
    with torch.no_grad():
        before = run(model, probe)
    groups = find_groups(model, calibration, batch_size=batch_size)
    modules = dict(model.named_modules())
    undos = []
    for group in groups:
        weights = [modules[name].weight for name in group.layers]
        group.alpha = choose_alpha(group, weights, arithmetic=arithmetic) if alpha == "auto" else float(alpha)
        if group.alpha:
            undos.append((group, _apply(model, modules, group, smoothing_scales(group, weights, group.alpha))))
    with torch.no_grad():
        exact = output_changed(before, run(model, probe)) is None
    if not exact:  # find the groups that broke it: put all back, then apply and check one at a time
        for _, undo in reversed(undos):
            undo()
        for group, _ in undos:
            weights = [modules[name].weight for name in group.layers]
            undo = _apply(model, modules, group, smoothing_scales(group, weights, group.alpha))
            with torch.no_grad():
                if output_changed(before, run(model, probe)) is not None:
                    undo()
                    group.exact, group.alpha = False, 0.0
        with torch.no_grad():
            still = output_changed(before, run(model, probe))
        if still is not None:
            for group, undo in reversed(undos):
                if group.alpha:
                    undo()  # the model as it came: no half-smoothed model is left behind
            _raise_changed(still, [g for g, _ in undos if g.alpha])
    return groups


def _apply(model: nn.Module, modules: dict[str, nn.Module], group: SmoothingGroup, scale: torch.Tensor) -> Callable[[], None]:
    """Smooth one group in place; returns the function that puts it back as it was."""
    if group.fold_into is not None:
        value, out = modules[group.fold_into], modules[group.layers[0]]
        saved = [(p, p.detach().clone()) for p in (value.weight, value.bias, out.weight) if p is not None]
        with torch.no_grad():
            value.weight.div_(scale[:, None].to(value.weight.dtype))  # (out_v, in): rows are output channels
            if value.bias is not None:
                value.bias.div_(scale.to(value.bias.dtype))
            out.weight.mul_(scale.to(out.weight.dtype))  # (out, in): columns are input channels

        def undo_fold() -> None:
            with torch.no_grad():
                for param, copy in saved:
                    param.copy_(copy)

        return undo_fold
    originals = {name: modules[name] for name in group.layers}
    for name in group.layers:
        _replace(model, modules, name, SmoothedLinear(modules[name], scale.to(modules[name].weight.dtype)))

    def undo_wrap() -> None:
        for name, original in originals.items():
            _replace(model, modules, name, original)

    return undo_wrap


def _replace(model: nn.Module, modules: dict[str, nn.Module], name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(modules[parent_name] if parent_name else model, child, module)
    modules[name] = module


def output_changed(before: torch.Tensor, after: torch.Tensor) -> str | None:
    """None when ``after`` is ``before`` up to float32 rounding, else what differs."""
    a, b = before.float(), after.float()
    if a.shape != b.shape:
        return f"output shape {tuple(b.shape)} instead of {tuple(a.shape)}"
    scale = float(a.abs().max()) if a.numel() else 0.0
    worst = float((a - b).abs().max()) if a.numel() else 0.0
    if not math.isfinite(worst) or worst > 1e-4 * (scale or 1.0) + 1e-5:
        return f"changed the model's float32 output by {worst:.3g} (largest output {scale:.3g})"
    return None


def _raise_changed(what: str, groups: list[SmoothingGroup]) -> None:
    names = ", ".join("+".join(g.layers) for g in groups[:4]) + (", ..." if len(groups) > 4 else "")
    raise SmoothingError(
        f"smoothing {what} on the calibration samples; smoothed groups: {names}. A layer reused in several "
        "places or an output projection that is not linear in its value projection breaks the identity "
        "smoothing relies on. Leave smoothing out of the recipe for this model (transforms=())."
    )
