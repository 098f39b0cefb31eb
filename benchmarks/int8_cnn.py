"""Static int8 CNNs side by side: squeezelab's ``Int8Static`` vs ONNX Runtime's ``quantize_static`` defaults.

The issue's three CNN layouts, timed at batch 32 (``--batch``) with one intra-op thread, against ONNX Runtime's
``quantize_static`` with default arguments and as an expert sets it on x86 (pre-processing, per-channel, U8S8):

- ResNet-18 layout (``zoo.resnet18(num_classes=10, small_input=True)``, 32x32 inputs, **random weights**, seed 0);
- MobileNetV2 layout (``zoo.mobilenet_v2(num_classes=10)``, 224x224 inputs, **random weights**, seed 0);

  (both with BatchNorm statistics estimated on 64 train images, so activations are unit-scale)
- EfficientNet-Lite0 (``zoo.efficientnet_lite0()``, **real ImageNet weights**, 224x224 inputs).

Inputs are Fashion-MNIST test images (``--images``); calibration uses 32 train images. Every variant is
built from the same fp32 export (ONNX Runtime's tool is applied to that saved file) and timed once per
round in shuffled order, in the same rounds; speedup = median over rounds of fp32_time / variant_time,
95 % interval in brackets. Fidelity to fp32 ONNX Runtime: top-1 agreement and the mean cosine of the
logits. For the random-weight layouts the cosine is the meaningful figure (their top-1 is close to arbitrary).
Nothing is asserted; the CPU's flags and the load average are printed with the figures.

The fidelity steps (issue #22) get a row each: squeezelab's default (``transforms=None``: bias correction
for a CNN under static int8), ``transforms=()`` (none), ``Equalization()``, ``BiasCorrection()`` and both,
``AdaRound()`` alone and with ``BiasCorrection()``; what each step did is printed (pairs equalised,
BatchNorms folded, the largest shift corrected, AdaRound's layers, flipped codes and seconds). The other
squeezelab rows (``activations="int8"``, entropy, layers float) run with the default steps.

    REPO=$PWD; cd /tmp && $REPO/.venv/bin/python $REPO/benchmarks/int8_cnn.py                  # ~6 min on 2 cores
    cd /tmp && $REPO/.venv/bin/python $REPO/benchmarks/int8_cnn.py --models resnet --rounds 6
    cd /tmp && $REPO/.venv/bin/python $REPO/benchmarks/int8_cnn.py --images 256 --markdown $REPO/benchmarks/results/int8_cnn.md  # the site's table
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from _markdown import Page, add_markdown_option
from int8_real import BASELINE, _onnx, _predict_all, _time, load_average, print_environment
from torch import nn

import squeezelab as sl
from squeezelab.quantization import AdaRound
from squeezelab.engine.runtime.ort_tools import BatchReader as _BatchReader
from squeezelab.engine.measurement.stats import speedup_text
from squeezelab.engine.runtime.providers import make_session

# The documented EfficientNet-Lite0 recipe: the stem and the first two blocks (the most sensitive layers, at
# 112x112 resolution) stay float, everything else static int8.
EFFICIENTNET_FIRST = ("_conv_stem", "_blocks.0", "_blocks.1")
EFFICIENTNET_FIRST_FLOAT = sl.Recipe(
    runtime=sl.Int8Static(),
    layers=tuple(
        sl.LayerSetting(name=name, bits=32)
        for name in ("_conv_stem", "_blocks.0._depthwise_conv", "_blocks.0._project_conv",
                     "_blocks.1._expand_conv", "_blocks.1._depthwise_conv", "_blocks.1._project_conv")
    ),
)


@dataclass
class CnnCase:
    key: str
    title: str
    build: Callable[[], nn.Module]
    size: int  # input height and width
    normalize: str
    extra: Callable[[nn.Module], dict[str, sl.Recipe]] = field(default=lambda model: {})


def depthwise_float(model: nn.Module) -> dict[str, sl.Recipe]:
    """Static int8 with every depthwise convolution kept float (ONNX Runtime's int8 depthwise kernels are
    slow on some CPUs); the rest int8."""
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]
    recipe = sl.Recipe(runtime=sl.Int8Static(), layers=tuple(sl.LayerSetting(name=n, bits=32) for n in names))
    return {f"squeezelab Int8Static(), {len(names)} depthwise convolutions float": recipe}


def efficientnet_extra(model: nn.Module) -> dict[str, sl.Recipe]:
    return {
        'squeezelab Int8Static(calibration="entropy")': sl.Recipe(runtime=sl.Int8Static(calibration="entropy")),
        f"squeezelab Int8Static(), {', '.join(EFFICIENTNET_FIRST)} float": EFFICIENTNET_FIRST_FLOAT,
    }


def _random_with_bn_statistics(build: Callable[[], nn.Module], size: int) -> Callable[[], nn.Module]:
    """A seeded random-weight layout whose BatchNorm statistics are estimated on 64 train images.

    Straight from initialisation a MobileNetV2's logits are ~1e-9 (activations shrink block by block),
    which makes both its fidelity and its fp32 timing (denormals) meaningless; with BatchNorm
    statistics of real inputs every layer sees unit-scale activations, as in a trained network.
    """

    def make() -> nn.Module:
        from squeezelab.engine.zoo import fashion_mnist_images

        torch.manual_seed(0)
        model = build()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the batches below
        images, _ = fashion_mnist_images("train", n=64, size=size, channels=3)
        model.train()
        with torch.no_grad():
            for i in range(0, 64, 16):
                model(torch.from_numpy(images[i : i + 16]))
        return model.eval()

    return make


def cases() -> dict[str, CnnCase]:
    from squeezelab.engine.zoo import efficientnet_lite0, mobilenet_v2, resnet18

    return {
        "resnet": CnnCase("resnet", "ResNet-18 layout (random weights, BN statistics of 64 images), 32x32",
                          _random_with_bn_statistics(lambda: resnet18(10, small_input=True), 32), 32, "imagenet"),
        "mobilenet": CnnCase("mobilenet", "MobileNetV2 layout (random weights, BN statistics of 64 images), 224x224",
                             _random_with_bn_statistics(lambda: mobilenet_v2(10), 224), 224, "imagenet", depthwise_float),
        "efficientnet": CnnCase("efficientnet", "EfficientNet-Lite0 (ImageNet weights), 224x224", lambda: efficientnet_lite0().eval(),
                                224, "efficientnet-lite", efficientnet_extra),
    }


def _ort_static(fp32: sl.Compressed, calibration: np.ndarray, tmp: Path, *, expert: bool = False) -> bytes:
    """ONNX Runtime's ``quantize_static`` on the saved fp32 export: with default arguments, or (``expert``) as
    one would set it by hand on x86: ``quant_pre_process`` (shape inference and graph optimisation), then
    per-channel weights, uint8 activations (U8S8) and this CPU's ``reduce_range`` — the settings
    squeezelab's default chooses, without squeezelab."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from squeezelab.engine.core.cpu import default_reduce_range

    name = "expert" if expert else "default"
    path = fp32.save(tmp / f"fp32_{name}.onnx")
    input_name = make_session(fp32.onnx_bytes, threads=1).get_inputs()[0].name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = _BatchReader([{input_name: calibration[i : i + 8]} for i in range(0, len(calibration), 8)])
        settings = {}
        if expert:
            quant_pre_process(str(path), str(tmp / "pre.onnx"))
            path = tmp / "pre.onnx"
            settings = {"per_channel": True, "activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8,
                        "reduce_range": default_reduce_range()}
        quantize_static(onnx.load(str(path)), tmp / f"ort_{name}.onnx", reader, **settings)
    return (tmp / f"ort_{name}.onnx").read_bytes()


