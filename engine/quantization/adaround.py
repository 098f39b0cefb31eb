"""AdaRound (Nagel et al., 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"): choose, per
weight, whether int8 rounds it up or down so that the layer's *output* moves least, not each weight.

Round-to-nearest minimises each weight's own error; what the next layer sees is the output error
``(W_q - W) x``, whose mean square over the data is ``tr(D H D^T)`` with ``D = W_q - W`` and ``H = E[x x^T]``
(``x``: a layer's im2col input column, ``K = C_in/groups * kh * kw`` long). Errors of weights that read
correlated inputs can cancel, so rounding some weights the "wrong" way lowers it. The loss is written in
the ``K x K`` matrices instead of the data (``H`` per group of a grouped convolution: a depthwise 3x3 has a
9x9 one per channel), gathered for every layer in one pass over the calibration samples, so solving costs
``(C_out, K) x (K, K)`` work per layer whatever the number of calibration pixels.

Choosing up or down for every weight is a binary quadratic problem (the paper's QUBO). The paper relaxes
each choice to a continuous ``h in [0, 1]`` (a rectified sigmoid), minimises the output error plus a
regulariser that drives every ``h`` to 0 or 1 (``beta`` annealed 20 -> 2 after a warm start, AIMET's
schedule) and rounds ``h``; that is here (``iterations``). What finishes every layer, and by default does
all the work, is coordinate descent on the exact problem: one weight at a time, every row at once, switch
it to its other neighbour when that lowers the output error, until a pass changes nothing. Measured on the
test suite's depthwise CNN (32 samples): output error 0.53-0.99x round-to-nearest's per layer with the
descent alone in 0.5 s, against 0.70-1.0x for 1000 relaxation steps alone in 7 s, and the descent after 300
relaxation steps gained nothing over the descent alone. Each layer keeps whichever of its result and
round-to-nearest has the smaller error on the calibration data.

The inputs are the float model's (``quantized_inputs=False``, the default). AIMET reconstructs
asymmetrically, from the inputs of the int8 model towards the float outputs (``E|W x - W~ x_q|^2`` in
``Hqq = E[x_q x_q^T]``, ``Hqf = E[x_q x^T]``): available here with ``quantized_inputs=True`` (nearest int8
weights upstream, 8-bit layer inputs over the min-max ranges), but on the MobileNetV2 layout of
``benchmarks/int8_cnn.py`` it flipped 45 % of the codes to fit the calibration images' activation noise
and lowered top-1 agreement on 256 test images from 88.3 % (float inputs) to 80.5 % (both with statistics
over every calibration pixel, before they were capped at ``_MAX_COLUMNS``).

**The grid is ONNX Runtime's.** The weights written back lie on the grid ONNX Runtime's quantizer computes
from them: symmetric per output channel (or per tensor), ``scale = max|w| / qmax`` (``qmax`` 127, or 64
with ``reduce_range``), codes ``round(w / scale)``. Each channel's largest ``|w|`` is kept where it is (its
code stays ``+-qmax``) so the scale the quantizer recomputes is the scale AdaRound rounded on, and every
other weight is written as ``code * scale``: ONNX Runtime's rounding then gives back exactly AdaRound's
codes. BatchNorms are folded first (``layer_graph.fold_batchnorm_``), as ONNX Runtime's pre-processing
folds them, so the weights rounded are the ones it quantizes.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.quantization.bias_correction import _fake_activation, _input_ranges, int8_weight
from squeezelab.engine.quantization.layer_graph import fold_batchnorm_, trace

__all__ = ["AdaRoundResult", "adaround_", "grid_scale", "layer_statistics", "rounding_loss", "MAX_SAMPLES"]

MAX_SAMPLES = 32  # calibration samples the statistics are gathered on
_ZETA, _GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (the paper's and AIMET's values)
_BETA = (20.0, 2.0)  # the regulariser's exponent, annealed from the first to the second after the warm start
_WARM_START = 0.2  # fraction of the steps with the output error alone
# Columns (samples x positions) per input of a row below which a layer keeps round-to-nearest: with N < K the
# K x K statistics have rank N and a rounding can cancel the error on those columns alone. A Linear layer
# after global pooling has one column per sample (MobileNetV2's classifier: 1280 inputs).
_MIN_COLUMNS = 4
# Columns after which a layer stops accumulating (from 64 K upwards): im2col of every calibration pixel of
# MobileNetV2's early layers took most of the time, and a 9x9 or 32x32 matrix needs far fewer.
_MAX_COLUMNS = 32768


@dataclass
class AdaRoundResult:
    rounded: list[str]  # layers whose weights were re-rounded, in the order they run
    codes: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> int8 codes chosen (weight's shape)
    flipped: dict[str, float] = field(default_factory=dict)  # layer -> fraction of codes != round-to-nearest's
    error: dict[str, float] = field(default_factory=dict)  # layer -> output error on the calibration data, AdaRound / nearest
    skipped: dict[str, list[str]] = field(default_factory=dict)  # why -> layers
    folded: list[tuple[str, str]] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0


def grid_scale(weight: torch.Tensor, qmax: int, per_channel: bool) -> torch.Tensor:
    """ONNX Runtime's symmetric weight scale, ``(C_out, 1)`` (or ``(1, 1)`` per tensor), as ``int8_weight`` computes it."""
    w = weight.detach().float().reshape(weight.shape[0], -1)
    absmax = w.abs().amax(1) if per_channel else w.abs().max().reshape(1)
    scale = (absmax.double() * 2 / (2 * qmax)).float()
    return torch.where(scale < torch.finfo(torch.float32).tiny, torch.ones_like(scale), scale).view(-1, 1)


