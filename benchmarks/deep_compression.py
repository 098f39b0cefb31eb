"""Deep Compression of LeNet-300-100 on Fashion-MNIST: prune -> trained k-means -> Huffman.

Every size is the byte count of a real file: the fp32 ONNX model as the
baseline, the Deep-Compression file (``Simulated(coding="huffman")``), which
loads back into the model with identical outputs. Accuracy is on the 10,000
test images at each stage. The peer, ``torch.nn.utils.prune``, keeps dense
tensors: its file is as large as the baseline.

    python benchmarks/deep_compression.py
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch import nn

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import squeezelab as sl  # noqa: E402
from squeezelab.engine.core.data import load_fashion_mnist  # noqa: E402
from squeezelab.engine.zoo.digits import train_classifier  # noqa: E402
from squeezelab.engine.pruning.prune import weight_sparsity  # noqa: E402


class LeNet300100(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


SPARSITY = 0.94  # global magnitude pruning (the paper kept 8% of LeNet-300-100 weights)
BITS = 4  # k-means bits per weight (the paper used 6 for LeNet-300-100)


def main() -> None:
    data = load_fashion_mnist()
    train, (x_te, y_te) = data.train, data.test
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fresh = LeNet300100()
    base = train_classifier(fresh, *train, epochs=4, batch_size=128, lr=1e-3, seed=0)
    tune = dict(optimizer=lambda p: torch.optim.Adam(p, lr=5e-4), batch_size=128)
    stages = [("fp32 baseline", base)]

    pruned = sl.finetune(sl.prune(base, sl.MagnitudePruning(sparsity=SPARSITY, scope="global")), train, epochs=3, **tune)
    sl.pruning.bake_masks_(pruned)
    stages.append((f"pruned {SPARSITY:.0%} + fine-tune", pruned))

    shared = sl.finetune(sl.quantization.share_weights(pruned, sl.KMeansQuantization(bits=BITS)), train, epochs=1, **tune)
    sl.quantization.bake_shared_weights_(shared)
    stages.append((f"+ trained k-means {BITS} bits", shared))
    print(f"trained and compressed in {time.perf_counter() - t0:.0f} s")

    example = x_te[:1]
    fp32_bytes = sl.compress(base, example_inputs=example).size_bytes
    dc = sl.compress(
        shared,
        sl.Recipe(quantization=sl.KMeansQuantization(bits=BITS), runtime=sl.Simulated(coding="huffman")),
        example_inputs=example,
    )
    restored = sl.load_packed(dc.artifact_bytes, LeNet300100())
    identical = torch.equal(restored(torch.from_numpy(x_te)), shared(torch.from_numpy(x_te)))

    import torch.nn.utils.prune as tprune

    peer = LeNet300100()
    peer.load_state_dict(base.state_dict())
    params = [(m, "weight") for m in peer.modules() if isinstance(m, nn.Linear)]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=SPARSITY)
    for m, name in params:
        tprune.remove(m, name)

    base_acc = accuracy(base, x_te, y_te)
    print("\nLeNet-300-100 on Fashion-MNIST (top-1 on 10,000 test images)")
    print(f"  {'stage':44s} {'accuracy':>9s} {'drop pp':>8s} {'sparsity':>9s}")
    for name, model in stages:
        acc = accuracy(model, x_te, y_te)
        print(f"  {name:44s} {acc:9.4f} {100 * (base_acc - acc):8.2f} {weight_sparsity(model):9.3f}")
    peer_acc = accuracy(peer, x_te, y_te)
    peer_name = f"torch.nn.utils.prune {SPARSITY:.0%} (peer, no fine-tune)"
    print(f"  {peer_name:44s} {peer_acc:9.4f} {100 * (base_acc - peer_acc):8.2f} {weight_sparsity(peer):9.3f}")
    peer_bytes = sl.compress(peer, example_inputs=example).size_bytes
    final_acc = accuracy(shared, x_te, y_te)
    ratio = fp32_bytes / dc.size_bytes
    print(f"\n  fp32 ONNX file                      {fp32_bytes:>10,d} bytes")
    print(f"  peer (dense, pruned) ONNX file      {peer_bytes:>10,d} bytes ({fp32_bytes / peer_bytes:.2f}x)")
    print(f"  Deep-Compression file (simulated)   {dc.size_bytes:>10,d} bytes ({ratio:.1f}x); loads back identical: {identical}")
    drop = 100 * (base_acc - final_acc)
    print(f"  target >= 40x with <= 1 pp drop: {ratio:.1f}x, {drop:.2f} pp -> {'met' if ratio >= 40 and drop <= 1 else 'NOT met'}")
    print("  (the file is executed by decoding to dense float weights: a simulation, not a sparse kernel)")


if __name__ == "__main__":
    main()
