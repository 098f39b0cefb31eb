"""int8 in ONNX Runtime, side by side: squeezelab vs ONNX Runtime's own tools vs torch.ao.

For each model, every variant is built, evaluated on real data (or, for the
encoder, compared with the fp32 output by cosine similarity), and timed in the
same interleaved, shuffled rounds in this one process. Reported: accuracy or
fidelity, bytes, median latency at batch 1 and 32, and ratios against fp32
ONNX Runtime (speedup = median of per-round ratios). Nothing here asserts a
time; the figures are printed, with the issue's targets beside them. The real models are in their own
benchmarks: all-MiniLM-L6-v2 with its real weights in ``int8_real.py``, the static int8 CNNs (ResNet-18
layout, MobileNetV2 layout, EfficientNet-Lite0 with ImageNet weights) in ``int8_cnn.py``.

    python benchmarks/int8_runtime.py                      # all three models
    python benchmarks/int8_runtime.py --models digits --rounds 50
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import squeezelab as sl  # noqa: E402
from squeezelab.engine.core.data import load_fashion_mnist  # noqa: E402
from squeezelab.engine.zoo.digits import LeNet5, train_classifier  # noqa: E402
from squeezelab.engine.runtime.environment import environment  # noqa: E402
from squeezelab.engine.measurement.latency import interleaved_latency, torch_threads  # noqa: E402
from squeezelab.engine.measurement.stats import ratio_interval, speedup_text  # noqa: E402
from squeezelab.engine.runtime.ort_tools import BatchReader as _BatchReader  # noqa: E402
from squeezelab.engine.runtime.providers import make_session  # noqa: E402

BASELINE = "fp32 ONNX Runtime"


@dataclass
class Variant:
    name: str
    predict: Callable[[np.ndarray], np.ndarray]  # whole-array prediction (for quality)
    run: Callable[[np.ndarray], Any]  # one timed batch
    size_bytes: int
    notes: str = ""
    figures: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- variants


def _torch_variant(name: str, model: nn.Module, notes: str = "") -> Variant:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)

    def run(x: np.ndarray) -> Any:
        with torch.no_grad():
            return model(torch.from_numpy(x))

    def predict(x: np.ndarray) -> np.ndarray:
        return np.concatenate([run(x[i : i + 256]).numpy() for i in range(0, len(x), 256)])

    return Variant(name, predict, run, len(buffer.getvalue()), notes)


def _onnx_variant(name: str, onnx_bytes: bytes, threads: int, notes: str = "") -> Variant:
    session = make_session(onnx_bytes, threads=threads)
    input_name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> Any:
        return session.run(None, {input_name: x})

    def predict(x: np.ndarray) -> np.ndarray:
        return np.concatenate([run(x[i : i + 64])[0] for i in range(0, len(x), 64)])

    return Variant(name, predict, run, len(onnx_bytes), notes)


def _ort_defaults(fp32: bytes, calibration: np.ndarray, batch: int) -> tuple[bytes, bytes]:
    """ONNX Runtime's quantize_dynamic / quantize_static with default arguments."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = Path(tmp) / "fp32.onnx"
        src.write_bytes(fp32)
        quantize_dynamic(src, Path(tmp) / "dyn.onnx")
        feeds = [{"input": calibration[i : i + batch]} for i in range(0, len(calibration) - batch + 1, batch)]
        quantize_static(onnx.load(str(src)), Path(tmp) / "static.onnx", _BatchReader(feeds))
        return (Path(tmp) / "dyn.onnx").read_bytes(), (Path(tmp) / "static.onnx").read_bytes()


