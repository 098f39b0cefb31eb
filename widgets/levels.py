"""The values a layer's weight can take after quantization: a linear or fixed-point grid, or k-means centroids.

``quantization_levels`` finds them with squeezelab's own encoders (``encode_tensor``,
``quantize``/``dequantize``), so they are exactly what the simulated model computes with; the
weight histogram (``squeezelab.widgets.histogram``) draws them as vertical lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from squeezelab.engine.core.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from squeezelab.engine.core.quantizers import FixedPoint, KMeansQuantization, LinearQuantization

__all__ = ["QuantizationLevels", "quantization_levels"]


@dataclass(frozen=True)
class QuantizationLevels:
    """The values a layer's weight can take under one quantization config.

    Attributes:
        values: sorted distinct float values.
        method: the config's label (``"linear4-sym-perchannel"``, ``"kmeans4"``...).
        channel: for per-channel linear quantization, the channel whose grid
            ``values`` is (the one with the widest range, the coarsest grid);
            None otherwise.
        frac_bits: the fractional length ``n`` of a fixed-point Qm.n grid, else None.
        note: one line saying what ``values`` are, for titles and legends.
    """

    values: np.ndarray
    method: str
    channel: int | None = None
    frac_bits: int | None = None
    note: str = ""

    def __len__(self) -> int:
        return int(self.values.size)


def quantization_levels(
    weight: torch.Tensor | np.ndarray, config: LinearQuantization | KMeansQuantization | FixedPoint
) -> QuantizationLevels:
    """The distinct values ``weight`` can take after quantization under ``config``.

    * ``LinearQuantization``: the full decoded grid (every code from qmin to
      qmax). Per channel, each channel has its own grid: this is the grid of the
      channel with the widest range (named in ``channel``).
    * ``KMeansQuantization``: the layer's centroids (its codebook).
    * ``FixedPoint``: the Qm.n grid between the codes of the weight's minimum
      and maximum.

    Args:
        weight: a layer's weight (``torch.Tensor`` or array).
        config: ``LinearQuantization``, ``KMeansQuantization`` or ``FixedPoint``.

    Examples:
        >>> import torch
        >>> from squeezelab.engine.core.recipe import LinearQuantization
        >>> w = torch.tensor([[-1.0, 0.5], [0.25, 0.1]])
        >>> levels = quantization_levels(w, LinearQuantization(bits=2))
        >>> levels.values.tolist(), levels.channel
        ([-1.0, 0.0, 1.0], 0)
    """
    import torch

    from squeezelab.engine.quantization.encoding import encode_tensor
    from squeezelab.engine.quantization import dequantize, quantize
    from squeezelab.engine.quantization.linear import QParams
    from squeezelab.engine.core.quantizers import FixedPoint, KMeansQuantization, LinearQuantization

    w = weight.detach().to("cpu", torch.float32) if isinstance(weight, torch.Tensor) else torch.as_tensor(
        np.asarray(weight, dtype=np.float32)
    )
    if w.numel() == 0:
        raise ConfigError("the weight is empty; pass a layer weight with at least one value.")
    if not isinstance(config, (LinearQuantization, KMeansQuantization, FixedPoint)):
        raise ConfigError(
            f"config={config!r} has no short list of levels; use LinearQuantization(...), "
            "KMeansQuantization(...) or FixedPoint(...)."
        )
    encoded = encode_tensor(w, config)
    if isinstance(config, KMeansQuantization):
        values = np.asarray(encoded.arrays["codebook"], dtype=np.float64)
        return QuantizationLevels(
            np.unique(values), config.label, note=f"{values.size} k-means centroids (the layer's codebook)"
        )
    meta, scale, zero_point = encoded.meta, encoded.arrays["scale"], encoded.arrays["zero_point"]
    channel = None
    if meta["axis"] is not None:
        # Each channel's range is scale * (qmax - qmin): the largest scale is the widest range.
        channel = int(np.argmax(scale))
        scale, zero_point = scale[channel], zero_point[channel]
    qp = QParams(
        scale=torch.as_tensor(np.float32(scale)),
        zero_point=torch.as_tensor(np.int32(zero_point)),
        qmin=meta["qmin"],
        qmax=meta["qmax"],
    )
    if isinstance(config, FixedPoint):
        frac = int(meta["frac_bits"])
        lo, hi = (int(quantize(v.reshape(1), qp)) for v in (w.min(), w.max()))
        codes = torch.arange(lo, hi + 1, dtype=torch.int32)
        values = np.unique(dequantize(codes, qp).numpy().astype(np.float64))
        m = config.total_bits - 1 - frac
        return QuantizationLevels(
            values, config.label, frac_bits=frac,
            note=f"Q{m}.{frac} grid (step 2^-{frac}) within the weight's range, {values.size} levels",
        )
    codes = torch.arange(meta["qmin"], meta["qmax"] + 1, dtype=torch.int32)
    values = np.unique(dequantize(codes, qp).numpy().astype(np.float64))
    where = f"grid of channel {channel} (widest range)" if channel is not None else "per-tensor grid"
    return QuantizationLevels(values, config.label, channel=channel, note=f"{where}, {values.size} levels")