def cnn_table(case: CnnCase, args: argparse.Namespace, tmp: Path, page: Page) -> None:
    from squeezelab.engine.zoo import fashion_mnist_images

    model = case.build()
    x, _ = fashion_mnist_images("test", n=args.images, size=case.size, channels=3, normalize=case.normalize)
    calibration, _ = fashion_mnist_images("train", n=32, size=case.size, channels=3, normalize=case.normalize)
    print(f"\n{case.title}: {args.images} test images, calibration on 32 train images; "
          f"timing batch {args.batch}, {args.rounds} rounds", flush=True)
    t0 = time.perf_counter()
    fp32 = sl.compress(model, sl.Recipe(), example_inputs=x[:1])
    built = _fidelity_step_rows(model, x, calibration)
    default = next(iter(built.values()))
    recipes = {
        'squeezelab Int8Static(activations="int8")': sl.Recipe(runtime=sl.Int8Static(activations="int8")),
        **case.extra(model),
    }
    recipes.update(_tuned(case, model, args, calibration))
    built.update({name: sl.compress(model, r, example_inputs=x[:1], calibration_data=calibration) for name, r in recipes.items()})
    print(f"  built in {time.perf_counter() - t0:.0f} s; default choices: {default.details.get('choices')}", flush=True)
    ort_bytes = _ort_static(fp32, calibration, tmp)
    expert = "ORT quant_pre_process + quantize_static(per_channel, U8S8, reduce_range)"
    variants = [_onnx(BASELINE, fp32.onnx_bytes), _onnx("ORT quantize_static defaults (QDQ)", ort_bytes),
                _onnx(expert, _ort_static(fp32, calibration, tmp, expert=True))]
    variants += [_onnx(name, c.onnx_bytes) for name, c in built.items()]
    input_name = make_session(fp32.onnx_bytes, threads=1).get_inputs()[0].name
    feeds = {input_name: x}
    reference = _predict_all(variants[0], feeds, args.batch)
    for v in variants:
        out = _predict_all(v, feeds, args.batch)
        cosine = (out * reference).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1) + 1e-12)
        v.fidelity = float((out.argmax(1) == reference.argmax(1)).mean() * 100)
        v.extra = f"{cosine.mean():.4f}"
    _time(variants, {input_name: np.ascontiguousarray(x[: args.batch])}, args.rounds)
    _table(page, f"{case.title}: {args.images} test images, calibration on 32 train images; batch {args.batch}, "
           f"1 thread, {args.rounds} interleaved shuffled rounds", variants, built)
    if args.profile:
        graphs = {BASELINE: fp32.onnx_bytes, "ORT quantize_static defaults (QDQ)": ort_bytes,
                  "squeezelab Int8Static() default": default.onnx_bytes}
        _print_profiles(graphs, {input_name: np.ascontiguousarray(x[: args.batch])})


