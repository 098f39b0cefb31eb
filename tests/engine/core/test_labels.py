"""Labels a classifier cannot predict are refused wherever top-1 or cross-entropy would use them.

Before: labels outside [0, classes) or with a fractional part gave accuracy 0.0 on both sides of a
comparison (a drop of 0 that passed every gate), and cross-entropy silently skipped label -100.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import squeezelab as sl
from squeezelab.engine.explore.evaluation import Evaluator
from squeezelab.engine.measurement.compare import compare
from squeezelab.engine.measurement.paired import measure_pair
from tests.conftest import state_hash

WORDS = r"integer class indices in \[0, 10\) \(the model has 10 outputs\)"


def _bad_labels(split):
    """Three ways to hand a 10-class model labels it can never predict."""
    _, y = split.test
    return {
        "one-based": y + 1,  # 1..10
        "negative": np.where(y == 0, -1, y),
        "fractional": y * 0.5,
    }


@pytest.mark.parametrize("kind", ["one-based", "negative", "fractional"])
def test_measure_refuses_labels_outside_the_outputs(digits_mlp, kind):
    model, split = digits_mlp
    x, _ = split.test
    y = _bad_labels(split)[kind]
    with pytest.raises(sl.errors.DataError, match=WORDS) as info:
        sl.measure(model, (x, y), repeats=1)
    message = str(info.value)
    assert "metric=" in message
    if kind == "one-based":
        assert "range from 1 to 10" in message
    elif kind == "negative":
        assert "range from -1 to 9" in message
    else:
        assert "228 label(s) are not whole numbers (e.g. 4.5)" in message  # the odd digits, halved


def test_whole_number_float_labels_count_as_class_indices(digits_mlp):
    model, split = digits_mlp
    x, y = split.test
    c = sl.compress(model, example_inputs=x[:1])
    as_int = sl.measure(c, (x, y), repeats=1)
    as_float = sl.measure(c, (x, y.astype(np.float64)), repeats=1)
    assert as_float.accuracy == as_int.accuracy > 0.9


def test_a_custom_metric_takes_any_targets(digits_mlp):
    model, split = digits_mlp
    x, y = split.test

    def neg_mse(p, t):
        return -float(np.mean((p[:, 0] - t) ** 2))

    m = sl.measure(model, (x, y * 0.5), metric=neg_mse, repeats=1)
    expected = neg_mse(model(torch.from_numpy(x)).detach().numpy(), y * 0.5)
    assert m.accuracy == pytest.approx(expected, rel=1e-4)


def test_every_top1_path_refuses_them(digits_mlp, monkeypatch):
    model, split = digits_mlp
    x, y = split.test
    bad = (x, y + 1)
    c = sl.compress(model, example_inputs=x[:1])
    with pytest.raises(sl.errors.DataError, match=WORDS):
        measure_pair(model, c, bad, repeats=1)
    with pytest.raises(sl.errors.DataError, match=WORDS):
        compare(model, [sl.Recipe(quantization=sl.Float16())], bad, example_inputs=x[:1], rounds=1, batch_sizes=(1,))
    import squeezelab.engine.pipeline.compress as compressed_module

    def never(*args, **kwargs):
        raise AssertionError("a sweep point was compressed before the labels were checked")

    monkeypatch.setattr(compressed_module, "_compress", never)  # what compress and compress_for_data both run
    with pytest.raises(sl.errors.DataError, match=WORDS):
        Evaluator(model, bad, cache=False)
    with pytest.raises(sl.errors.DataError, match=WORDS):  # the error itself, not a SweepError per point
        sl.sweep(model, bad, bits=[8], sparsity=[0.0], cache=False, progress=False)


def test_finetune_refuses_labels_outside_the_outputs_before_training(digits_mlp):
    model, split = digits_mlp
    x, y = split.train
    before = state_hash(model)
    steps = []
    bad = y.copy()
    bad[-1] = 10  # one label out of range, in what would be the last batch
    with pytest.raises(sl.errors.DataError, match=r"cross-entropy.*" + WORDS + r".*range from 0 to 10.*loss="):
        sl.finetune(model, (x, bad), epochs=1, on_step=lambda step, m: steps.append(step))
    assert steps == []  # no optimizer step was taken
    assert state_hash(model) == before


def test_finetune_refuses_the_label_pytorch_would_silently_ignore(digits_mlp):
    model, split = digits_mlp
    x, y = split.train
    ignored = np.where(np.arange(len(y)) % 7 == 0, -100, y)  # cross_entropy's default ignore_index
    with pytest.raises(sl.errors.DataError, match=r"range from -100 to 9"):
        sl.finetune(model, (x[:256], ignored[:256]), epochs=1)


def test_finetune_checks_batches_from_a_loader(digits_mlp):
    model, split = digits_mlp
    x, y = split.train
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x[:128]), torch.from_numpy(y[:128] + 5))
    loader = torch.utils.data.DataLoader(dataset, batch_size=32)
    steps = []
    with pytest.raises(sl.errors.DataError, match=WORDS):
        sl.finetune(model, loader, on_step=lambda step, m: steps.append(step))
    assert steps == []


def test_finetune_takes_whole_number_float_labels_as_classes(digits_mlp):
    model, split = digits_mlp
    x, y = split.train
    as_int = sl.finetune(model, (x[:256], y[:256]), epochs=1, seed=3)
    as_float = sl.finetune(model, (x[:256], y[:256].astype(np.float32)), epochs=1, seed=3)
    assert state_hash(as_float) == state_hash(as_int)


def test_finetune_with_its_own_loss_takes_any_targets(digits_mlp):
    model, split = digits_mlp
    x, y = split.train
    targets = np.eye(10, dtype=np.float32)[y[:128]] * 3.0  # regression onto scaled one-hot vectors
    tuned = sl.finetune(model, (x[:128], targets), epochs=1, loss=torch.nn.functional.mse_loss)
    assert state_hash(tuned) != state_hash(model)