def _columns(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as im2col columns: ``(G, K, N)`` (G groups, K = C_in/G * kernel, N positions)."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1]).T.unsqueeze(0)  # (1, in, N)
    if isinstance(layer, nn.Conv1d):
        x = x.unsqueeze(2)  # (B, C, 1, L): a Conv1d is a Conv2d of height 1
        kernel, dilation, padding, stride = (1, *layer.kernel_size), (1, *layer.dilation), (0, *layer.padding), (1, *layer.stride)
    else:
        kernel, dilation, padding, stride = layer.kernel_size, layer.dilation, layer.padding, layer.stride
    groups = layer.groups
    if tuple(kernel) == (1, 1) and tuple(padding) == (0, 0):  # a pointwise conv reads each position's channels
        cols = x[:, :, :: stride[0], :: stride[1]].reshape(x.shape[0], x.shape[1], -1)
    else:
        cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, C_in * k, L)
    cols = cols.reshape(cols.shape[0], groups, -1, cols.shape[-1])  # (B, G, K, L)
    return cols.permute(1, 2, 0, 3).reshape(groups, cols.shape[2], -1)  # (G, K, B * L)


def _supported(layer: nn.Module) -> str | None:
    """Why ``layer`` cannot be reconstructed from im2col columns, or None."""
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            return "padding other than explicit zeros"
    return None


