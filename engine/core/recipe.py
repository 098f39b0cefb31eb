"""What to do to a model: ``Recipe``, and ``LayerSetting`` to override it for one layer.

A recipe holds at most one pruning step, at most one quantization step, and the
runtime that will execute the result. Every config is a frozen, keyword-only
dataclass validated on construction, so a recipe is hashable (it keys caches)
and cannot be changed behind a caller's back; use ``dataclasses.replace``.

``to_dict``/``from_dict`` round-trip through plain data (and TOML). Loading
only accepts the config types registered in ``squeezelab.engine.core.configs``'s
allowlist: a dict can never name an arbitrary class to construct. The steps
live in ``quantizers``, ``pruners`` and ``runtimes`` beside this module.

Examples:
    >>> from squeezelab.engine.core.quantizers import LinearQuantization
    >>> from squeezelab.engine.core.recipe import Recipe
    >>> from squeezelab.engine.core.runtimes import Simulated
    >>> r = Recipe(quantization=LinearQuantization(bits=4), runtime=Simulated())
    >>> r.label
    'linear4-sym-perchannel (simulated)'
    >>> Recipe.from_dict(r.to_dict()) == r
    True
    >>> Recipe().label
    'fp32'
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

from squeezelab.engine.core.arguments import as_integer
from squeezelab.engine.core.configs import _NESTED, _Config, _fraction_field, _from_dict, _register
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.core.pruners import ChannelPruning, MagnitudePruning, PruningConfig
from squeezelab.engine.core.quantizers import FixedPoint, Float16, KMeansQuantization, LinearQuantization, QuantizationConfig
from squeezelab.engine.core.transforms import TRANSFORM_ORDER, Transform
from squeezelab.engine.core.runtimes import (
    DYNAMIC_OP_TYPES,
    Int8Dynamic,
    Int8Static,
    Onnx,
    Runtime,
    Simulated,
    WeightOnly,
)

__all__ = ["LayerSetting", "Recipe"]


# --------------------------------------------------------------------------- per-layer settings


@_register
@dataclass(frozen=True, kw_only=True)
class LayerSetting(_Config):
    """Override the recipe's quantization width or pruning amount for one layer (mixed precision).

    Args:
        name: the layer's name in ``model.named_modules()``, e.g. ``"features.0"``.
        bits: weight width for this layer (2..16), or 32 to keep it float32.
            Applies to simulated quantizers (linear, k-means, fixed point); with
            ``Int8Dynamic``/``Int8Static`` only 32 is allowed: the layer's ONNX nodes
            are excluded from int8 (mixed precision with real kernels).
        sparsity: this layer's pruning amount in [0, 1): the fraction of its
            weights zeroed (``MagnitudePruning``) or of its output channels removed
            (``ChannelPruning``; the whole coupled group follows, and naming a Hugging Face
            self-attention module sets the fraction of its heads removed). 0 leaves the layer unpruned.
    """

    name: str
    bits: int | None = None
    sparsity: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"LayerSetting: name={self.name!r} must be a layer name from model.named_modules().")
        owner = f"LayerSetting({self.name!r})"
        if self.bits is not None:
            bits = as_integer(self.bits)
            if bits is None or not (2 <= bits <= 16 or bits == 32):
                raise ConfigError(
                    f"{owner}: bits={self.bits!r} is not allowed; bits must be an integer in 2..16, or 32 to keep "
                    "the layer float."
                )
            object.__setattr__(self, "bits", bits)
        if self.sparsity is not None:  # stored as float: 0 and 0.0 are one setting, with one cache key
            _fraction_field(self, "sparsity", "the fraction of this layer pruned", owner=owner)
        if self.bits is None and self.sparsity is None:
            raise ConfigError(f"{owner} sets nothing; give bits= and/or sparsity=.")

    @property
    def label(self) -> str:
        parts = [] if self.bits is None else ["fp32" if self.bits == 32 else f"{self.bits}b"]
        if self.sparsity is not None:
            parts.append(f"{self.sparsity:.0%}")
        return f"{self.name}={'/'.join(parts)}"


# --------------------------------------------------------------------------- recipe


@_register
@dataclass(frozen=True, kw_only=True)
class Recipe(_Config):
    """At most one pruning step, at most one quantization step, and a runtime.

    ``Recipe()`` is the fp32 baseline: the model exported to ONNX unchanged.
    ``layers`` overrides the width or pruning amount of named layers (see
    ``LayerSetting``); every other layer follows the recipe-wide steps.
    ``transforms`` are the fidelity steps applied to the float model before an int8
    runtime quantizes it (``engine.core.transforms``): None lets ``compress`` choose
    them for the model and runtime (and record what it chose), ``()`` applies none.
    """

    pruning: PruningConfig | None = None
    quantization: QuantizationConfig | None = None
    runtime: Runtime = field(default_factory=Onnx)
    layers: tuple[LayerSetting, ...] = ()
    transforms: tuple[Transform, ...] | None = None

    def __post_init__(self) -> None:
        self._check_layers()
        self._check_transforms()
        if self.pruning is not None and not isinstance(self.pruning, PruningConfig):
            raise ConfigError(f"Recipe: pruning={self.pruning!r} is not a pruning config.")
        q, rt = self.quantization, self.runtime
        if q is not None and not isinstance(q, QuantizationConfig):
            raise ConfigError(
                f"Recipe: quantization={q!r} is not a quantization config; use e.g. "
                "LinearQuantization(bits=4), KMeansQuantization(bits=4), FixedPoint(), Float16()."
            )
        if not isinstance(rt, Runtime):
            raise ConfigError(
                f"Recipe: runtime={rt!r}; use Onnx(), Int8Dynamic(), Int8Static(), WeightOnly() or Simulated()."
            )
        if isinstance(rt, (Int8Dynamic, Int8Static, WeightOnly)) and q is not None:
            raise ConfigError(
                f"Recipe: {type(rt).__name__}() chooses its own weight quantization, so "
                f"quantization={q!r} cannot be combined with it; drop the quantization step, "
                "or use runtime=Simulated() to study that quantizer."
            )
        if isinstance(rt, Simulated) and rt.coding == "huffman" and not isinstance(
            q, (LinearQuantization, KMeansQuantization, FixedPoint)
        ):
            raise ConfigError(
                "Recipe: Simulated(coding='huffman') codes quantized weights; add "
                "quantization=KMeansQuantization(...) (Deep Compression) or LinearQuantization(...)."
            )
        if isinstance(rt, Onnx) and q is not None and not isinstance(q, Float16):
            raise ConfigError(
                f"Recipe: {q.label} has no ONNX Runtime kernel; use runtime=Simulated() for it "
                "(results are labelled simulated), or Int8Static()/Int8Dynamic() for real int8."
            )

    def _check_layers(self) -> None:
        layers = self.layers
        if isinstance(layers, list):  # from_dict / TOML give lists; the recipe must stay hashable
            layers = tuple(_from_dict(item, LayerSetting) for item in layers)
            object.__setattr__(self, "layers", layers)
        if not isinstance(layers, tuple) or not all(isinstance(item, LayerSetting) for item in layers):
            raise ConfigError(f"Recipe: layers={layers!r} must be a tuple of LayerSetting(name=..., ...).")
        names = [item.name for item in layers]
        if len(set(names)) != len(names):
            raise ConfigError(f"Recipe: layers names {sorted({n for n in names if names.count(n) > 1})} twice.")
        if isinstance(self.runtime, (Int8Dynamic, Int8Static)):
            wrong = [item.name for item in layers if item.bits is not None and item.bits != 32]
            if wrong:
                raise ConfigError(
                    f"Recipe: {type(self.runtime).__name__}() runs every layer at 8 bits or keeps it float; "
                    f"layers {wrong} ask for another width. Use bits=32 to keep a layer float (mixed precision), "
                    "or runtime=Simulated() with a quantizer to study other widths."
                )
        elif any(item.bits is not None for item in layers) and not isinstance(
            self.quantization, (LinearQuantization, KMeansQuantization, FixedPoint)
        ):
            raise ConfigError(
                "Recipe: per-layer bits need a simulated weight quantizer to override; add "
                "quantization=LinearQuantization(...), KMeansQuantization(...) or FixedPoint(...) with runtime=Simulated()."
            )
        q = self.quantization
        low, high = (1, 8) if isinstance(q, KMeansQuantization) else (2, 16)
        for item in layers:
            if item.bits is not None and item.bits != 32 and not low <= item.bits <= high:
                raise ConfigError(
                    f"Recipe: LayerSetting({item.name!r}, bits={item.bits}) is outside {type(q).__name__}'s "
                    f"{low}..{high} bits (or 32 to keep the layer float)."
                )
        if any(item.sparsity is not None for item in layers) and not isinstance(
            self.pruning, (MagnitudePruning, ChannelPruning)
        ):
            raise ConfigError(
                "Recipe: per-layer sparsity needs a pruning step to override; add "
                "pruning=MagnitudePruning(sparsity=0.0) (or ChannelPruning(ratio=0.0))."
            )

    def _check_transforms(self) -> None:
        steps = self.transforms
        if steps is None:
            return
        if isinstance(steps, list):  # from_dict / TOML give lists; the recipe must stay hashable
            steps = tuple(_from_dict(item, Transform) for item in steps)
        if isinstance(steps, Transform):
            steps = (steps,)
        if not isinstance(steps, tuple) or not all(isinstance(step, Transform) for step in steps):
            raise ConfigError(
                f"Recipe: transforms={self.transforms!r} must be a tuple of fidelity steps, e.g. "
                "transforms=(Smoothing(alpha=0.5),), () for none, or None to let compress choose."
            )
        kinds = [type(step) for step in steps]
        twice = sorted({k.__name__ for k in kinds if kinds.count(k) > 1})
        if twice:
            raise ConfigError(f"Recipe: transforms name {', '.join(twice)} twice; give each step once.")
        if steps and not isinstance(self.runtime, (Int8Dynamic, Int8Static)):
            raise ConfigError(
                f"Recipe: transforms={tuple(s.label for s in steps)} prepare a model for int8 and apply with "
                "runtime=Int8Dynamic() or Int8Static(); with other runtimes use transforms=() (or leave it None)."
            )
        unknown = sorted({type(step).__name__ for step in steps if type(step) not in TRANSFORM_ORDER})
        if unknown:
            raise ConfigError(
                f"Recipe: transforms {unknown} are not squeezelab's fidelity steps; use Smoothing(), Equalization(), "
                "AdaRound() or BiasCorrection()."
            )
        # One canonical order (the order the steps must run in), so equal recipes hash and label alike.
        object.__setattr__(self, "transforms", tuple(sorted(steps, key=lambda step: TRANSFORM_ORDER.index(type(step)))))

    def layer_bits(self) -> dict[str, int]:
        """Per-layer widths set by ``layers`` (32 = kept float32)."""
        return {item.name: item.bits for item in self.layers if item.bits is not None}

    def layer_sparsity(self) -> dict[str, float]:
        """Per-layer pruning amounts set by ``layers``."""
        return {item.name: float(item.sparsity) for item in self.layers if item.sparsity is not None}

    @property
    def executable(self) -> bool:
        """True when the result runs as real kernels at the stored precision."""
        return self.runtime.onnx

    @property
    def bits(self) -> int:
        """Stored width of the weights."""
        if self.quantization is not None:
            return self.quantization.bits
        if isinstance(self.runtime, (Int8Dynamic, Int8Static)):
            return 8
        if isinstance(self.runtime, WeightOnly):
            return self.runtime.bits
        return 32

    @property
    def label(self) -> str:
        """Short name for tables: what was done, and ``(simulated)`` when it is."""
        parts = []
        if self.pruning is not None:
            parts.append(self.pruning.label)
        parts.extend(step.label for step in self.transforms or ())
        if self.quantization is not None:
            parts.append(self.quantization.label)
        rt = self.runtime
        if isinstance(rt, (Int8Dynamic, Int8Static)):
            pc = "-perchannel" if rt.per_channel else ""
            # reduce_range appears only when set explicitly; None is decided per machine.
            rr = {None: "", True: "-7bit", False: "-8bit"}[rt.reduce_range]
        if isinstance(rt, Int8Dynamic):
            pc = "" if rt.per_channel else "-pertensor"  # per-channel is its default: the short label
            # The explicit default makes the same model as None, so it reads the same.
            ops = "" if rt.quantized_op_types == DYNAMIC_OP_TYPES else "-" + "+".join(o.lower() for o in rt.op_types)
            fuse = {"auto": "", True: "-fused", False: "-unfused"}[rt.fusion]
            parts.append(f"int8-dynamic{pc}{ops}{rr}{fuse}")
        elif isinstance(rt, Int8Static):
            act = "" if rt.activations == "uint8" else "-s8act"
            ops = "" if rt.op_types is None else "-" + "+".join(o.lower() for o in rt.op_types)
            parts.append(f"int8-static-{rt.calibration.label}{pc}{act}{ops}{rr}")
        elif isinstance(rt, WeightOnly):
            parts.append(rt.label)
        if self.layers:
            parts.append(_layers_label(self.layers))
        if isinstance(rt, Simulated) and rt.coding == "huffman":
            parts.append("huffman")
        if not parts:
            parts.append("fp32")
        text = " + ".join(parts)
        return text + " (simulated)" if not self.executable else text

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        del out["type"]
        if self.layers:
            out["layers"] = [item.to_dict() for item in self.layers]
        else:
            del out["layers"]
        if self.transforms is not None:
            out["transforms"] = [step.to_dict() for step in self.transforms]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of ``to_dict``; only registered config types are accepted."""
        if not isinstance(data, dict):
            raise ConfigError(f"Recipe.from_dict needs a dict, got {type(data).__name__}.")
        return _from_dict({"type": "Recipe", **data}, Recipe)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_toml(cls, text: str) -> Recipe:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"recipe TOML does not parse: {exc}") from exc
        return cls.from_dict(data)


_NESTED.update(
    {
        ("Recipe", "pruning"): PruningConfig,
        ("Recipe", "quantization"): QuantizationConfig,
        ("Recipe", "runtime"): Runtime,
    }
)


def _layers_label(layers: tuple[LayerSetting, ...], shown: int = 6) -> str:
    """``[a=4b b=3b/50%]``, or for many layers a count of each setting: ``[37 layers: 8b x30, 4b x7]``.

    (Labels name a recipe in tables and messages; the full per-layer list is in ``to_dict()``.)
    """
    if len(layers) <= shown:
        return "[" + " ".join(item.label for item in layers) + "]"
    counts: dict[str, int] = {}
    for item in layers:
        setting = item.label.split("=", 1)[1]
        counts[setting] = counts.get(setting, 0) + 1
    parts = ", ".join(f"{setting} x{n}" for setting, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"[{len(layers)} layers: {parts}]"
