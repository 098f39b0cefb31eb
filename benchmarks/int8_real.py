"""int8 on a real transformer, side by side: squeezelab vs ONNX Runtime's own tools (and torch.ao) in one run.

all-MiniLM-L6-v2 (real weights, ``--sentences`` shipped sentences tokenized to 128 tokens). Every ONNX
variant is built from the SAME fp32 export (``compress(model, Recipe())``, saved once; ONNX Runtime's
tools are applied to that saved file) and runs in an ONNX Runtime session with one intra-op thread and
spinning off; torch.ao runs in PyTorch with one thread. Fidelity: mean cosine of the sentence
embeddings to fp32 ONNX Runtime. Speed: every variant timed once per round in shuffled order, in the
same rounds; speedup = median over rounds of fp32_time / variant_time with its 95 % interval. Nothing is
asserted; the CPU's flags and the load average (start and end) are printed with the figures. The static
int8 CNNs (ResNet-18, MobileNetV2, EfficientNet-Lite0) are in ``int8_cnn.py``.

``--tuned-budget S`` adds the "squeezelab tuned" rows: ``search(runtime=Int8Dynamic())`` decided on the
shipped sentences the table does not evaluate, and the trail point just below its budget.

    REPO=$PWD; cd /tmp && $REPO/.venv/bin/python $REPO/benchmarks/int8_real.py --tuned-budget 360   # ~7.5 min
    cd /tmp && $REPO/.venv/bin/python $REPO/benchmarks/int8_real.py --rounds 6 --sentences 64
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import squeezelab as sl  # noqa: E402
from squeezelab.engine.core.cpu import cpu_flags  # noqa: E402
from squeezelab.engine.runtime.environment import environment  # noqa: E402
from squeezelab.engine.measurement.latency import interleaved_latency, torch_threads  # noqa: E402
from squeezelab.engine.runtime.providers import make_session  # noqa: E402
from squeezelab.engine.measurement.stats import ratio_interval, speedup_text  # noqa: E402

BASELINE = "fp32 ONNX Runtime"


@dataclass
class Variant:
    name: str
    predict: Callable[[dict[str, np.ndarray]], np.ndarray]  # one batch of feeds -> first output
    size: int | None  # file bytes (None: no file)
    size_note: str = ""
    fidelity: float = float("nan")
    speed: Any = None
    speed_ms: float = float("nan")
    extra: str = ""  # the value of the table's extra column, if it has one


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _onnx(name: str, onnx_bytes: bytes) -> Variant:
    session = make_session(onnx_bytes, threads=1)  # 1 intra-op thread, spinning off
    names = [i.name for i in session.get_inputs()]

    def predict(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {k: feeds[k] for k in names})[0]

    return Variant(name, predict, len(onnx_bytes))


def _batches(feeds: dict[str, np.ndarray], batch: int) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(feeds.values())))
    return [{k: np.ascontiguousarray(v[i : i + batch]) for k, v in feeds.items()} for i in range(0, n, batch)]


def _predict_all(v: Variant, feeds: dict[str, np.ndarray], batch: int) -> np.ndarray:
    return np.concatenate([v.predict(b) for b in _batches(feeds, batch)])


def _time(variants: list[Variant], feeds: dict[str, np.ndarray], rounds: int) -> None:
    runners = {v.name: (lambda v=v: v.predict(feeds)) for v in variants}
    with torch_threads(1):
        samples = interleaved_latency(runners, rounds=rounds, warmup=1)
    for v in variants:
        v.speed = ratio_interval(samples[BASELINE], samples[v.name])
        v.speed_ms = statistics.median(samples[v.name])


def _print_table(title: str, variants: list[Variant], fidelity: str, fmt: Callable[[float], str],
                 extra_column: str | None = None) -> None:
    base = next(v for v in variants if v.name == BASELINE)
    extra = f" {extra_column} |" if extra_column else ""
    print(f"\n{title}")
    print(f"| variant | {fidelity} |{extra} file bytes (x fp32) | median ms | speedup vs fp32 (95 % interval) |")
    print("| --- | --- |" + (" --- |" if extra_column else "") + " --- | --- | --- |")
    for v in variants:
        size = f"{v.size:,} ({v.size / base.size:.3f}x)" if v.size is not None else "—"
        if v.size_note:
            size += f" {v.size_note}"
        speed = speedup_text(v.speed.median, v.speed.low, v.speed.high)
        cell = f" {v.extra} |" if extra_column else ""
        print(f"| {v.name} | {fmt(v.fidelity)} |{cell} {size} | {v.speed_ms:.1f} | {speed} |", flush=True)


# --------------------------------------------------------------------------- MiniLM


def minilm(args: argparse.Namespace, tmp: Path) -> None:
    import onnx
    from onnxruntime.quantization import quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    from squeezelab.engine.zoo import SentenceEncoder, load_minilm, sentences, tokenize

    bert, tokenizer = load_minilm()
    model = SentenceEncoder(bert).eval()
    tokens = tokenize(tokenizer, sentences(args.sentences), max_length=128, padding="max_length")
    feeds = {k: v.numpy() for k, v in tokens.items()}
    example = {k: v[:1] for k, v in tokens.items()}
    print(f"\nMiniLM: {args.sentences} sentences, input {tuple(tokens['input_ids'].shape)}; "
          f"timing batch {args.minilm_batch}, {args.rounds} rounds", flush=True)

    t0 = time.perf_counter()
    fp32 = sl.compress(model, sl.Recipe(), example_inputs=example)
    fp32_path = fp32.save(tmp / "minilm_fp32.onnx")
    built: list[tuple[str, bytes | None]] = [(BASELINE, fp32.onnx_bytes)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(fp32_path, tmp / "minilm_ort_dyn.onnx")
        built.append(("ORT quantize_dynamic defaults", (tmp / "minilm_ort_dyn.onnx").read_bytes()))
        optimized = optimize_model(str(fp32_path), model_type="bert", num_heads=12, hidden_size=384)
        optimized.save_model_to_file(str(tmp / "minilm_opt.onnx"))
        quantize_dynamic(
            tmp / "minilm_opt.onnx",
            tmp / "minilm_ort_opt_pc.onnx",
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        built.append(("ORT optimizer + per-channel quantize_dynamic", (tmp / "minilm_ort_opt_pc.onnx").read_bytes()))
    print(f"  ONNX Runtime variants built in {time.perf_counter() - t0:.0f} s", flush=True)

    t0 = time.perf_counter()
    dyn = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=example)
    print(f"  squeezelab Int8Dynamic() built in {time.perf_counter() - t0:.0f} s; choices: {dyn.details.get('choices')}", flush=True)
    t0 = time.perf_counter()
    w4 = sl.compress(model, sl.Recipe(runtime=sl.WeightOnly(bits=4, block_size=16, embeddings=4)), example_inputs=example)
    print(f"  squeezelab WeightOnly(4, block 16, embeddings 4) built in {time.perf_counter() - t0:.0f} s", flush=True)
    built += [("squeezelab Int8Dynamic() default", dyn.onnx_bytes),
              ("squeezelab WeightOnly(bits=4, block_size=16, embeddings=4)", w4.onnx_bytes)]
    if args.tuned_budget > 0:
        built += _tuned_minilm(model, tokenizer, example, args)

    variants = [_onnx(name, data) for name, data in built]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        ao = torch.ao.quantization.quantize_dynamic(SentenceEncoder(load_minilm()[0]).eval(), {nn.Linear}, dtype=torch.qint8)
    buffer = io.BytesIO()
    torch.save(ao.state_dict(), buffer)

    def ao_predict(f: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return ao(torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"])).numpy()

    variants.insert(3, Variant("torch.ao dynamic int8 (PyTorch, 1 thread)", ao_predict, len(buffer.getvalue()), "(state_dict)"))

    with torch_threads(1):
        reference = _predict_all(variants[0], feeds, args.minilm_batch)
        for v in variants:
            out = _predict_all(v, feeds, args.minilm_batch)
            cos = np.sum(out * reference, 1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1))
            v.fidelity = float(cos.mean())
    timing = {k: np.ascontiguousarray(v[: args.minilm_batch]) for k, v in feeds.items()}
    _time(variants, timing, args.rounds)
    _print_table(
        f"MiniLM (all-MiniLM-L6-v2), {args.sentences} sentences, sequence 128; batch {args.minilm_batch}, "
        f"1 thread, {args.rounds} interleaved shuffled rounds",
        variants, "mean cosine to fp32", lambda x: f"{x:.4f}",
    )


def _tuned_minilm(model: nn.Module, tokenizer: Any, example: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, bytes]]:
    """squeezelab tuned: int8 search for the layers kept float, decided on sentences the table does not evaluate.

    Besides the search's answer, the measured point of its trail nearest the budget from below (the
    most layers float that still missed it) is timed too: the two bracket the speed a cosine costs.
    """
    from squeezelab.engine.explore.int8_search import float_layers_recipe
    from squeezelab.engine.zoo import sentences, tokenize

    held_out = sentences(253)[args.sentences:] or sentences(64)
    search_data = (tokenize(tokenizer, held_out, max_length=128), None)  # padded to the longest: fast probes
    t0 = time.perf_counter()
    found = sl.search(model, search_data, max_accuracy_drop=args.tuned_drop, runtime=sl.Int8Dynamic(), objective="size",
                      time_budget_s=args.tuned_budget, settings=sl.Settings(rounds=0, threads=1), cache=False, progress=False)
    floats = [s.name for s in found.recipe.layers]
    print(f"  squeezelab tuned: {found} in {time.perf_counter() - t0:.0f} s; kept float: {floats}", flush=True)
    columns = [c for c in ("move", "data", "accepted", "value", "drop_bound", "size_bytes") if c in found.trail]
    print(found.trail[columns].to_string(max_colwidth=60), flush=True)
    tuned = sl.compress(model, found.recipe, example_inputs=example)
    out = [(f"squeezelab tuned (search, drop <= {args.tuned_drop}): {found.recipe.label}, {len(floats)} layers float", tuned.onnx_bytes)]
    trail = found.trail
    missed = trail[trail["data"].str.startswith("all") & ~trail["accepted"].astype(bool)]
    missed = missed[missed["float_layers"].map(len) > 0]
    if len(missed):
        near = missed.loc[missed["float_layers"].map(len).idxmax()]
        layers = list(near["float_layers"])
        recipe = float_layers_recipe(sl.Int8Dynamic(), layers)
        name = f"squeezelab search trail: {len(layers)} layers float (missed drop <= {args.tuned_drop}, bound {near['drop_bound']:.4f})"
        out.append((name, sl.compress(model, recipe, example_inputs=example).onnx_bytes))
    return out


def print_environment() -> float:
    """Print the CPU (its flags), the library versions and the load average; return the start time."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # no per-initializer warnings from graph clean-up
    env = environment()
    flags = cpu_flags()
    shown = sorted(f for f in flags if f.startswith(("avx", "fma", "f16c", "amx")) or "vnni" in f)
    print(f"CPU: {env['cpu']} ({env['cores']} cores), avx2={env['avx2']} avx512={env['avx512']} vnni={env['vnni']}; "
          f"flags: {' '.join(shown)}")
    print(f"onnxruntime {env['onnxruntime']}, onnx {env['onnx']}, torch {env['torch']}; int8 defaults: {env['int8_defaults']}")
    print(f"load average at start: {load_average()}", flush=True)
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="interleaved timing rounds (>= 6 for a 95 %% interval)")
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--tuned-budget", type=float, default=0.0,
                        help="seconds for the 'squeezelab tuned' MiniLM row (int8 search); 0 leaves it out")
    parser.add_argument("--tuned-drop", type=float, default=0.003, help="the tuned search's allowed cosine drop")
    parser.add_argument("--minilm-batch", type=int, default=32)
    args = parser.parse_args()
    started = print_environment()
    with tempfile.TemporaryDirectory(prefix="int8_real_") as tmp:
        minilm(args, Path(tmp))
    print(f"\nload average at end: {load_average()}; wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