def _table(page: Page, title: str, variants: list, built: dict[str, sl.Compressed]) -> None:
    """One model's table (printed, and kept for ``--markdown``), then what each fidelity step did and took."""
    base = variants[0]
    page.line(f"\n**{title}**\n")
    page.line("| variant | top-1 agreement | logit cosine | file bytes (x fp32) | median ms | speedup vs fp32 (95 % interval) |")
    page.line("| --- | --- | --- | --- | --- | --- |")
    for v in variants:
        speed = speedup_text(v.speed.median, v.speed.low, v.speed.high)
        page.line(f"| {v.name} | {v.fidelity:.1f} % | {v.extra} | {v.size:,} ({v.size / base.size:.3f}x) | "
                  f"{v.speed_ms:.1f} | {speed} |")
    steps = {name: c.details["transforms"]["applied"] for name, c in built.items() if c.details.get("transforms", {}).get("applied")}
    if steps:
        page.line()
    for name, applied in steps.items():
        done = "; ".join(", ".join(f"{k} {v}" for k, v in step.items()) for step in applied)
        page.line(f"- {name}: {done}")


def _fidelity_step_rows(model: nn.Module, x: np.ndarray, calibration: np.ndarray) -> dict[str, sl.Compressed]:
    """squeezelab's default, then ``Int8Static()`` with no fidelity step, each step alone and both (a row the
    default already is is not built twice: its label says so)."""
    def build(transforms: tuple | None) -> sl.Compressed:
        recipe = sl.Recipe(runtime=sl.Int8Static(), transforms=transforms)
        return sl.compress(model, recipe, example_inputs=x[:1], calibration_data=calibration)

    default = build(None)
    applied = tuple(step["step"] for step in default.details["transforms"]["applied"])
    steps = {"Equalization()": (sl.Equalization(),), "BiasCorrection()": (sl.BiasCorrection(),),
             "Equalization() + BiasCorrection()": (sl.Equalization(), sl.BiasCorrection()),
             "AdaRound()": (AdaRound(),), "AdaRound() + BiasCorrection()": (AdaRound(), sl.BiasCorrection())}
    same = next((name for name, s in steps.items() if tuple(step.label for step in s) == applied), None)
    rows = {f"squeezelab Int8Static() default (uint8 activations{'; = + ' + same if same else ''})": default,
            "squeezelab Int8Static(), transforms=() (no fidelity step)": build(())}
    rows.update({f"squeezelab Int8Static() + {name}": build(s) for name, s in steps.items() if name != same})
    return rows


