"""What the model commands take: MODEL, ``--weights``, DATA (``.npz``), ``--recipe``, the grid's method names and ``--example-shape``.

Everything here is checked before any slow work: the ``argparse`` types below check the text of an
argument (``ArgumentTypeError``: one line, exit 2); ``load_model`` / ``load_data`` then import the
factory, load the weights and read the arrays, raising ``ConfigError`` / ``DataError`` (the command
turns them into the same one line) before anything is compressed or measured.

MODEL is an ONNX file (``model.onnx``) or a PyTorch factory ``package.module:function`` (or
``path/to/file.py:function``), a function called with no arguments that returns an ``nn.Module``.
Its weights come from ``--weights FILE.safetensors``; a ``.pt`` / ``.pth`` state dict is read with
``torch.load(weights_only=True)``, which refuses pickled code, so a checkpoint cannot run anything.

DATA is an ``.npz`` file: a ``targets`` (or ``labels``) array holds the targets, if any (without
them the metric compares with the uncompressed model's outputs); one other array is the model's
single input, whatever its name; several are inputs by name (an ONNX file's input names, a
PyTorch model's keyword arguments, e.g. ``input_ids`` and ``attention_mask``). Arrays are read
with ``allow_pickle=False``; a file that is not an npz (zip) archive, such as a CSV renamed ``.npz``,
is refused by its first bytes, naming what it looks like.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeezelab._cli_args import checked
from squeezelab.engine.core.errors import ConfigError, DataError

__all__ = [
    "ModelSpec", "model_spec", "weights_file", "npz_file", "recipe_spec", "example_shape", "fraction_list",
    "width_list", "drop_limit", "table_choice", "load_model", "load_data", "example_for", "TARGET_KEYS", "WEIGHT_SUFFIXES",
]

TARGET_KEYS = ("targets", "labels")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


@dataclass(frozen=True)
class ModelSpec:
    """MODEL as given: an ONNX file (``path``) or a factory ``module:function`` (``factory``)."""

    text: str
    path: Path | None = None
    factory: tuple[str, str] | None = None

    @property
    def is_onnx(self) -> bool:
        return self.path is not None


def model_spec(text: str) -> ModelSpec:
    """An existing ``.onnx`` file, or ``package.module:function`` / ``file.py:function``."""
    if text.endswith(".onnx"):
        path = Path(text)
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"ONNX file {text!r} not found; pass an existing .onnx file")
        return ModelSpec(text, path=path)
    module, colon, function = text.rpartition(":")
    if not colon or not module or not function.isidentifier():
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ONNX file (.onnx) nor a PyTorch factory; pass model.onnx or "
            "package.module:function (a function that returns the nn.Module)"
        )
    if module.endswith(".py") and not Path(module).is_file():
        raise argparse.ArgumentTypeError(f"factory file {module!r} not found; pass an existing .py file")
    return ModelSpec(text, factory=(module, function))


def weights_file(text: str) -> Path:
    """An existing ``.safetensors`` (or ``.pt`` / ``.pth`` state dict, read with weights_only=True)."""
    path = Path(text)
    if path.suffix not in WEIGHT_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a weights file this command reads; pass FILE.safetensors (or a .pt/.pth state dict, "
            "read with torch.load(weights_only=True))"
        )
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"weights file {text!r} not found")
    return path


def npz_file(text: str) -> Path:
    """An existing ``.npz`` file (arrays by input name, targets under ``targets`` or ``labels``)."""
    path = Path(text)
    if path.suffix != ".npz":
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an .npz file; save arrays by input name with numpy.savez (targets under 'targets')"
        )
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"data file {text!r} not found")
    return path


def table_choice(kind: str) -> Callable[[str], str]:
    """An argparse ``type=`` for a string of the engine's table (``--quantization``, ``--pruning``, ``--runtime``).

    It returns the table's name (an old spelling read as its choice); an unknown string is the
    table's one message, naming the allowed ones.
    """
    from squeezelab.engine.core import choices

    def parse(text: str) -> str:
        try:
            return choices.canonical_name(kind, text, otherwise="")
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = kind  # argparse names a type by its function name in some messages
    return parse


def recipe_spec(text: str) -> Any:
    """A recipe name (``squeezelab.engine.core.choices.RECIPES``) or a ``recipe.toml`` file (``Recipe.to_toml``'s form)."""
    from squeezelab.engine.core import choices
    from squeezelab.engine.core.errors import SqueezeError
    from squeezelab.engine.core.recipe import Recipe

    if text.endswith(".toml"):
        path = Path(text)
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"recipe file {text!r} not found")
        try:
            return Recipe.from_toml(path.read_text(encoding="utf-8"))
        except (SqueezeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(f"recipe file {text!r} is not a recipe: {exc}") from None
    try:
        return choices.resolve("recipe", text, otherwise="a recipe.toml file (Recipe.to_toml())")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def example_shape(text: str) -> tuple[int, ...]:
    """A comma-separated shape of positive integers with the batch first, e.g. ``1,1,8,8``."""
    return checked(text, lambda t: tuple(int(p) for p in t.split(",")), lambda shape: bool(shape) and min(shape) >= 1,
                   unreadable="{text} is not a shape; pass comma-separated sizes, batch first, e.g. 1,1,8,8",
                   refused="{text} is not a shape; every size must be >= 1, e.g. 1,1,8,8")


def width_list(text: str) -> list[int]:
    """Comma-separated weight widths (2..8, 16, 32), e.g. ``8,4,2``; empty for none."""
    from squeezelab.engine.core.arguments import width

    if not text.strip():
        return []
    try:
        values = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of bit widths; pass e.g. 8,4,2") from None
    try:
        return [width(v, passed=values) for v in values]
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def fraction_list(text: str) -> list[float]:
    """Comma-separated sparsities in [0, 1), e.g. ``0,0.5,0.75``; empty for none."""
    if not text.strip():
        return []
    return checked(text, lambda t: [float(p) for p in t.split(",")], lambda values: all(0 <= v < 1 for v in values),
                   unreadable="{text} is not a list of sparsities; pass e.g. 0,0.5,0.75",
                   refused="{text}: each sparsity must be in [0, 1), e.g. 0,0.5,0.75")


def drop_limit(text: str) -> float:
    """A finite number >= 0: the largest drop of the metric a rule allows, in its units (0.01 = one point)."""
    return checked(text, float, lambda v: math.isfinite(v) and v >= 0,
                   unreadable="{text} is not a number; pass e.g. 0.01 (one point of top-1 accuracy)",
                   refused="{text} is not allowed; pass a finite number >= 0, e.g. 0.01")


def _import_factory(spec: ModelSpec) -> Any:
    module_name, function = spec.factory
    try:
        if module_name.endswith(".py"):
            loaded = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            module = importlib.util.module_from_spec(loaded)
            loaded.loader.exec_module(module)
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")  # package.module from the working directory, as python -m finds it
            module = importlib.import_module(module_name)
    except Exception as exc:  # an ImportError or anything the module raises while loading
        raise ConfigError(f"cannot import factory module {module_name!r}: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise ConfigError(f"{module_name!r} has no function {function!r}; pass package.module:function")
    return factory


def _load_weights(model: Any, path: Path) -> None:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickled code, or not a torch file
            raise ConfigError(f"cannot read {str(path)!r} as a state dict with weights_only=True: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ConfigError(f"the weights in {str(path)!r} do not fit the model: {' '.join(str(exc).split())[:300]}") from None


def load_model(spec: ModelSpec, weights: Path | None = None) -> Any:
    """The ONNX path, or the factory's ``nn.Module`` in eval mode with ``weights`` loaded."""
    if spec.is_onnx:
        if weights is not None:
            raise ConfigError(f"--weights applies to a PyTorch factory; the ONNX file {spec.text!r} holds its weights.")
        return spec.path
    from torch import nn

    factory = _import_factory(spec)
    try:
        model = factory()
    except Exception as exc:
        raise ConfigError(f"the factory {spec.text!r} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the factory {spec.text!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        _load_weights(model, weights)
    return model.eval()


def load_data(path: Path, what: str = "--data") -> tuple[Any, Any]:
    """``(inputs, targets)`` from an ``.npz``: targets under ``targets``/``labels`` (or None), inputs by name."""
    import numpy as np

    _check_npz_magic(path, what)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise DataError(f"{what} {str(path)!r} cannot be read as .npz: {exc}") from None
    target_keys = [k for k in TARGET_KEYS if k in arrays]
    if len(target_keys) > 1:
        raise DataError(f"{what} {str(path)!r} holds both 'targets' and 'labels'; keep one of them for the targets.")
    targets = arrays.pop(target_keys[0]) if target_keys else None
    if not arrays:
        raise DataError(f"{what} {str(path)!r} holds no input arrays; save the inputs by name beside 'targets'.")
    lengths = {k: len(v) if v.ndim else 0 for k, v in arrays.items()}
    if targets is not None:
        lengths[target_keys[0]] = len(targets) if targets.ndim else 0
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise DataError(f"{what} {str(path)!r}: every array needs the same number of samples (first axis); got {lengths}.")
    inputs = next(iter(arrays.values())) if len(arrays) == 1 else arrays
    return inputs, targets


def _check_npz_magic(path: Path, what: str) -> None:
    """An ``.npz`` is a zip archive (``PK\\x03\\x04``); anything else is named for what it looks like,
    before numpy reads it (it would try pickle and say only that pickles are not allowed)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise DataError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # a zip, or an empty one (numpy.savez of nothing)
        return
    if head.startswith(b"\x93NUMPY"):
        looks = "a single .npy array"
    elif head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        looks = f"text (it starts {head[:24].decode('ascii', 'replace')!r}: a CSV?)"
    else:
        looks = "not a zip archive" if head else "empty"
    raise DataError(
        f"{what} {str(path)!r} is not an .npz archive: it is {looks}. Save the arrays by input name with "
        "numpy.savez(path, x=inputs, targets=labels)."
    )


def example_for(model: Any, data: tuple[Any, Any] | None, shape: tuple[int, ...] | None) -> Any:
    """One batch for a PyTorch model: the data's first sample, else zeros of ``--example-shape``."""
    import numpy as np

    if data is not None:
        inputs = data[0]
        return {k: v[:1] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[:1]
    if shape is not None:
        return np.zeros(shape, dtype=np.float32)
    if isinstance(model, Path):
        return None  # an ONNX file names its own inputs
    raise ConfigError("a PyTorch factory needs an example batch: pass --data or --calibration (an .npz), or --example-shape 1,1,8,8.")
