"""The gate's fp32 baseline kept on disk: its ONNX export and its outputs on the gate's data.

Every gate measures the candidate against the uncompressed model, and for a PyTorch baseline that
means exporting it, checking the export against PyTorch on the data, and running it over every
sample. On an unchanged baseline a second gate run repeats all of that for nothing (for MiniLM, most
of the gate's time). ``BaselineCache`` keeps the export and the outputs under a key of everything they
depend on:

- the model (``model_fingerprint``: weights, buffers, module tree, attributes, the code of its classes),
- the data (``data_fingerprint``: inputs and targets by content),
- the output evaluated (its name, or a callable's code), the example inputs it was exported with,
- the versions of squeezelab, torch, onnx, onnxruntime and numpy, and the CPU (``runtime_fingerprint``).

Change any of these and the key changes, so a stale baseline is never read. One entry is a folder
(``model.onnx``, ``outputs.npy``, ``meta.json`` holding the checksums of both), written in a
temporary folder and renamed into place, so a killed run leaves a whole entry or none; an entry whose
checksums fail is reported (a warning naming it), removed, and measured again; a folder that cannot
be written is reported the same way and the gate goes on uncached (the cache only saves time). Only PyTorch
baselines measured with data are cached: an ONNX file or a ``Compressed`` result has no export to save.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from squeezelab.engine.runtime.external_data import model_sha256, read_model, write_model
from squeezelab.engine.core.errors import CacheError
from squeezelab.engine.core.examples import example_batch
from squeezelab.engine.core.fingerprints import callable_fingerprint, data_fingerprint, fingerprint, model_fingerprint, runtime_fingerprint
from squeezelab.engine.core.inputs import InputSpec
from squeezelab.engine.core.outputs import selector_name
from squeezelab.engine.core.recipe import Recipe
from squeezelab.engine.core.samples import Samples
from squeezelab.engine.explore.cache import default_cache_dir
from squeezelab.engine.measurement.metrics import as_compressed, outputs_of
from squeezelab.engine.pipeline.compressed import Compressed

__all__ = ["BaselineCache", "CachedBaseline", "default_baseline_dir"]

FORMAT = 1  # bump when an entry's layout changes: old entries then simply miss


def default_baseline_dir() -> Path:
    """``gate-baselines`` in squeezelab's cache folder (``$SQUEEZELAB_CACHE``, else ``~/.cache/squeezelab``)."""
    return default_cache_dir() / "gate-baselines"


@dataclass(frozen=True)
class CachedBaseline:
    """A baseline ready to measure against: its ``Compressed`` export, its outputs on the data, and where they came from."""

    compressed: Compressed
    outputs: np.ndarray
    status: str  # "hit": read from the cache; "stored": measured now and saved; "off": measured, not cached


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class BaselineCache:
    """Baseline exports and outputs under ``root`` (``None``: nothing is stored, every lookup measures)."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = None if root is None else Path(root)
        if self.root is not None and self.root.exists() and not self.root.is_dir():
            raise CacheError(f"the baseline cache {str(self.root)!r} is a file; pass a folder.", path=self.root)

    def key(self, model: nn.Module, samples: Samples, example_inputs: Any, output: Any) -> str:
        """Everything the export and the outputs depend on (see the module's docstring)."""
        shown = callable_fingerprint(output) if callable(output) else selector_name(output)
        example = None if example_inputs is None else list(example_batch(example_inputs).arrays)
        return fingerprint("gate baseline", FORMAT, model_fingerprint(model), data_fingerprint(samples), shown, example,
                           runtime_fingerprint())

    def baseline(self, model: nn.Module, samples: Samples, example_inputs: Any, output: Any, eval_batch_size: int) -> CachedBaseline:
        """The fp32 baseline of ``model`` on ``samples``: from the cache when it holds it, else measured (and stored)."""
        key = None if self.root is None else self.key(model, samples, example_inputs, output)
        if key is not None:
            found = self._read(key, model, samples, example_inputs, output)
            if found is not None:
                return found
        compressed = as_compressed(model, samples, example_inputs, output)
        outputs = outputs_of(compressed, samples, eval_batch_size)
        if key is None:
            return CachedBaseline(compressed, outputs, "off")
        try:
            self._write(key, compressed, outputs)
        except CacheError as exc:  # the cache only saves time: the gate goes on, saying why nothing was kept
            warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
            return CachedBaseline(compressed, outputs, "not cached (the cache folder cannot be written)")
        return CachedBaseline(compressed, outputs, "stored")

    def _entry(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / key

    def _read(self, key: str, model: nn.Module, samples: Samples, example_inputs: Any, output: Any) -> CachedBaseline | None:
        folder = self._entry(key)
        if not folder.is_dir():
            return None
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            onnx_bytes = read_model(folder / "model.onnx")  # past 2 GB: its weights in model.onnx.data beside it
            raw = (folder / "outputs.npy").read_bytes()
            ok = meta["key"] == key and meta["onnx_sha256"] == model_sha256(onnx_bytes) and meta["outputs_sha256"] == _sha(raw)
            outputs = np.load(io.BytesIO(raw), allow_pickle=False) if ok else None
        except (OSError, ValueError, KeyError, TypeError):  # a half-deleted or hand-edited entry
            ok, outputs = False, None
        if not ok or outputs is None or len(outputs) != len(samples):
            warnings.warn(f"squeezelab gate baseline cache entry {folder} is corrupt; it is removed and the "
                          "baseline measured again.", RuntimeWarning, stacklevel=3)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        example = example_batch(example_inputs) if example_inputs is not None else samples.inputs.slice(0, 1)
        compressed = Compressed(
            model=model, recipe=Recipe(), example=example, onnx_bytes=onnx_bytes, artifact_bytes=onnx_bytes,
            output=output, output_name=meta["output_name"], spec=InputSpec.from_dict(meta["spec"]),
            details={**meta["details"], "baseline_cache": "hit"},
        )
        return CachedBaseline(compressed, outputs, "hit")

    def _write(self, key: str, compressed: Compressed, outputs: np.ndarray) -> None:
        """Write the entry in a temporary folder and rename it into place: readers see all of it or none."""
        folder = self._entry(key)
        buffer = _npy_bytes(outputs)
        details = json.loads(json.dumps(compressed.details, default=str))  # plain JSON values only
        meta = {"key": key, "format": FORMAT, "spec": compressed.spec.to_dict(), "output_name": compressed.output_name,
                "details": details, "onnx_sha256": model_sha256(compressed.onnx_bytes or b""), "outputs_sha256": _sha(buffer)}
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
            write_model(compressed.onnx_bytes or b"", tmp / "model.onnx")  # an OnnxFile with its data file
            (tmp / "outputs.npy").write_bytes(buffer)
            (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
            try:
                os.rename(tmp, folder)
            except OSError:  # another run stored the same entry first: theirs is as good as ours
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError as exc:
            raise CacheError(
                f"cannot write the gate's baseline cache at {str(folder.parent)!r}: {exc.strerror or exc}. Pass "
                "another folder (--compress-budget-cache=DIR) or --compress-budget-cache=none.", path=folder.parent,
            ) from exc


def _npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(array), allow_pickle=False)
    return out.getvalue()
