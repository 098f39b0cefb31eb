"""A first and a second ``pytest --compress-budget`` run on MiniLM: what the fp32 baseline cache saves.

A temporary project, set up as a team would: ``pyproject.toml`` holds the budget, one test compresses
all-MiniLM-L6-v2 (real weights) to dynamic int8 and gates it against the fp32 model on ``--sentences``
shipped sentences (128 tokens, no targets: cosine to fp32), timing 30 interleaved rounds for the speed
gate. Each pair of runs starts with an empty baseline cache (``--compress-budget-cache``): the first run
exports the fp32 model, checks the export against PyTorch and runs it over every sentence, then caches
the export and outputs; the second, on the unchanged model and data, reads them. Both runs are whole
``pytest`` processes (start-up, model loading, the candidate's own compression, the gate); the gate's
``check`` is also timed inside the test. Times are wall-clock seconds on this machine, medians over
``--pairs`` pairs; nothing is asserted. The CPU's flags and the load average are printed with them.

    flock /work/bench.lock .venv/bin/python benchmarks/gate_repeat.py --pairs 3   # ~2.5 min idle, more under load
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from _machine import cpu_line, load_average  # noqa: E402  (benchmarks/, beside this script)

BUDGET = """[tool.squeezelab.budget]
max_drop = 0.02          # cosine to fp32 of the sentence embeddings
min_compression = 2.0
min_speedup = 1.0
latency_rounds = 30
"""

TEST = '''
import json
import os
import time

import squeezelab as sl
from squeezelab.engine.zoo import SentenceEncoder, load_minilm, sentences, tokenize


def test_minilm_int8_fits_the_budget(compress_budget):
    bert, tokenizer = load_minilm()
    model = SentenceEncoder(bert).eval()
    tokens = tokenize(tokenizer, sentences(int(os.environ["GATE_SENTENCES"])), max_length=128, padding="max_length")
    example = {k: v[:1] for k, v in tokens.items()}
    times = {}
    start = time.perf_counter()
    int8 = sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic()), example_inputs=example)
    times["candidate_s"] = time.perf_counter() - start
    start = time.perf_counter()
    try:
        compress_budget.check(model, int8, data=(tokens, None))
    finally:
        times["check_s"] = time.perf_counter() - start
        with open(os.environ["GATE_TIMES"], "w") as f:
            json.dump(times, f)
'''


def one_run(project: Path, cache: Path, sentences: int) -> dict:
    """One whole ``pytest --compress-budget`` process: its wall time, the check's time, the cache's status."""
    times, report = project / "times.json", project / "report.json"
    env = {**os.environ, "GATE_TIMES": str(times), "GATE_SENTENCES": str(sentences)}
    env.pop("GITHUB_STEP_SUMMARY", None)
    command = [sys.executable, "-m", "pytest", "--compress-budget", f"--compress-budget-cache={cache}",
               "--compress-budget-report=report.json", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "test_minilm_gate.py"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if not report.exists() or not times.exists():
        raise SystemExit(f"the gate run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    (check,) = json.loads(report.read_text())["checks"]
    drop = next(f for f in check["figures"] if f["name"] == "cosine_drop")
    return {"wall_s": wall, **json.loads(times.read_text()), "cache": check["baseline_cache"], "passed": check["passed"],
            "cosine_drop": drop["value"], "speedup": check["summary"]["speedup"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="pairs of runs (first: empty cache; second: the cache it left)")
    parser.add_argument("--sentences", type=int, default=64)
    args = parser.parse_args()
    print(cpu_line())
    print(f"load average at start: {load_average()}", flush=True)
    runs: dict[str, list[dict]] = {"first": [], "second": []}
    with tempfile.TemporaryDirectory(prefix="gate_repeat_") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        (project / "pyproject.toml").write_text(BUDGET)
        (project / "test_minilm_gate.py").write_text(TEST)
        for pair in range(args.pairs):
            cache = Path(tmp) / f"cache-{pair}"  # empty for the first run of each pair
            for which in ("first", "second"):
                run = one_run(project, cache, args.sentences)
                runs[which].append(run)
                print(f"pair {pair + 1} {which:6s}: pytest {run['wall_s']:6.1f} s, gate check {run['check_s']:6.2f} s, "
                      f"candidate's compress {run['candidate_s']:5.1f} s; fp32 baseline {run['cache']}; "
                      f"cosine_drop {run['cosine_drop']:.2e}, speedup {run['speedup']:.2f}x, "
                      f"{'pass' if run['passed'] else 'FAIL'}", flush=True)
    print(f"\nMiniLM (all-MiniLM-L6-v2), {args.sentences} sentences x 128 tokens, dynamic int8 candidate; medians of {args.pairs}:")
    for key, what in (("wall_s", "whole pytest run"), ("check_s", "compress_budget.check")):
        first, second = (statistics.median(r[key] for r in runs[w]) for w in ("first", "second"))
        print(f"  {what:22s}: first {first:6.2f} s, second {second:6.2f} s, first / second {first / second:.2f}x")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