def _torch_ao_dynamic(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def build_variants(model: nn.Module, example: np.ndarray, calibration: np.ndarray, threads: int) -> list[Variant]:
    t0 = time.perf_counter()
    fp32 = sl.compress(model, sl.Recipe(), example_inputs=example)
    dyn = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=example)
    static = sl.compress(model, sl.Recipe(runtime=sl.Int8Static()), example_inputs=example, calibration_data=calibration)
    static_fc = sl.compress(
        model,
        sl.Recipe(runtime=sl.Int8Static(op_types=("MatMul", "Gemm"))),
        example_inputs=example,
        calibration_data=calibration,
    )
    ort_dyn, ort_static = _ort_defaults(fp32.onnx_bytes, calibration, batch=min(32, len(calibration)))
    print(f"  built all variants in {time.perf_counter() - t0:.1f} s", flush=True)
    rr = static.details["reduce_range"]
    return [
        _torch_variant("fp32 PyTorch eager", model),
        _onnx_variant(BASELINE, fp32.onnx_bytes, threads),
        _onnx_variant("squeezelab int8 dynamic", dyn.onnx_bytes, threads, f"MatMul/Gemm only, reduce_range={rr}"),
        _onnx_variant("squeezelab int8 static", static.onnx_bytes, threads, f"QDQ S8S8 per-channel minmax, reduce_range={rr}"),
        _onnx_variant("squeezelab int8 static Gemm", static_fc.onnx_bytes, threads, "as above, convolutions kept fp32"),
        _onnx_variant("ORT quantize_dynamic defaults", ort_dyn, threads, "all ops incl. ConvInteger, reduce_range=False"),
        _onnx_variant("ORT quantize_static defaults", ort_static, threads, "QDQ S8S8 per-tensor, reduce_range=False"),
        _torch_variant("torch.ao dynamic int8", _torch_ao_dynamic(model), "nn.Linear only"),
    ]


# --------------------------------------------------------------------------- measurement


def time_variants(variants: list[Variant], inputs: dict[int, np.ndarray], rounds: int, threads: int) -> None:
    for batch, x in inputs.items():
        runners = {v.name: (lambda v=v: v.run(x)) for v in variants}
        # Fewer rounds where one call takes seconds; never fewer than 5.
        probe = time.perf_counter()
        runners[BASELINE]()
        slow = time.perf_counter() - probe
        n = max(5, min(rounds, int(120 / max(slow * len(variants), 1e-3))))
        with torch_threads(threads):
            samples = interleaved_latency(runners, rounds=n, warmup=2)
        for v in variants:
            v.figures[f"ms_b{batch}"] = statistics.median(samples[v.name])
            speed = ratio_interval(samples[BASELINE], samples[v.name])
            v.figures[f"speedup_b{batch}"] = speed.median
            v.figures[f"speedup_b{batch}_low"], v.figures[f"speedup_b{batch}_high"] = speed.low, speed.high
            v.figures[f"rounds_b{batch}"] = n


def print_table(title: str, variants: list[Variant], quality: str, batches: list[int]) -> None:
    base = next(v for v in variants if v.name == BASELINE)
    print(f"\n{title}")
    head = f"  {'variant':32s} {quality:>10s} {'bytes':>11s} {'size':>7s}"
    for b in batches:
        head += f" {'ms b' + str(b):>9s} {'vs ORT fp32 (95% interval)':<33s}"
    print(head)
    for v in variants:
        line = f"  {v.name:32s} {v.figures['quality']:10.4f} {v.size_bytes:11,d} {v.size_bytes / base.size_bytes:6.3f}x"
        for b in batches:
            # "slower" / "faster" only when the whole interval of the median is on one side of 1.0
            speed = speedup_text(v.figures[f"speedup_b{b}"], v.figures[f"speedup_b{b}_low"], v.figures[f"speedup_b{b}_high"])
            line += f" {v.figures[f'ms_b{b}']:9.3f} {speed:33s}"
        print(line + (f"   [{v.notes}]" if v.notes else ""))


def classifier_benchmark(title: str, model: nn.Module, x_test, y_test, calibration, threads, rounds, batches):
    variants = build_variants(model, x_test[:1], calibration, threads)
    for v in variants:
        v.figures["quality"] = float((v.predict(x_test).argmax(1) == y_test).mean())
    time_variants(variants, {b: np.ascontiguousarray(x_test[:b]) for b in batches}, rounds, threads)
    print_table(title + f" — top-1 accuracy on {len(y_test)} test images", variants, "accuracy", batches)
    return variants