def _print_profiles(graphs: dict[str, bytes], feeds: dict[str, np.ndarray]) -> None:
    """Where each graph's time goes (``sl.metrics.op_times``: ONNX Runtime's kernel times by op type, 1 thread)."""
    print("\nwhere the time goes (ONNX Runtime profiler, kernel time per batch, mean of 5 runs after 3 warm-up runs):")
    for name, onnx_bytes in graphs.items():
        table = sl.metrics.op_times(onnx_bytes, feeds)
        split = sl.metrics.time_split(table)
        top = ", ".join(f"{r.op_type} ({r.kind}) {r.ms:.0f} ms" for r in table.head(4).itertuples())
        print(f"  {name}: {table['ms'].sum():.0f} ms; int8 {split['int8']:.0%}, (de)quantize {split['quantize']:.0%}, "
              f"float {split['float']:.0%}; top: {top}", flush=True)


def _tuned(case: CnnCase, model: nn.Module, args: argparse.Namespace, calibration: np.ndarray) -> dict[str, sl.Recipe]:
    """The "squeezelab tuned" row: ``search(runtime=Int8Static(), metric=--search-metric)`` decided on 128 other
    test images (64-191), not the ones the table evaluates, calibrated on the table's 32 train images; its
    trail is printed."""
    from squeezelab.engine.zoo import fashion_mnist_images

    if args.search_budget <= 0 or case.key not in args.search_models.split(","):
        return {}
    x, _ = fashion_mnist_images("test", n=args.images + 128, size=case.size, channels=3, normalize=case.normalize)
    t0 = time.perf_counter()
    result = sl.search(model, (x[args.images:], None), runtime=sl.Int8Static(), metric=args.search_metric,
                       objective=args.search_objective, max_accuracy_drop=args.search_drop,
                       time_budget_s=args.search_budget, cache=False, progress=False, calibration_data=calibration)
    float_layers = [s.name for s in result.recipe.layers if s.bits == 32]
    print(f"  search ({args.search_objective}, {args.search_metric} drop <= {args.search_drop}, {args.search_budget:.0f} s) took "
          f"{time.perf_counter() - t0:.0f} s, {len(result.trail)} evaluations, stopped: {result.stopped}; "
          f"{len(float_layers)} layers float: {float_layers}", flush=True)
    columns = [c for c in ("move", "data", "value", "drop_bound", "accepted", "speedup", "size_bytes") if c in result.trail]
    print(result.trail[columns].to_string(max_colwidth=60), flush=True)
    if result.recipe == sl.Recipe():
        print("  the search returned the fp32 baseline: no tuned row", flush=True)
        return {}
    name = f"squeezelab tuned: search(Int8Static(), {args.search_metric} drop <= {args.search_drop}), {len(float_layers)} layers float"
    return {name: result.recipe}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet,mobilenet,efficientnet")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved timing rounds (>= 6 for a 95 %% interval)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--search-budget", type=float, default=0.0,
                        help="seconds for the 'squeezelab tuned' row (int8 search); 0 leaves it out")
    parser.add_argument("--search-models", default="efficientnet", help="the models the tuned row is searched for")
    parser.add_argument("--search-metric", default="cosine_to_baseline", choices=["cosine_to_baseline", "agreement"])
    parser.add_argument("--search-drop", type=float, default=0.01, help="allowed drop of the search metric (0.01: cosine 0.99)")
    parser.add_argument("--search-objective", default="size", choices=["size", "latency"])
    parser.add_argument("--profile", action="store_true", help="print where each graph's time goes (sl.metrics.op_times)")
    add_markdown_option(parser)
    args = parser.parse_args()
    page = Page()
    started = print_environment()
    logging.getLogger().setLevel(logging.ERROR)  # ONNX Runtime's quantizer warns per bias on the root logger
    known = cases()
    with tempfile.TemporaryDirectory(prefix="int8_cnn_") as tmp:
        for name in args.models.split(","):
            (Path(tmp) / name).mkdir()
            cnn_table(known[name], args, Path(tmp) / name, page)
    page.write(args.markdown)
    print(f"\nload average at end: {load_average()}; wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
