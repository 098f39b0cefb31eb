"""ONNX files without a dynamic batch axis: a fixed batch runs in batches of its size (and says so); a graph
with no batch axis at all is refused, never scored element by element; ids are checked against its Gather table.

Oracles: the PyTorch model the files were exported from, and the number of samples given.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import squeezelab as sl


def _export(model: nn.Module, example: torch.Tensor, path, dynamic_axes=None, name: str = "x") -> str:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notice about its default
        torch.onnx.export(model.eval(), (example,), buffer, dynamo=False, input_names=[name], output_names=["y"],
                          dynamic_axes=dynamic_axes)
    path.write_bytes(buffer.getvalue())
    return str(path)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _data(n: int = 150) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 64)).astype(np.float32), rng.integers(0, 10, n)


class Pooled(nn.Module):
    """Takes (seq, 64), returns (10,): no batch axis at all."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).mean(0)


def test_a_graph_without_a_batch_axis_is_refused_before_anything_is_scored(tmp_path, monkeypatch):
    path = _export(Pooled(), torch.randn(7, 64), tmp_path / "pooled.onnx", dynamic_axes={"x": {0: "seq"}})
    import squeezelab.engine.measurement.metrics as metrics

    monkeypatch.setattr(metrics, "scores_of", lambda *a, **k: pytest.fail("scored a graph without a batch axis"))
    x, _ = _data()
    with pytest.raises(sl.errors.ModelError) as info:
        sl.measure(path, (x, None), rounds=0)
    message = str(info.value)
    assert "'pooled.onnx' returned an output of shape (10,) for 2 samples" in message
    assert "no batch axis" in message and "'x' (?, 64)" in message and "dynamic_axes" in message
    with pytest.raises(sl.errors.ModelError, match="no batch axis"):
        sl.compress(path, sl.Recipe(runtime=sl.Int8Static()), calibration_data=x)


@pytest.mark.parametrize("fixed", [1, 4])
def test_a_fixed_batch_runs_in_batches_of_its_size_and_says_so(tmp_path, fixed):
    model = _mlp()
    path = _export(model, torch.randn(fixed, 64), tmp_path / f"fixed{fixed}.onnx")
    x, y = _data(150)  # 150 = 37 x 4 + 2: the last batch of 4 is padded
    m = sl.measure(path, (x, y), rounds=2, warmup=1, batch_size=8)
    with torch.no_grad():
        expected = (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert m.n_samples == 150 and m.value == pytest.approx(expected)
    assert m.details["fixed_batch"] == fixed and m.latency_batch_size == fixed  # timed at the batch it takes
    c = sl.compress(path)
    with torch.no_grad():
        np.testing.assert_allclose(c.predict(x[:7]), model(torch.from_numpy(x[:7])).numpy(), rtol=1e-4, atol=1e-5)
    assert c.spec.batch == fixed and c.details["fixed_batch"] == fixed
    static = sl.compress(path, sl.Recipe(runtime=sl.Int8Static()), calibration_data=x[:10])
    assert static.predict(x[:5]).shape == (5, 10)


def test_ids_are_checked_against_the_onnx_graphs_gather_table(tmp_path):
    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.emb, self.fc = nn.Embedding(1000, 8), nn.Linear(8, 3)

        def forward(self, ids):
            return self.fc(self.emb(ids).mean(1))

    ids = torch.randint(0, 1000, (2, 6))
    path = _export(Bag(), ids, tmp_path / "bag.onnx", dynamic_axes={"ids": {0: "batch", 1: "seq"}}, name="ids")
    c = sl.compress(path)
    assert c.spec.vocab == ((1000, "emb.weight"),)
    bad = ids.numpy().copy()
    bad[1, 2] = 5288
    with pytest.raises(sl.errors.DataError, match=r"token ids from \d+ to 5288 .* embedding 'emb.weight' has 1000 rows"):
        c.predict(bad)
    with pytest.raises(sl.errors.DataError, match="the evaluation data hold token ids"):
        sl.measure(path, (bad, None), rounds=0)