def layer_statistics(
    model: nn.Module, quantized: nn.Module | None, names: Sequence[str], inputs: Inputs, batch_size: int,
    ranges: dict[str, tuple[float, float] | None] | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    """Per layer: ``(Hqq, Hqf, Hff, N)``, ``E[x_q x_q^T]``, ``E[x_q x^T]`` and ``E[x x^T]``, each ``(G, K, K)`` in
    float64, and the number ``N`` of input columns they average; from one pass over ``inputs`` (chunks of
    ``batch_size``) through each model.

    ``x`` is a layer's input in ``model`` (the float model), ``x_q`` its input in ``quantized`` (the same
    architecture with int8 weights), quantized to 8 bits over ``ranges[name]`` on the way in, so the layers
    after it see the int8 input too; ``quantized=None``: ``x_q = x``.
    """
    floats: dict[str, torch.Tensor] = {}
    sums: dict[str, list] = {}
    layers = dict(model.named_modules())

    def keep(name):
        def hook(module, args):
            floats[name] = args[0].detach()
        return hook

    def accumulate(name, xq):
        layer = layers[name]
        if name in sums and sums[name][3] >= max(_MAX_COLUMNS, 64 * sums[name][0].shape[-1]):
            return  # enough columns for a K x K estimate: a 112x112 layer gives 12,544 per image
        cq = _columns(layer, xq.float())
        cf = cq if quantized is None else _columns(layer, floats[name].float())
        parts = [torch.bmm(cq, cq.transpose(1, 2)).double()]
        parts += parts * 2 if quantized is None else [torch.bmm(cq, cf.transpose(1, 2)).double(), torch.bmm(cf, cf.transpose(1, 2)).double()]
        total = sums.setdefault(name, [0, 0, 0, 0])
        sums[name] = [total[0] + parts[0], total[1] + parts[1], total[2] + parts[2], total[3] + cq.shape[-1]]

    def observe(name):
        def hook(module, args):
            span = (ranges or {}).get(name)
            xq = args[0].detach() if span is None else _fake_activation(args[0].detach(), *span)
            accumulate(name, xq)
            return (xq, *args[1:])
        return hook

    watched = dict(quantized.named_modules()) if quantized is not None else layers
    hooks = [watched[n].register_forward_pre_hook(observe(n)) for n in names]
    if quantized is not None:
        hooks += [layers[n].register_forward_pre_hook(keep(n)) for n in names]
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                chunk = inputs.slice(start, min(start + batch_size, len(inputs)))
                if quantized is not None:
                    chunk.call(model)
                chunk.call(quantized if quantized is not None else model)
                floats.clear()
    finally:
        for hook in hooks:
            hook.remove()
    return {n: (q / c, f / c, ff / c, c) for n, (q, f, ff, c) in sums.items()}


def _grouped(weight: torch.Tensor, groups: int) -> torch.Tensor:
    return weight.detach().double().reshape(groups, weight.shape[0] // groups, -1)  # (G, C_out/G, K)


def rounding_loss(codes: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, hqq: torch.Tensor, hqf: torch.Tensor) -> float:
    """``E|W x - W~ x_q|^2`` summed over output channels, less its constant ``E|W x|^2`` part (so only differences
    between roundings mean something; with ``Hqq = Hqf`` add ``tr(W H W^T)`` back for the absolute error)."""
    groups = hqq.shape[0]
    approx = _grouped(codes * scale.view((-1,) + (1,) * (codes.dim() - 1)), groups)
    target = torch.bmm(_grouped(weight, groups), hqf.transpose(1, 2))  # (G, C/G, K): W Hfq
    return float((torch.bmm(approx, hqq) * approx).sum() - 2 * (approx * target).sum())


def _optimise(weight, scale, keep, hqq, hqf, iterations, regularisation):
    """The soft-rounding optimisation of one layer; the chosen codes, ``weight``'s shape, float32."""
    groups = hqq.shape[0]
    rows = weight.detach().float().reshape(weight.shape[0], -1)  # (C, K)
    ratio = rows / scale
    floor = torch.floor(ratio)
    rest = (ratio - floor).clamp(1e-4, 1 - 1e-4)
    v = (-torch.log((_ZETA - _GAMMA) / (rest - _GAMMA) - 1)).requires_grad_(True)  # h(v) = rest at the start
    free = (~keep).float()
    h_kept = (ratio - floor) * keep.float()  # the kept elements: their own value, never rounded
    hq = hqq.float()
    target = torch.bmm(_grouped(weight, groups).float(), hqf.float().transpose(1, 2))  # (G, C/G, K)
    nearest = torch.round(ratio) * scale
    norm = max(float(_loss(nearest, hq, target, groups)) - float(_loss(rows, hq, target, groups)), 1e-30)
    base = float(_loss(rows, hq, target, groups))
    optimiser = torch.optim.Adam([v], lr=1e-2)
    warm = int(iterations * _WARM_START)
    for step in range(iterations):
        h = (torch.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA).clamp(0, 1)
        soft = (floor + h * free + h_kept) * scale
        loss = (_loss(soft, hq, target, groups) - base) / norm  # 1.0: round-to-nearest's error above float's
        if step >= warm:
            progress = (step - warm) / max(iterations - warm, 1)
            beta = _BETA[1] + (_BETA[0] - _BETA[1]) * (1 - progress)
            loss = loss + regularisation * (1 - (2 * h - 1).abs().pow(beta)).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        up = (torch.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA).clamp(0, 1) >= 0.5
        return torch.where(keep, torch.round(ratio), floor + up.float()).reshape(weight.shape)


def _descend(codes, weight, scale, keep, hqq, hqf, qmax, sweeps):
    """Coordinate descent on the exact rounding problem (AdaRound's QUBO): one weight at a time, switch between
    its floor and its ceiling when that lowers the output error; every row of every group at once. Returns
    codes no worse than ``codes``, ``(C, K)``."""
    groups, k_size = hqq.shape[0], hqq.shape[-1]
    rows = weight.detach().double().reshape(weight.shape[0], -1)
    s = scale.double().view(-1, 1).expand_as(rows)
    floor = torch.floor(rows / s)
    q = codes.double().reshape(rows.shape).clone()
    fixed = keep | (floor + 1 > qmax) | (floor < -qmax)  # the kept element, and steps off the grid
    shape = (groups, rows.shape[0] // groups, k_size)
    q, s, floor, fixed = q.view(shape), s.reshape(shape), floor.view(shape), fixed.view(shape)
    product = torch.bmm(q * s, hqq)  # (G, R, K): W~ Hqq
    target = torch.bmm(rows.view(shape), hqf.transpose(1, 2))  # (G, R, K): W Hfq
    diagonal = torch.diagonal(hqq, dim1=1, dim2=2)  # (G, K)
    for _ in range(sweeps):
        changed = 0
        for k in range(k_size):
            step = torch.where(q[:, :, k] > floor[:, :, k], -1.0, 1.0) * s[:, :, k]  # (G, R): to the other side
            gain = step * step * diagonal[:, k:k + 1] + 2 * step * (product[:, :, k] - target[:, :, k])
            move = (gain < 0) & ~fixed[:, :, k]
            if not bool(move.any()):
                continue
            delta = torch.where(move, step, 0.0)
            q[:, :, k] += torch.where(move, torch.sign(step), 0.0)
            product += delta.unsqueeze(-1) * hqq[:, k, :].unsqueeze(1)
            changed += int(move.sum())
        if not changed:
            break
    return q.reshape(weight.shape).float()


def _loss(approx: torch.Tensor, hq: torch.Tensor, target: torch.Tensor, groups: int) -> torch.Tensor:
    a = approx.reshape(groups, approx.shape[0] // groups, -1)  # (G, C/G, K)
    return (torch.bmm(a, hq) * a).sum() - 2 * (a * target).sum()


def _largest(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """A mask of each channel's (or the tensor's) first element of largest ``|w|``: kept as it is, so the
    scale ONNX Runtime recomputes from the written weights is the one rounded on. ``(C, K)``."""
    rows = weight.detach().abs().reshape(weight.shape[0], -1)
    keep = torch.zeros_like(rows, dtype=torch.bool)
    if per_channel:
        keep[torch.arange(rows.shape[0]), rows.argmax(1)] = True
    else:
        keep.view(-1)[rows.argmax()] = True
    return keep


def _written(codes: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, keep: torch.Tensor, qmax: int,
             per_channel: bool) -> torch.Tensor:
    """The float weights to write: ``code * scale``, except a kept largest element whose ``qmax * scale`` would
    give the quantizer another scale (then the original value stays: its code is ``qmax`` all the same)."""
    shape = (-1,) + (1,) * (codes.dim() - 1)
    out = (codes * scale.view(shape)).reshape(weight.shape[0], -1)
    exact = grid_scale(out.reshape(weight.shape), qmax, per_channel).view(-1) == scale.view(-1)
    original = weight.detach().float().reshape(weight.shape[0], -1)
    fixed = keep & ~exact.view(-1, 1).expand_as(keep) if per_channel else keep & ~exact.all()
    return torch.where(fixed, original, out).reshape(weight.shape).to(weight.dtype)


def adaround_(
    model: nn.Module,
    calibration: Inputs,
    *,
    qmax: int = 127,
    per_channel: bool = True,
    keep_float: Sequence[str] = (),
    kinds: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Linear),
    iterations: int = 0,
    regularisation: float = 0.01,
    quantized_inputs: bool = False,
    sweeps: int = 8,
    max_samples: int = MAX_SAMPLES,
    batch_size: int = 4,
) -> AdaRoundResult:
    """Re-round every int8 layer of ``model`` in place (see the module); what was done.

    Args:
        model: changed in place (``compress`` calls this on its own copy): BatchNorms folded, weights on the grid.
        calibration: the inputs; statistics and activation ranges from the first ``max_samples``.
        qmax: the largest int8 weight code (127; 64 with ``reduce_range``).
        per_channel: one weight scale per output channel (ONNX Runtime's default here) or per tensor.
        keep_float: module names (and their children) the runtime keeps float: left alone.
        kinds: the layer types the runtime quantizes.
        iterations: steps of the paper's continuous relaxation per layer before the descent (Adam, learning
            rate 0.01; the first 20 % without the regulariser); 0 (the default): the descent alone.
        regularisation: the relaxation's weight on the term driving every choice to up or down (summed over
            the weights), against the output error normalised to round-to-nearest's (1.0).
        quantized_inputs: reconstruct from the inputs of the int8 model (round-to-nearest weights, 8-bit layer
            inputs over the calibrated min-max ranges) towards the float model's outputs (AIMET's asymmetric
            reconstruction, with every statistic from one pass); False: from the float model's inputs.
        sweeps: passes of the coordinate descent over each layer's weights (it stops earlier when a pass
            changes nothing).
    """
    if not isinstance(qmax, int) or isinstance(qmax, bool) or not 1 <= qmax <= 127:
        raise ConfigError(f"adaround_: qmax={qmax!r} must be an int in [1, 127] (127, or 64 with reduce_range).")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
        raise ConfigError(f"adaround_: iterations={iterations!r} must be an int >= 0 (0, the default: no relaxation).")
    started = time.perf_counter()
    graph = trace(model, calibration)
    folded = fold_batchnorm_(model, graph)
    float_names = [n for n in graph.layers if any(n == f or n.startswith(f + ".") for f in keep_float)]
    result = AdaRoundResult(rounded=[], folded=folded, samples=min(len(calibration), max_samples))
    if float_names:
        result.skipped["kept float"] = float_names
    names = []
    for name, layer in graph.layers.items():
        why = _supported(layer) if isinstance(layer, kinds) and name not in float_names else None
        if why:
            result.skipped.setdefault(why, []).append(name)
        elif isinstance(layer, kinds) and name not in float_names:
            names.append(name)
    rows = calibration.slice(0, result.samples)
    layers = {n: graph.layers[n] for n in names}
    quantized, ranges = None, None
    if quantized_inputs:  # the model as ONNX Runtime runs it: int8 weights (nearest), 8-bit layer inputs
        ranges = {n: _finite(span) for n, span in _input_ranges(model, layers, rows, batch_size).items()}
        quantized = copy.deepcopy(model)
        with torch.no_grad():
            for name, layer in dict(quantized.named_modules()).items():
                if name in layers:
                    layer.weight.copy_(int8_weight(layer.weight, qmax=qmax, per_channel=per_channel))
    statistics = layer_statistics(model, quantized, names, rows, batch_size, ranges)
    for name in names:
        hqq, hqf, hff, count = statistics[name]
        if count < _MIN_COLUMNS * hqq.shape[-1]:  # too few columns: the rounding would fit them, not the data
            result.skipped.setdefault(f"fewer than {_MIN_COLUMNS} calibration columns per weight of a row", []).append(name)
            continue
        _round_layer(name, layers[name], hqq, hqf, hff, qmax, per_channel, iterations, regularisation, sweeps, result)
    result.seconds = time.perf_counter() - started
    return result


def _finite(span: Sequence[float] | None) -> tuple[float, float] | None:
    return (float(span[0]), float(span[1])) if span is not None and all(math.isfinite(v) for v in span) else None


def _round_layer(name, layer, hqq, hqf, hff, qmax, per_channel, iterations, regularisation, sweeps, result) -> None:
    weight = layer.weight
    scale = grid_scale(weight, qmax, per_channel)  # (C, 1) or (1, 1)
    keep = _largest(weight, per_channel)
    rows_scale = scale.expand(weight.shape[0], 1)
    nearest = torch.round(weight.detach().float() / rows_scale.view((-1,) + (1,) * (weight.dim() - 1)))
    if iterations > 0:
        with torch.enable_grad():
            codes = _optimise(weight, rows_scale, keep, hqq, hqf, iterations, regularisation)
    else:
        codes = nearest
    if sweeps:
        codes = _descend(codes, weight, rows_scale, keep, hqq, hqf, qmax, sweeps)
    constant = float((torch.bmm(_grouped(weight, hqq.shape[0]), hff) * _grouped(weight, hqq.shape[0])).sum())  # E|W x|^2
    before = rounding_loss(nearest, rows_scale, weight, hqq, hqf) + constant
    after = rounding_loss(codes, rows_scale, weight, hqq, hqf) + constant
    if after > before:  # the relaxation can lose on a layer: round-to-nearest is always on the table
        codes = nearest
    with torch.no_grad():
        weight.copy_(_written(codes, rows_scale, weight, keep, qmax, per_channel))
    result.rounded.append(name)
    result.codes[name] = codes.to(torch.int8)
    result.flipped[name] = float((codes != nearest).float().mean())
    result.error[name] = min(before, after) / before if before > 0 else 1.0