def encoder_benchmark(threads, rounds, batches, init):
    from encoder import bert_initialised_encoder, embeddings, outlier_initialised_encoder

    model = bert_initialised_encoder(seed=0) if init == "bert" else outlier_initialised_encoder(seed=0)
    x_eval = embeddings(64, seed=1).numpy()
    calibration = embeddings(32, seed=2).numpy()
    with torch.no_grad():
        reference = np.concatenate([model(torch.from_numpy(x_eval[i : i + 16])).numpy() for i in range(0, 64, 16)])
    variants = build_variants(model, x_eval[:1], calibration, threads)
    for v in variants:
        out = v.predict(x_eval)
        token_cos = np.sum(out * reference, -1) / (np.linalg.norm(out, axis=-1) * np.linalg.norm(reference, axis=-1))
        pooled_o, pooled_r = out.mean(1), reference.mean(1)
        pooled_cos = np.sum(pooled_o * pooled_r, -1) / (np.linalg.norm(pooled_o, axis=-1) * np.linalg.norm(pooled_r, axis=-1))
        v.figures["quality"] = float(token_cos.mean())
        v.figures["pooled_cosine"] = float(pooled_cos.mean())
    time_variants(variants, {b: np.ascontiguousarray(x_eval[:b]) for b in batches}, rounds, threads)
    print_table(
        f"(c) transformer encoder, MiniLM shape (6x384, 12 heads, FFN 1536, seq 128), {init} init — "
        "mean token cosine vs fp32 PyTorch",
        variants,
        "cosine",
        batches,
    )
    for v in variants:
        print(f"    {v.name:32s} mean-pooled cosine {v.figures['pooled_cosine']:.5f}")
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,fashion,encoder")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--encoder-init", choices=["bert", "outliers"], default="outliers",
                        help="random weights: BERT's init, or with LayerNorm outlier channels like trained encoders")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    env = environment()
    print("environment:", json.dumps(env))
    print(f"threads={args.threads}; latency = median of interleaved rounds; speedup = median per-round ratio vs {BASELINE}")
    results: dict[str, list[Variant]] = {}
    wanted = args.models.split(",")
    if "digits" in wanted:
        model, split = sl.models.default_model("cnn")
        results["digits_cnn"] = classifier_benchmark(
            "(a) digits CNN (scikit-learn load_digits)", model, split.x_test, split.y_test, split.x_train[:512], args.threads, args.rounds, batches
        )
    if "fashion" in wanted:
        data = load_fashion_mnist()
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            fresh = LeNet5()
        model = train_classifier(fresh, data.x_train, data.y_train, epochs=4, batch_size=128, lr=2e-3, seed=0)
        print(f"\ntrained LeNet-5 on Fashion-MNIST (60,000 images, 4 epochs) in {time.perf_counter() - t0:.0f} s")
        results["fashion_lenet5"] = classifier_benchmark(
            "(b) LeNet-5 on Fashion-MNIST", model, data.x_test, data.y_test, data.x_train[:1024], args.threads, args.rounds, batches
        )
    if "encoder" in wanted:
        results["encoder"] = encoder_benchmark(args.threads, args.rounds, batches, args.encoder_init)

    print("\ntargets (issue #2):")
    for key, variants in results.items():
        base = next(v for v in variants if v.name == BASELINE)
        for v in variants:
            if v.name.startswith("squeezelab"):
                ratio = v.size_bytes / base.size_bytes
                print(f"  {key:15s} {v.name:26s} size {ratio:.3f}x fp32 (target <= 0.26: {'met' if ratio <= 0.26 else 'NOT met'})")
    if "fashion_lenet5" in results:
        vs = {v.name: v for v in results["fashion_lenet5"]}
        drop = 100 * (vs[BASELINE].figures["quality"] - vs["squeezelab int8 static"].figures["quality"])
        print(f"  fashion static int8 accuracy drop {drop:.2f} pp (target <= 0.5: {'met' if drop <= 0.5 else 'NOT met'})")
    if "encoder" in results:
        for v in results["encoder"]:
            if v.name.startswith("squeezelab"):
                s, c = v.figures.get("speedup_b32", float("nan")), v.figures["quality"]
                print(
                    f"  encoder {v.name:26s} speedup b32 {s:.2f}x (target >= 2.3: {'met' if s >= 2.3 else 'NOT met'}), "
                    f"cosine {c:.4f} (target >= 0.995: {'met' if c >= 0.995 else 'NOT met'})"
                )
    if args.json:
        payload = {
            "environment": env,
            "threads": args.threads,
            "results": {k: [{"name": v.name, "size_bytes": v.size_bytes, "notes": v.notes, **v.figures} for v in vs] for k, vs in results.items()},
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
