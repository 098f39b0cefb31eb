"""What ``compress`` costs as the model grows: each stage's wall time and the process's peak memory, beside ONNX
Runtime's own ``quantize_dynamic`` on the same fp32 file, in one run.

Per model size (Hugging Face ``BertModel`` from a ``BertConfig``, random weights, eager attention, sequence 128,
example batch ``--batch``), three child processes, one after another, so each one's peak resident memory
(``ru_maxrss``) is its own:

1. ``squeezelab``: build the model, ``sl.compress(model, Recipe(runtime=Int8Dynamic()))``; the wall time, the
   process peak, and each stage recorded in ``Compressed.details["stages"]`` (wall time, peak resident memory
   sampled every 20 ms);
2. ``export``: the fp32 ONNX file ONNX Runtime's row quantizes (squeezelab's own export of the same model);
3. ``ort``: ``onnxruntime.quantization.quantize_dynamic`` on that file (per-channel, signed int8 weights, what
   squeezelab's ``Int8Dynamic()`` asks of it; no transformer fusion), alone in its process.

"peak / fp32" is the process peak over the model's fp32 bytes; the process holds the PyTorch model (and its
libraries: ~0.8 GB before any work) too. The issue's targets are printed beside the figures. Nothing is
asserted.

``--large SIZE`` runs the whole path of a model past ONNX's 2 GB limit (``24x1536``: ~730 M parameters,
2.9 GB fp32) in one child process: the fp32 baseline, ``Int8Dynamic()`` and ``WeightOnly()`` (4-bit) compressed
from the PyTorch model (each an ``OnnxFile``: weights as external data), the PyTorch model then released, each
result saved and loaded back, and each gated against the fp32 baseline as the pytest plugin gates (``measured_pair``
then ``judge``: cosine to the fp32 outputs on ``--samples`` inputs, size, executable; ``--rounds`` latency rounds
at batch 1). Every step's wall time and peak resident memory are recorded as ``compress`` records its stages.
``--protobuf-limit BYTES`` lowers the limit, so a small size rehearses that path.

    flock /work/bench.lock .venv/bin/python benchmarks/scale.py --sizes 4x256 12x768            # ~3 min
    flock /work/bench.lock .venv/bin/python benchmarks/scale.py --sizes 24x1024                 # ~6 GB, ~3 min
    flock /work/bigmem.lock flock /work/bench.lock prlimit --as=21000000000 \
        .venv/bin/python benchmarks/scale.py --sizes --large 24x1536                            # ~13 GB, ~15 min
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from _machine import cpu_line, load_average  # noqa: E402  (benchmarks/, beside this script)
from _markdown import Page, add_markdown_option  # noqa: E402

# The issue's figures (this 2-core VNNI machine, before) and targets, per size.
ISSUE = {
    "4x256": {"before": "3.1 s, 1.2 GB", "target": "no regression"},
    "12x768": {"before": "26 s, 5.9 GB (13x)", "target": "-"},
    "24x1024": {"before": "104 s, 17.6 GB (13x)", "target": "<= 30 s, <= 6 GB (<= 4.5x fp32)"},
    "24x1536": {"before": "does not fit", "target": "int8 and 4-bit compress, measured and gated"},
}


def _model(size: str, seed: int = 0) -> Any:
    import torch
    import transformers

    layers, hidden = (int(v) for v in size.split("x"))
    config = transformers.BertConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden, attn_implementation="eager",
    )
    torch.manual_seed(seed)
    return transformers.BertModel(config).eval()


def _example(model: Any, batch: int, seq: int = 128) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, model.config.vocab_size, (batch, seq), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def child_squeezelab(size: str, batch: int) -> dict[str, Any]:
    import squeezelab as sl

    model = _model(size)
    fp32 = sum(p.numel() * 4 for p in model.parameters())
    example = _example(model, batch)
    started, cpu = time.perf_counter(), time.process_time()
    try:
        result = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=example)
    except sl.SqueezeError as exc:
        return {"fp32_bytes": fp32, "error": f"{type(exc).__name__}: {exc}"[:240]}
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "fp32_bytes": fp32, "wall_s": wall, "cpu_s": cpu, "peak_bytes": _peak_bytes(), "size_bytes": result.size_bytes,
        "stages": result.details.get("stages", []), "fusion": result.details.get("choices", {}).get("fusion"),
    }


def child_large(size: str, batch: int, samples: int, rounds: int, limit: int) -> dict[str, Any]:
    """The whole path of a model past the limit: compress (fp32, int8, 4-bit), save, load, gate; each step recorded."""
    import numpy as np
    import torch

    import squeezelab as sl
    from squeezelab.checks import Budget, judge
    from squeezelab.checks.pairing import measured_pair, settings_for
    from squeezelab.engine.core.samples import read_samples
    from squeezelab.engine.runtime.external_data import is_file_model
    from squeezelab.engine.runtime.size_limit import protobuf_limit
    from squeezelab.engine.runtime.stages import recording, release_memory, stage

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    out: dict[str, Any] = {"steps": []}
    with protobuf_limit(limit), recording() as log, tempfile.TemporaryDirectory(prefix="squeezelab-large-") as tmp:
        with stage("build PyTorch model"):
            model = _model(size)
            out["fp32_bytes"] = sum(p.numel() * 4 for p in model.parameters())
            example = _example(model, batch)
        recipes = {"fp32": sl.Recipe(), "int8": sl.Recipe(runtime=sl.Int8Dynamic()),
                   "4-bit": sl.Recipe(runtime=sl.WeightOnly())}
        results: dict[str, Any] = {}
        for name, recipe in recipes.items():
            before = len(log.records)
            with stage(f"compress {name}"):
                result = sl.compress(model, recipe, example_inputs=example)
            result.model = None  # compress's private copy of the PyTorch model (2.9 GB) is not needed past here
            out[f"stages {name}"] = log.records[before:]  # compress's own stages, nested under this step
            # what the result holds: a file (weights beside it) or bytes; never the bytes themselves (a 730 MB repr)
            out[f"{name} file"] = repr(result.onnx_bytes) if is_file_model(result.onnx_bytes) else "bytes"
            out[f"{name} size_bytes"] = result.size_bytes
            results[name] = result
        del model  # the gate below compares ONNX files: no PyTorch model is held
        reference = results["fp32"].predict(example)
        for name in ("int8", "4-bit"):
            with stage(f"save {name}"):
                path = results[name].save(Path(tmp) / f"{name}.onnx")
            with stage(f"load {name}"):
                loaded = sl.compress(path, sl.Recipe())
                same = bool(np.array_equal(loaded.predict(example), results[name].predict(example)))
            out[f"{name} loaded_same_outputs"] = same
            del loaded
        torch.manual_seed(2)
        ids = torch.randint(1, 30522, (samples, 128))
        data = read_samples(({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, None))
        for name, compression in (("int8", 3.5), ("4-bit", 5.0)):
            budget = Budget(max_accuracy_drop=0.05, min_compression=compression, require_executable=True,
                            max_latency_ms=60_000.0, latency_rounds=rounds)
            with stage(f"gate {name}"):
                pair, _ = measured_pair(results["fp32"], results[name], data, settings_for(budget), budget, None)
                verdict = judge(pair, budget, budget_name=f"large {name}")
            results[name].close_sessions()  # each session holds a model's weights: one gate's at a time
            out[f"gate {name}"] = {
                "passed": verdict.passed, "cosine_drop": pair.candidate.drop.drop if pair.candidate.drop else None,
                "compression": results["fp32"].size_bytes / results[name].size_bytes,
                "latency_ms": pair.candidate.latency_ms, "baseline_latency_ms": pair.baseline.latency_ms,
                "failures": [] if verdict.passed else verdict.failure_message().splitlines()[:4],
            }
        out["first_output_cosine"] = {
            name: float(np.dot(r.ravel(), reference.ravel()) / np.linalg.norm(r) / np.linalg.norm(reference))
            for name, r in ((n, results[n].predict(example)) for n in ("int8", "4-bit"))}
        results.clear()  # the models and their sessions, before the report is serialised (it ran out of memory)
        release_memory()
    out["steps"] = [r for r in log.records if "." not in r["stage"]]
    out["peak_bytes"] = _peak_bytes()
    return out


def child_export(size: str, batch: int, path: str) -> dict[str, Any]:
    from squeezelab.engine.core.inputs import Inputs
    from squeezelab.engine.core.outputs import SelectedOutput
    from squeezelab.engine.runtime.export import export_onnx
    from squeezelab.engine.runtime.external_data import write_model

    model = _model(size)
    example = Inputs.of(_example(model, batch))
    spec = example.spec()
    exported = export_onnx(SelectedOutput(model, spec.kind, spec.names), example)
    written = write_model(exported, Path(path))  # past 1 GiB an OnnxFile: the graph and its data file beside it
    return {"file_bytes": sum(p.stat().st_size for p in written)}


def child_ort(path: str) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(path).with_suffix(".int8.onnx")
    started, cpu = time.perf_counter(), time.process_time()
    quantize_dynamic(path, out, per_channel=True, weight_type=QuantType.QInt8)
    return {"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu, "peak_bytes": _peak_bytes(),
            "size_bytes": out.stat().st_size}


def _run_child(*args: str) -> dict[str, Any]:
    # --large shows its progress (each stage's start and end, with the resident memory) on stderr as it runs
    done = subprocess.run([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE,
                          stderr=None if args[0] == "large" else subprocess.PIPE, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": ((done.stderr or "").strip().splitlines() or [f"failed (exit {done.returncode})"])[-1][:240]}
    return json.loads(lines[-1])


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _stage_rows(page: Any, rows: list[dict[str, Any]]) -> None:
    page.line("| stage | wall | CPU | peak resident |")
    page.line("|---|---:|---:|---:|")
    for row in rows:
        page.line(f"| {row['stage']} | {row['wall_s']:.2f} s | {row.get('cpu_s', float('nan')):.2f} s | "
                  f"{_gb(row['peak_rss_bytes'])} |")


def report(page: Any, size: str, ours: dict[str, Any], ort: dict[str, Any]) -> None:
    fp32 = ours.get("fp32_bytes", 0)
    page.line(f"\n#### BERT {size}: {fp32 / 4e6:.0f} M parameters, fp32 {_gb(fp32)}\n")
    page.line(f"Issue: before {ISSUE.get(size, {}).get('before', '-')}; target {ISSUE.get(size, {}).get('target', '-')}.")
    if "error" in ours:
        page.line(f"squeezelab: {ours['error']}")
    else:
        page.line(f"squeezelab `Int8Dynamic()`: **{ours['wall_s']:.1f} s** wall ({ours['cpu_s']:.1f} s CPU), process peak "
                  f"**{_gb(ours['peak_bytes'])}** ({ours['peak_bytes'] / fp32:.1f}x fp32), int8 file {_gb(ours['size_bytes'])}, "
                  f"fusion {ours['fusion']}.\n")
        _stage_rows(page, ours["stages"])
    page.line("")
    if "error" in ort:
        page.line(f"ONNX Runtime quantize_dynamic: {ort['error']}")
    else:
        page.line(f"ONNX Runtime `quantize_dynamic` (per-channel, alone on the file): {ort['wall_s']:.1f} s wall "
                  f"({ort['cpu_s']:.1f} s CPU), "
                  f"process peak {_gb(ort['peak_bytes'])} ({ort['peak_bytes'] / fp32:.1f}x fp32).")


def report_large(page: Any, size: str, out: dict[str, Any]) -> None:
    fp32 = out.get("fp32_bytes", 0)
    page.line(f"\n#### Past 2 GB: BERT {size}, {fp32 / 4e6:.0f} M parameters, fp32 {_gb(fp32)}\n")
    if "error" in out:
        page.line(f"failed: {out['error']}")
        return
    page.line(f"Whole run: process peak **{_gb(out['peak_bytes'])}** ({out['peak_bytes'] / fp32:.1f}x fp32).\n")
    _stage_rows(page, out["steps"])
    page.line("\n| result | file | gate | cosine drop | compression | latency (batch 1) | fp32 latency | "
              "loaded back, same outputs |")
    page.line("|---|---:|---|---:|---:|---:|---:|---|")
    for name in ("int8", "4-bit"):
        gate = out[f"gate {name}"]
        latency = f"{gate['latency_ms']:.0f} ms" if gate["latency_ms"] else "-"
        base = f"{gate['baseline_latency_ms']:.0f} ms" if gate["baseline_latency_ms"] else "-"
        page.line(f"| {name} | {_gb(out[f'{name} size_bytes'])} | {'passed' if gate['passed'] else 'FAILED'} | "
                  f"{gate['cosine_drop']:.4f} | {gate['compression']:.2f}x | {latency} | {base} | "
                  f"{out[f'{name} loaded_same_outputs']} |")
    for name in ("int8", "4-bit"):
        if out[f"gate {name}"]["failures"]:
            page.line(f"\n{name} gate: {' '.join(out[f'gate {name}']['failures'])}")
    for name in ("fp32", "int8", "4-bit"):
        page.line(f"\n`compress` {name}, by stage:\n")
        _stage_rows(page, out[f"stages {name}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=["4x256", "12x768"], help="LAYERSxHIDDEN, e.g. 24x1024")
    parser.add_argument("--batch", type=int, default=2, help="example batch (sequence 128)")
    parser.add_argument("--large", nargs="*", default=[], metavar="SIZE",
                        help="models past 2 GB run end to end: compress fp32 / int8 / 4-bit, save, load, gate")
    parser.add_argument("--samples", type=int, default=16, help="--large: inputs the gate scores (sequence 128)")
    parser.add_argument("--rounds", type=int, default=5, help="--large: latency rounds of the gate (batch 1)")
    parser.add_argument("--protobuf-limit", type=int, default=2**31 - 1, help="--large: bytes (lower: rehearse)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    add_markdown_option(parser)
    args = parser.parse_args()
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        result = {"squeezelab": lambda: child_squeezelab(rest[0], int(rest[1])),
                  "export": lambda: child_export(rest[0], int(rest[1]), rest[2]),
                  "ort": lambda: child_ort(rest[0]),
                  "large": lambda: child_large(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]))}[kind]()
        print(json.dumps(result, default=str))
        return
    page = Page()
    page.line(cpu_line() + ".")
    for size in args.sizes:
        ours = _run_child("squeezelab", size, str(args.batch))
        with tempfile.TemporaryDirectory(prefix="squeezelab-scale-") as tmp:
            path = str(Path(tmp) / "fp32.onnx")
            exported = _run_child("export", size, str(args.batch), path)
            ort = exported if "error" in exported else _run_child("ort", path)
        report(page, size, ours, ort)
    for size in args.large:
        report_large(page, size, _run_child("large", size, str(args.batch), str(args.samples), str(args.rounds),
                                            str(args.protobuf_limit)))
    page.line(f"\nLoad average at the end: {load_average()}.")
    page.write(args.markdown)


if __name__ == "__main__":
    main()
