"""Export a PyTorch model to ONNX bytes, naming the layer that cannot be exported.

The result is one self-contained ``ModelProto`` serialisation (no external
``.onnx.data`` file), so its length is the size a user ships; a model past ONNX's
2 GB limit is exported as a file with its weights beside it (``OnnxFile``). The batch
dimension of every input and output is dynamic.

Exporter: the TorchScript exporter (``dynamo=False``) by default. On the small
CNN/MLP models here it exports in ~0.15 s against ~6 s for the dynamo exporter
with identical graphs, and on transformer encoders its graph was faster and
gained more from int8 (see FIELD-NOTES). ``exporter="dynamo"`` selects
``torch.export``-based export.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from squeezelab.engine.core.errors import ConfigError, ExportError, UnexportableLayerError
from squeezelab.engine.core.inputs import BATCH, SEQUENCE, Inputs, InputSpec
from squeezelab.engine.runtime.external_data import OnnxFile, gathered
from squeezelab.engine.runtime.size_limit import current_file_threshold
from squeezelab.engine.runtime.stages import release_memory

__all__ = ["export_onnx", "DEFAULT_OPSET", "tensor_bytes"]

log = logging.getLogger(__name__)

# 17 has LayerNormalization and per-channel QDQ; ONNX Runtime's quantizer supports it fully.
DEFAULT_OPSET = 17

def tensor_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (each shared tensor once): about its ONNX export's size."""
    seen: dict[int, int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        seen[tensor.data_ptr()] = max(seen.get(tensor.data_ptr(), 0), tensor.numel() * tensor.element_size())
    return sum(seen.values())


def _output_axes(model: nn.Module, example: Inputs, spec: InputSpec, rank: int | None = None) -> dict[int, str]:
    """Dynamic axes of the output: the batch axis, and every axis when an input has a sequence axis.

    (An encoder's ``(batch, sequence, hidden)`` output follows the input's length; declaring every
    axis of such an output symbolic is always correct, and leaves plain CNN/MLP graphs unchanged.)
    ``rank`` is the output's, when the caller ran the model already (a forward pass of a large encoder
    takes seconds); None runs it once here.
    """
    if not any(SEQUENCE in spec.axis_names(i).values() for i in range(len(spec.names))):
        return {0: BATCH}
    if rank is None:
        args, _ = _positional(example)
        with torch.no_grad():
            rank = model(*args).ndim
    return {axis: (BATCH if axis == 0 else f"output_{axis}") for axis in range(rank)}


def _positional(example: Inputs) -> tuple[tuple[torch.Tensor, ...], dict]:
    args, kwargs = example.torch()
    return (*args, *kwargs.values()), {}


def _export_once(model: nn.Module, example: Inputs, *, opset: int, exporter: str) -> bytes:
    return _export_noting(model, example, opset=opset, exporter=exporter, large=False)[0]


def _tracer_note(record: warnings.WarningMessage) -> str:
    """``message (file:line)`` of one TracerWarning: where the trace may have frozen a value."""
    text = " ".join(str(record.message).split())
    return f"{text} ({Path(record.filename).name}:{record.lineno})"


def _export_noting(
    model: nn.Module, example: Inputs, *, opset: int, exporter: str, output_rank: int | None = None, large: bool
) -> tuple[bytes, list[str]]:
    """The ONNX bytes (an ``OnnxFile`` when ``large``), and the TracerWarnings the TorchScript exporter gave
    (a data-dependent ``if`` shows up there as "Converting a tensor to a Python boolean ...": the export
    check cites them)."""
    spec = example.spec()
    names = list(spec.names)
    args, _ = _positional(example)
    if exporter == "torchscript":
        dynamic_axes = {name: spec.axis_names(i) for i, name in enumerate(names)}
        dynamic_axes["output"] = _output_axes(model, example, spec, output_rank)
        with warnings.catch_warnings():
            # The exporter's deprecation notice is about the default changing, not about this call;
            # tracing Hugging Face models warns about Python conditions on shapes it then records.
            warnings.filterwarnings("ignore", message=".*TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*aten::index operator of advanced indexing.*")
            warnings.filterwarnings("ignore", message=".*Only steps=1 can be constant folded.*")
            with warnings.catch_warnings(record=True) as seen, tempfile.TemporaryDirectory() as tmp:
                # Recorded, not shown (each record holds its message and source line).
                warnings.simplefilter("always", torch.jit.TracerWarning)
                # To a file, not a BytesIO: the buffer and its getvalue() were two more copies of the model,
                # held beside the exporter's own at the export's peak.
                path = Path(tmp) / "model.onnx"
                torch.onnx.export(
                    model,
                    args,
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=names,
                    output_names=["output"],
                    dynamic_axes=dynamic_axes,
                    do_constant_folding=True,
                )
                # Past the limit torch writes the weights as files beside the graph: they are gathered into
                # one data file in a working folder that lives as long as the model.
                onnx_bytes = _as_large(path) if large else path.read_bytes()
        tracer = [w for w in seen if issubclass(w.category, torch.jit.TracerWarning)]
        for w in seen:  # anything else is shown as it would have been
            if w not in tracer:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        notes = list(dict.fromkeys(_tracer_note(w) for w in tracer))
        return (onnx_bytes if large else _without_empty_trailing_inputs(onnx_bytes)), notes
    # dynamo: export to a temp dir (it writes external data by default), then embed the weights.
    import onnx

    dims = {BATCH: torch.export.Dim(BATCH), SEQUENCE: torch.export.Dim(SEQUENCE)}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=True,
            opset_version=max(opset, 18),
            input_names=names,
            output_names=["output"],
            dynamic_shapes=tuple({a: dims[n] for a, n in spec.axis_names(i).items()} for i in range(len(names))),
            verbose=False,
        )
        if large:
            return _as_large(path), []
        proto = onnx.load(str(path))  # pulls external data back in
        return proto.SerializeToString(), []


