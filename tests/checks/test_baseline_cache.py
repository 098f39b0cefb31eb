"""The gate's baseline cache: a hit gives exactly what measuring gives, and any change of what it depends on misses.

Oracle: the fp32 export's outputs computed afresh (``compress(model, Recipe()).predict``), compared
exactly with what the cache returns. Keys are checked for every input they must see (weights, data,
output, example inputs), and for the one thing they must not see: a decorator object's memory address
(transformers decorates ``PreTrainedModel.initialize_weights`` with a ``@contextmanager`` object, whose
repr differs in every process, so a key holding it never matched a second run's).
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch

import squeezelab as sl
from squeezelab.checks.baseline_cache import BaselineCache
from squeezelab.engine.core.fingerprints import model_fingerprint
from squeezelab.engine.core.samples import read_samples


@pytest.fixture
def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


@pytest.fixture
def samples():
    rng = np.random.default_rng(0)
    return read_samples((rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 3, 40)))


def test_a_hit_returns_the_export_and_outputs_measuring_gives(net, samples, tmp_path):
    cache = BaselineCache(tmp_path)
    first = cache.baseline(net, samples, None, None, 256)
    second = cache.baseline(net, samples, None, None, 256)
    assert (first.status, second.status) == ("stored", "hit")
    fresh = sl.compress(net, sl.Recipe(), example_inputs=samples.inputs.slice(0, 1))
    expected = fresh.predict(samples.inputs)
    assert np.array_equal(second.outputs, expected) and np.array_equal(first.outputs, expected)
    assert second.compressed.onnx_bytes == first.compressed.onnx_bytes
    assert np.array_equal(second.compressed.predict(samples.inputs), expected)  # the cached export runs
    assert second.compressed.size_bytes == fresh.size_bytes and second.compressed.executable


def test_every_input_of_the_key_changes_it(net, samples, tmp_path):
    cache = BaselineCache(tmp_path)
    key = cache.key(net, samples, None, None)
    assert cache.key(copy.deepcopy(net), samples, None, None) == key  # content, not identity
    changed = copy.deepcopy(net)
    with torch.no_grad():
        changed[0].weight[0, 0] += 1e-3
    other_data = read_samples((samples.inputs.arrays[0] + 1, samples.targets))
    other_targets = read_samples((samples.inputs.arrays[0], (samples.targets + 1) % 3))
    keys = [cache.key(changed, samples, None, None), cache.key(net, other_data, None, None),
            cache.key(net, other_targets, None, None), cache.key(net, samples, None, 0),
            cache.key(net, samples, samples.inputs.arrays[0][:2], None)]
    assert len({key, *keys}) == 6


def test_off_measures_every_time(net, samples):
    cache = BaselineCache(None)
    assert [cache.baseline(net, samples, None, None, 256).status for _ in range(2)] == ["off", "off"]


def _guarded_class(guard):
    class Guarded(torch.nn.Linear):
        @guard
        def reset_parameters(self):
            super().reset_parameters()

    return Guarded


@contextlib.contextmanager
def _init_guard(level):
    yield level


def test_a_contextmanager_decorator_is_keyed_by_what_it_runs_not_where_it_lives():
    torch.manual_seed(0)
    a = _guarded_class(_init_guard(1))(4, 2)
    b = copy.deepcopy(a)
    b.__class__ = _guarded_class(_init_guard(1))  # another decorator object (another address), same code and argument
    c = copy.deepcopy(a)
    c.__class__ = _guarded_class(_init_guard(2))
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(c)


def test_a_damaged_entry_is_reported_removed_and_measured_again(net, samples, tmp_path):
    cache = BaselineCache(tmp_path)
    cache.baseline(net, samples, None, None, 256)
    (entry,) = [p for p in tmp_path.glob("*/*") if p.is_dir()]
    (entry / "model.onnx").write_bytes(b"not the export")
    with pytest.warns(RuntimeWarning, match="is corrupt; it is removed and the baseline measured again"):
        again = cache.baseline(net, samples, None, None, 256)
    assert again.status == "stored" and cache.baseline(net, samples, None, None, 256).status == "hit"


def test_a_file_where_the_folder_should_be_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(sl.errors.CacheError, match="the baseline cache .* is a file; pass a folder"):
        BaselineCache(tmp_path / "file")


def test_a_folder_that_cannot_be_written_warns_and_the_gate_goes_on(net, samples, tmp_path):
    (tmp_path / "file").write_text("x")
    cache = BaselineCache(tmp_path / "file" / "below")  # its parent is a file: nothing can be created there
    with pytest.warns(RuntimeWarning, match="cannot write the gate's baseline cache .*--compress-budget-cache=none"):
        found = cache.baseline(net, samples, None, None, 256)
    assert found.status == "not cached (the cache folder cannot be written)"
    assert np.array_equal(found.outputs, found.compressed.predict(samples.inputs))
