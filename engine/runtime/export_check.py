"""The export check: the ONNX model must compute what the PyTorch model computes, on more than the example.

``torch.onnx.export`` traces the model on the example inputs. Python control flow on tensor
values (``if x.sum() > 0: ...``) and shapes computed from values are frozen at what the example
took: the exported graph then answers every other input with the traced branch, silently. So
every fp32 export is run in ONNX Runtime and compared with the PyTorch model, before anything
is quantized, calibrated or measured:

- on the example inputs (the traced batch: a difference there is an exporter or pruning fault);
- on a sample of real data (calibration or evaluation data, where given): up to ``SAMPLE_ROWS``
  rows as one batch, and ``SINGLE_ROWS`` of them alone (a branch on one sample's values, or on
  the batch size, shows only there). Kept small: on MiniLM (128 tokens) or EfficientNet-Lite0
  (224x224) each row costs a PyTorch and an ONNX Runtime forward pass.

Tolerance: ``|onnx - torch| <= ATOL * scale + RTOL * |torch|`` per element, ``scale`` the
largest ``|torch|`` value (at least 1): ONNX Runtime and PyTorch sum in different orders, so
fp32 differences of ~1e-6 relative are normal; a traced wrong branch differs by whole units.
Measured on the fp32 exports of the real models: MiniLM (BertModel, 128 tokens) at most 4.6e-5 at
scale 5.9, EfficientNet-Lite0 (224x224) 1.3e-5 at scale 6.4, both under 3 % of the tolerance.

Structured pruning's own check (``engine.pruning.checks.check_onnx_matches``) uses the same
comparison with its own explanation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from squeezelab.engine.core.errors import ExportMismatchError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.runtime.providers import make_session

__all__ = ["Difference", "export_difference", "check_batches", "check_export", "RTOL", "ATOL", "SAMPLE_ROWS", "SINGLE_ROWS"]

RTOL, ATOL = 1e-3, 1e-4
SAMPLE_ROWS, SINGLE_ROWS = 4, 1

Reference = Callable[[Inputs], Any]  # inputs -> the PyTorch model's selected output (a tensor or array)

# TracerWarnings that mean "this value was frozen by the trace" (shape conditions in Hugging Face
# code give others, which are harmless).
_FREEZING = ("Python boolean", "Python number", "Python index", "Python float", "Python integer")


@dataclass(frozen=True)
class Difference:
    """Where ONNX Runtime and PyTorch disagree beyond the tolerance."""

    where: str
    max_abs: float  # nan when the shapes differ
    onnx_shape: tuple[int, ...]
    torch_shape: tuple[int, ...]
    scale: float

    @property
    def shapes_differ(self) -> bool:
        return self.onnx_shape != self.torch_shape

    def describe(self) -> str:
        if self.shapes_differ:
            return f"output shape {self.onnx_shape} in ONNX Runtime vs {self.torch_shape} in PyTorch on {self.where}"
        return (
            f"max abs difference {self.max_abs:.3g} on {self.where} (allowed {ATOL:g} x {self.scale:.3g} + "
            f"{RTOL:g} x |value| per element)"
        )


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        return value.numpy()
    return np.asarray(value)


def export_difference(session: Any, reference: Reference, inputs: Inputs, where: str, output_name: str | None = None) -> Difference | None:
    """The difference between ``session`` and ``reference`` on ``inputs``, or None within tolerance."""
    names = {i.name for i in session.get_inputs()}
    feeds = {n: a for n, a in inputs.feeds().items() if n in names}  # inputs named as the graph's (the export's spec)
    try:
        got = session.run([output_name] if output_name else None, feeds)[0]
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own message names the node and the shapes
        raise ExportMismatchError(
            f"the ONNX export does not run on {where} ({inputs.form()}), though it ran on the example: {exc}. A shape "
            "the trace fixed (a reshape to the example's batch or length) is the likely cause: write it with -1 or "
            "x.shape[...] so it stays symbolic, or export with exporter='dynamo'."
        ) from exc
    expected = _numpy(reference(inputs))
    scale = max(1.0, float(np.abs(expected).max(initial=0.0))) if expected.dtype.kind == "f" else 1.0
    if got.shape != expected.shape:
        return Difference(where, float("nan"), tuple(got.shape), tuple(expected.shape), scale)
    if np.allclose(got, expected, rtol=RTOL, atol=ATOL * scale, equal_nan=True):
        return None
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    return Difference(where, float(np.nanmax(diff)), tuple(got.shape), tuple(expected.shape), scale)


def check_batches(example: Inputs, sample: Inputs | None, label: str) -> list[tuple[str, Inputs]]:
    """The batches compared: the example, then up to ``SAMPLE_ROWS`` rows of ``sample`` together and
    the first ``SINGLE_ROWS`` of them that differ from the example, alone."""
    batches = [("the example inputs (the batch traced)", example)]
    if sample is None or len(sample) == 0:
        return batches
    rows = sample.slice(0, SAMPLE_ROWS)
    batches.append((f"{label} samples 0-{len(rows) - 1} (one batch)", rows))
    alone = [i for i in range(len(rows)) if not _same(rows.slice(i, i + 1), example)]  # measure's example is often row 0
    batches += [(f"{label} sample {i} (alone)", rows.slice(i, i + 1)) for i in alone[:SINGLE_ROWS]]
    return batches


def _same(a: Inputs, b: Inputs) -> bool:
    return a.names == b.names and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a.arrays, b.arrays))


def first_difference(
    onnx_bytes: bytes, reference: Reference, batches: Sequence[tuple[str, Inputs]], output_name: str | None = None
) -> Difference | None:
    """The first batch on which the export and ``reference`` disagree, or None."""
    session = make_session(onnx_bytes)  # the runtime's own threads: this is a check, not a timing
    for where, inputs in batches:
        found = export_difference(session, reference, inputs, where, output_name)
        if found is not None:
            return found
    return None


def _cause(found: Difference, notes: Sequence[str], also: str | None) -> str:
    freezing = [n for n in notes if any(word in n for word in _FREEZING)]
    cited = f' The exporter warned: "{freezing[0]}".' if freezing else ""
    if found.where.startswith("the example inputs"):
        cause = (
            "The export differs on the very inputs it was traced with: an op ONNX computes differently "
            "(or random ops in forward())"
        )
    else:
        kind = "shape" if found.shapes_differ else "value"
        cause = (
            "The example inputs agree, so the likely cause is data-dependent control flow in forward() (an `if` "
            f"on tensor values) or a data-dependent {kind}: the trace recorded only what the example inputs took"
        )
    if also:
        cause += f", or {also}"
    return cause + "." + cited


def check_export(
    onnx_bytes: bytes,
    reference: Reference,
    example: Inputs,
    sample: Inputs | None = None,
    *,
    label: str = "calibration_data",
    notes: Sequence[str] = (),
    also: str | None = None,
) -> None:
    """Raise ``ExportMismatchError`` unless the fp32 ONNX model computes what ``reference`` does.

    Args:
        onnx_bytes: the fp32 export.
        reference: ``inputs -> output`` of the PyTorch model (the tensor that was exported).
        example: the inputs the model was traced with.
        sample: real inputs (calibration or evaluation data) to compare on too; ``label`` names them.
        notes: the exporter's TracerWarnings (``export_onnx(..., notes=)``), cited as evidence.
        also: another likely cause to name (a structured pruning step's coupling).
    """
    found = first_difference(onnx_bytes, reference, check_batches(example, sample, label))
    if found is None:
        return
    raise ExportMismatchError(
        f"the ONNX export computes something else than the PyTorch model: {found.describe()}. "
        f"{_cause(found, notes, also)} Fix: write the branch as tensor ops (torch.where instead of `if`), or "
        "export with exporter='dynamo' (torch.export; torch.cond for a branch it must keep), or pass "
        "example_inputs that take the branch you ship.",
        difference=found.max_abs,
        where=found.where,
    )