def _as_large(path: Path) -> OnnxFile:
    """The export in ``path`` (its weights in it or beside it) as an ``OnnxFile`` in a working folder:
    the same graph as the bytes path gives (empty trailing inputs dropped), its weights in one data file,
    copied tensor by tensor (never the whole model in memory: torch writes one file per weight past 2 GB)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    _drop_empty_trailing_inputs(proto)
    model = gathered(proto, path.parent)
    release_memory()  # the exporter's folded weights and serialisation buffers, freed, kept by the C heap
    return model


def _leaf_inputs(model: nn.Module, example: Inputs) -> dict[str, tuple]:
    """Run the model once, recording the positional inputs of every leaf module."""
    seen: dict[str, tuple] = {}

    def recorder(fqn: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            # Returns None: a forward hook that returns a value would replace the output.
            seen.setdefault(fqn, tuple(args))

        return hook

    hooks = [
        module.register_forward_hook(recorder(fqn))
        for fqn, module in model.named_modules()
        if fqn and not list(module.children())
    ]
    try:
        with torch.no_grad():
            model(*_positional(example)[0])
    finally:
        for h in hooks:
            h.remove()
    return seen


def _find_culprit(model: nn.Module, example: Inputs, *, opset: int, exporter: str) -> str | None:
    """Export each leaf module on its own; the first that fails is the culprit."""
    for fqn, args in _leaf_inputs(model, example).items():
        if not args or not all(isinstance(a, torch.Tensor) for a in args):
            continue
        module = model.get_submodule(fqn)
        try:
            _export_once(module, Inputs.of(tuple(a.detach() for a in args)), opset=opset, exporter=exporter)
        except Exception:  # noqa: BLE001 - any failure identifies the layer
            return fqn
    return None


def _without_empty_trailing_inputs(onnx_bytes: bytes) -> bytes:
    """The graph with every node's trailing empty optional inputs left out (the same graph to ONNX).

    The TorchScript exporter writes ``F.pad`` / ``nn.ZeroPad2d`` as ``Pad(x, pads, "")``. ONNX Runtime's
    PadFusion, which folds a zero ``Pad`` into the next convolution's ``pads``, refuses a Pad whose
    ``constant_value`` input is present but empty, so EfficientNet-Lite's five "same" paddings ran as
    separate ops, under static int8 each in float between a DequantizeLinear and a QuantizeLinear.
    Without the empty name they fold away: EfficientNet-Lite0 at batch 32, one thread, fp32 459 -> 371 ms
    (the pads and the layout reorders around them), static int8 317 -> 239 ms.
    """
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    return model.SerializeToString() if _drop_empty_trailing_inputs(model) else onnx_bytes


def _drop_empty_trailing_inputs(model: object) -> int:
    """Drop every node's trailing empty inputs in place; how many."""
    dropped = 0
    for node in model.graph.node:
        while node.input and node.input[-1] == "":
            node.input.pop()
            dropped += 1
    return dropped


def export_onnx(
    model: nn.Module,
    example: Inputs,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
    notes: list[str] | None = None,
    output_rank: int | None = None,
) -> bytes:
    """ONNX bytes of ``model`` in eval mode, weights embedded, batch (and sequence) axes dynamic.

    ``model`` takes its inputs positionally, in the order of ``example.names`` (wrap keyword
    models in ``engine.outputs.SelectedOutput``); the graph's inputs are named after them and
    its one output is named ``output``.

    ``notes``, when given, receives the exporter's TracerWarnings as ``message (file:line)``. A
    trace records the branch the example took: a note such as "Converting a tensor to a Python
    boolean might cause the trace to be incorrect" marks a place where another input may take
    another branch. They are evidence for the export check (``engine.runtime.export_check``), not
    errors: Hugging Face models give some for conditions on shapes that are correct.

    ``output_rank``, when given, is the rank of the model's output on ``example`` (saves a forward pass).

    A model whose tensors are past ``size_limit.current_file_threshold()`` (1 GiB; ONNX's protobuf limit is 2 GB) comes back
    as an ``OnnxFile`` (``engine.runtime.external_data``): the ``.onnx`` file's bytes, its weights in one
    data file beside it in a working folder.

    Raises:
        UnexportableLayerError: export failed and a single layer reproduces the failure.
        ExportError: export failed for a reason no single layer explains.
    """
    if exporter not in ("torchscript", "dynamo"):
        raise ConfigError(f"exporter={exporter!r}; use 'torchscript' or 'dynamo'.")
    large = tensor_bytes(model) > current_file_threshold()
    was_training = model.training
    model.eval()
    try:
        onnx_bytes, seen = _export_noting(model, example, opset=opset, exporter=exporter, output_rank=output_rank,
                                          large=large)
        if notes is not None:
            notes.extend(seen)
        return onnx_bytes
    except Exception as exc:  # torch raises many types here
        culprit = _find_culprit(model, example, opset=opset, exporter=exporter)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if culprit is not None:
            layer = model.get_submodule(culprit)
            name = culprit.removeprefix("model.") if type(model).__name__ == "SelectedOutput" else culprit
            raise UnexportableLayerError(
                f"layer {name!r} ({type(layer).__name__}) cannot be exported to ONNX "
                f"(opset {opset}): {first_line}. Replace it with exportable ops, or compress with "
                "runtime=Simulated(), which does not need ONNX.",
                layer=name,
            ) from exc
        raise ExportError(
            f"torch.onnx.export failed (opset {opset}, {exporter} exporter): {first_line}"
        ) from exc
    finally:
        model.train(was_training)
