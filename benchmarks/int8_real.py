"""int8 on a real transformer, side by side: squeezelab vs ONNX Runtime's own tools (and torch.ao) in one run.

all-MiniLM-L6-v2 (real weights, ``--sentences`` shipped sentences tokenized to 128 tokens; static int8,
smoothing and GPTQ calibrated on the next ``--calibration`` sentences, never evaluated). Every ONNX
variant is built from the SAME fp32 export (``compress(model, Recipe())``, saved once; ONNX Runtime's
tools are applied to that saved file) and runs in an ONNX Runtime session with one intra-op thread and
spinning off; torch.ao runs in PyTorch with one thread. Rows: ONNX Runtime's ``quantize_dynamic``
(defaults; optimizer + per-channel) and ``quantize_static`` (defaults; MatMul/Gemm only; an expert
setting), torch.ao, and squeezelab's defaults with and without their fidelity steps (smoothing), static
int8 with each calibration, 4-bit weight-only. Fidelity: mean cosine of the sentence embeddings to fp32
ONNX Runtime. Speed: every variant timed once per round in shuffled order, in the same rounds; speedup =
median over rounds of fp32_time / variant_time with its 95 % interval. Nothing is asserted; the CPU's
flags and the load average (start and end) are printed with the figures. The static int8 CNNs
(ResNet-18, MobileNetV2, EfficientNet-Lite0) are in ``int8_cnn.py``.

``--tuned-budget S`` adds the "squeezelab tuned" rows: ``search(runtime=Int8Static())`` (algorithms first,
then layers kept float; ``--tuned-runtime dynamic`` for dynamic int8) decided on shipped sentences the
table does not evaluate, and the trail point just below its budget.

    REPO=$PWD; cd /tmp && $REPO/.venv/bin/python $REPO/benchmarks/int8_real.py --tuned-budget 360   # ~7.5 min
    cd /tmp && $REPO/.venv/bin/python $REPO/benchmarks/int8_real.py --rounds 6 --sentences 64
"""

from __future__ import annotations

import argparse
import contextlib
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
from squeezelab.engine.runtime.environment import environment  # noqa: E402
from squeezelab.engine.measurement.latency import interleaved_latency, torch_threads  # noqa: E402
from squeezelab.engine.runtime.providers import make_session  # noqa: E402
from squeezelab.engine.measurement.stats import ratio_interval, speedup_text  # noqa: E402

from _machine import cpu_line, load_average  # noqa: E402  (benchmarks/, beside this script)

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

    calibration = tokenize(tokenizer, sentences(253)[args.sentences:args.sentences + args.calibration],
                           max_length=128, padding="max_length")  # sentences the table never evaluates
    calib_feeds = {k: v.numpy() for k, v in calibration.items()}
    built += _ort_static(fp32_path, calib_feeds, tmp)
    for name, recipe, with_calibration in _squeezelab_recipes():
        t0 = time.perf_counter()
        c = sl.compress(model, recipe, example_inputs=example, calibration_data=calibration if with_calibration else None)
        steps = c.details.get("transforms", {}).get("applied", [])
        print(f"  {name} built in {time.perf_counter() - t0:.0f} s; steps: {[a['step'] for a in steps]}; "
              f"choices: {c.details.get('choices', {}).get('why', {}).get('op_types', '')}", flush=True)
        built.append((name, c.onnx_bytes))
    if args.tuned_budget > 0:
        built += _tuned_minilm(model, tokenizer, example, calibration, args)

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


def _squeezelab_recipes() -> list[tuple[str, sl.Recipe, bool]]:
    """squeezelab's rows: (name, recipe, whether compress gets the calibration sentences)."""
    static = [(f"squeezelab Int8Static({c!r}) default (smoothing auto)", sl.Recipe(runtime=sl.Int8Static(calibration=c)), True)
              for c in ("minmax", "percentile", "entropy")]
    return [
        ("squeezelab Int8Dynamic() default (no calibration data)", sl.Recipe(runtime=sl.Int8Dynamic()), False),
        ("squeezelab Int8Dynamic() + calibration data (smoothing auto)", sl.Recipe(runtime=sl.Int8Dynamic()), True),
        *static,
        ("squeezelab Int8Static() without smoothing (transforms=())", sl.Recipe(runtime=sl.Int8Static(), transforms=()), True),
        ("squeezelab Int8Static() + Smoothing(alpha=0.5)",
         sl.Recipe(runtime=sl.Int8Static(), transforms=(sl.Smoothing(alpha=0.5),)), True),
        ("squeezelab WeightOnly() default + calibration data (GPTQ)", sl.Recipe(runtime=sl.WeightOnly()), True),
    ]


