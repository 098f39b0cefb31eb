"""Fashion-MNIST: 4-bit QAT vs 4-bit PTQ, 8-bit QAT exported to int8 ONNX, SNIP vs random at init.

PTQ and QAT use the same quantizers (``prepare_qat``): PTQ only calibrates the
activation ranges, QAT also trains through the rounding. SNIP and random
pruning at initialisation train the same LeNet-5 for the same steps. All
accuracies are on the 10,000 test images.

    python benchmarks/qat_snip.py
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import squeezelab as sl  # noqa: E402
from squeezelab.engine.core.data import load_fashion_mnist  # noqa: E402
from squeezelab.engine.zoo.digits import LeNet5, train_classifier  # noqa: E402


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float(np.mean([(model(torch.from_numpy(x[i : i + 1000])).argmax(1).numpy() == y[i : i + 1000]).mean() for i in range(0, len(x), 1000)]))


def main() -> None:
    data = load_fashion_mnist()
    x_te, y_te = data.test
    sub = (data.x_train[:20000], data.y_train[:20000])
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = LeNet5()
    base = train_classifier(fresh, *data.train, epochs=3, batch_size=128, lr=2e-3, seed=0)
    tune = dict(optimizer=lambda p: torch.optim.Adam(p, lr=5e-4), batch_size=128)
    base_acc = accuracy(base, x_te, y_te)
    print(f"LeNet-5 trained in {time.perf_counter() - t0:.0f} s; fp32 accuracy {base_acc:.4f}\n")

    print(f"  {'quantization':36s} {'accuracy':>9s} {'drop pp':>8s}")
    for bits in (4, 8):
        ptq = sl.quantization.prepare_qat(base, bits=bits)
        sl.quantization.calibrate_(ptq, data.x_train[:1024])
        ptq.eval()
        qat = sl.finetune(ptq, sub, epochs=1, **tune)
        for name, model in ((f"{bits}-bit PTQ (calibrated)", ptq), (f"{bits}-bit QAT (1 pass, 20k images)", qat)):
            acc = accuracy(model, x_te, y_te)
            print(f"  {name:36s} {acc:9.4f} {100 * (base_acc - acc):8.2f}")
        if bits == 8:
            import onnxruntime as ort

            onnx_bytes = sl.quantization.export_qat(qat, x_te[:1])
            session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            out = np.concatenate([session.run(None, {"input": x_te[i : i + 1000]})[0] for i in range(0, len(x_te), 1000)])
            acc = float((out.argmax(1) == y_te).mean())
            fp32_bytes = sl.compress(base, example_inputs=x_te[:1]).size_bytes
            print(f"  {'8-bit QAT as int8 ONNX (ORT)':36s} {acc:9.4f} {100 * (base_acc - acc):8.2f}   "
                  f"{len(onnx_bytes):,} bytes vs {fp32_bytes:,} fp32 ({len(onnx_bytes) / fp32_bytes:.3f}x)")

    print(f"\n  {'pruning at initialisation, 95%':36s} {'accuracy':>9s}")
    batch = (data.x_train[:1024], data.y_train[:1024])
    for method in ("snip", "random", "magnitude"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            init = LeNet5()
        sparse = sl.pruning.prune_at_init(init, method, sparsity=0.95, data=batch, seed=1)
        trained = sl.finetune(sparse, data.train, epochs=1, optimizer=lambda p: torch.optim.Adam(p, lr=2e-3), batch_size=128)
        print(f"  {method + ' (then 1 epoch of training)':36s} {accuracy(trained, x_te, y_te):9.4f}")


if __name__ == "__main__":
    main()