def _ort_static(fp32_path: Path, calib: dict[str, np.ndarray], tmp: Path) -> list[tuple[str, bytes | None]]:
    """ONNX Runtime's quantize_static on the same export and calibration sentences: its defaults, MatMul/Gemm
    only (the usual advice for transformers), and an expert setting (pre-processing, per-channel, U8S8,
    MatMul inputs only, no MatMul output quantized). A row that fails says so instead of a model."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from squeezelab.engine.runtime.ort_tools import BatchReader

    batches = [{k: v[i:i + 16] for k, v in calib.items()} for i in range(0, len(calib["input_ids"]), 16)]
    settings = {
        "ORT quantize_static defaults": {},
        "ORT quantize_static MatMul+Gemm only": {"op_types_to_quantize": ["MatMul", "Gemm"]},
        "ORT quantize_static expert (pre-process, per-channel, MatMul inputs only)": {
            "op_types_to_quantize": ["MatMul", "Gemm"], "per_channel": True, "preprocess": True,
            "extra_options": {"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]},
        },
    }
    out: list[tuple[str, bytes | None]] = []
    for name, options in settings.items():
        options = dict(options)
        source = fp32_path
        if options.pop("preprocess", False):
            try:  # in the temp folder: a failed shape inference leaves its files in the working directory
                with contextlib.chdir(tmp):
                    quant_pre_process(str(fp32_path), str(tmp / "pre.onnx"))
                source = tmp / "pre.onnx"
            except Exception as exc:  # noqa: BLE001 - a benchmark row: say it and go on
                print(f"  {name}: quant_pre_process failed ({str(exc)[:80]}); quantizing the export", flush=True)
        target = tmp / f"ort_static_{len(out)}.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(str(source), str(target), BatchReader(batches), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax, **options)
            out.append((name, target.read_bytes()))
        except Exception as exc:  # noqa: BLE001
            print(f"  {name}: failed: {str(exc)[:120]}", flush=True)
    return out


def _tuned_minilm(model: nn.Module, tokenizer: Any, example: dict[str, Any], calibration: dict[str, Any],
                  args: argparse.Namespace) -> list[tuple[str, bytes]]:
    """squeezelab tuned: the int8 search (algorithms first, then layers kept float), decided on sentences the
    table does not evaluate and calibrated on the calibration sentences.

    Besides the search's answer, the measured point of its trail nearest the budget from below (the
    most layers float that still missed it) is timed too: the two bracket the speed a cosine costs.
    """
    from squeezelab.engine.explore.int8_search import float_layers_recipe
    from squeezelab.engine.zoo import sentences, tokenize

    held_out = sentences(253)[args.sentences + args.calibration:] or sentences(64)
    search_data = (tokenize(tokenizer, held_out, max_length=128), None)  # padded to the longest: fast probes
    runtime = sl.Int8Static() if args.tuned_runtime == "static" else sl.Int8Dynamic()
    t0 = time.perf_counter()
    found = sl.search(model, search_data, max_accuracy_drop=args.tuned_drop, runtime=runtime, objective="size",
                      time_budget_s=args.tuned_budget, calibration_data=calibration, settings=sl.Settings(rounds=0, threads=1),
                      cache=False, progress=False)
    floats = [s.name for s in found.recipe.layers]
    print(f"  squeezelab tuned: {found} in {time.perf_counter() - t0:.0f} s; kept float: {floats}", flush=True)
    print(f"  algorithms: {found.details.get('algorithms')}", flush=True)
    columns = [c for c in ("move", "data", "accepted", "value", "drop_bound", "size_bytes") if c in found.trail]
    print(found.trail[columns].to_string(max_colwidth=70), flush=True)
    tuned = sl.compress(model, found.recipe, example_inputs=example, calibration_data=calibration)
    out = [(f"squeezelab tuned (search, drop <= {args.tuned_drop}): {found.recipe.label}, {len(floats)} layers float",
            tuned.onnx_bytes)]
    trail = found.trail
    missed = trail[trail["data"].str.startswith("all") & ~trail["accepted"].astype(bool)]
    missed = missed[missed["float_layers"].map(lambda f: isinstance(f, list) and len(f) > 0)]
    if len(missed):
        near = missed.loc[missed["float_layers"].map(len).idxmax()]
        layers = list(near["float_layers"])
        base = sl.Recipe(runtime=found.recipe.runtime, transforms=found.recipe.transforms)
        name = f"squeezelab search trail: {len(layers)} layers float (missed drop <= {args.tuned_drop}, bound {near['drop_bound']:.4f})"
        out.append((name, sl.compress(model, float_layers_recipe(base, layers), example_inputs=example,
                                      calibration_data=calibration).onnx_bytes))
    return out


def print_environment() -> float:
    """Print the CPU (its flags), the library versions and the load average; return the start time."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # no per-initializer warnings from graph clean-up
    env = environment()
    print(cpu_line())
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
    parser.add_argument("--tuned-runtime", choices=("static", "dynamic"), default="static", help="the tuned search's runtime")
    parser.add_argument("--minilm-batch", type=int, default=32)
    parser.add_argument("--calibration", type=int, default=64, help="calibration sentences (after the evaluated ones)")
    args = parser.parse_args()
    started = print_environment()
    with tempfile.TemporaryDirectory(prefix="int8_real_") as tmp:
        minilm(args, Path(tmp))
    print(f"\nload average at end: {load_average()}; wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
