"""The result cache: its key follows what the model computes; a folder it cannot use is a CacheError."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch
from torch import nn

import squeezelab as sl
import inspect

from squeezelab.engine.core.fingerprints import model_fingerprint
from squeezelab.engine.explore.cache import ResultCache
from squeezelab.engine.explore.sweep import sweep

GRID = dict(bits=(8, 4, 2), sparsity=(0.0, 0.5))

_NET = """
def helper(x):
    return x

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return helper(self.fc(x))
"""


def _exec_model(source: str) -> nn.Module:
    """A model whose class is defined by ``exec``, as in a notebook cell: no source file to read."""
    namespace = {"nn": nn, "__name__": "notebook_cell"}
    exec(source, namespace)
    torch.manual_seed(0)  # equal weights: only the code differs
    return namespace["Net"]()


def _labelled_by(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and the labels ``model`` gives them: it scores 1.0; a model computing otherwise does not."""
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    return x, y


def _figures(model: nn.Module, data, cache) -> tuple[str, sl.Point]:
    ev = sl.explore.Evaluator(model, data, cache=cache, latency_repeats=0)
    return ev.model_key, ev.evaluate(sl.Recipe())


def test_exec_classes_with_different_forward_get_different_keys_and_figures(tmp_path):
    plain = _exec_model(_NET)
    negated = _exec_model(_NET.replace("return helper(self.fc(x))", "return -helper(self.fc(x))"))
    with pytest.raises((OSError, TypeError)):  # the premise: there is no source to key it by
        inspect.getsource(type(plain))
    assert type(plain).__qualname__ == type(negated).__qualname__
    assert torch.equal(plain.fc.weight, negated.fc.weight)
    data = _labelled_by(plain)
    key, row = _figures(plain, data, tmp_path)
    other_key, other_row = _figures(negated, data, tmp_path)
    assert other_key != key
    assert not other_row.cached  # recomputed, not served the first model's figures
    assert row.value == 1.0 and other_row.value == 0.0  # argmax of -logits is another class
    # the same code defined again (a re-run cell) is the same key: a cache hit, not a fresh random key
    again_key, again_row = _figures(_exec_model(_NET), data, tmp_path)
    assert again_key == key and again_row.cached and again_row.value == 1.0


def test_a_changed_module_level_helper_changes_the_key():
    plain = _exec_model(_NET)
    doubled = _exec_model(_NET.replace("def helper(x):\n    return x", "def helper(x):\n    return 2 * x"))
    assert model_fingerprint(doubled) != model_fingerprint(plain)


class _Scaled(nn.Module):
    def __init__(self, buffer: float = 1.0, attribute: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 3)
        self.register_buffer("sign", torch.tensor(buffer), persistent=False)  # not in state_dict()
        self.factor = attribute  # a plain attribute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.sign * self.factor


def test_non_persistent_buffers_are_in_the_key(tmp_path):
    plain, flipped = _Scaled(buffer=1.0), _Scaled(buffer=-1.0)
    assert "sign" not in plain.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), flipped.state_dict().values()))
    data = _labelled_by(plain)
    key, row = _figures(plain, data, tmp_path)
    other_key, other_row = _figures(flipped, data, tmp_path)
    assert other_key != key and not other_row.cached
    assert row.value == 1.0 and other_row.value == 0.0


def test_plain_attributes_are_in_the_key():
    assert model_fingerprint(_Scaled(attribute=-1.0)) != model_fingerprint(_Scaled(attribute=1.0))
    assert model_fingerprint(_Scaled()) == model_fingerprint(_Scaled())  # equal models, equal keys


def test_forward_hooks_are_in_the_key():
    hooked = _Scaled()
    hooked.fc.register_forward_hook(lambda module, args, out: -out)
    assert model_fingerprint(hooked) != model_fingerprint(_Scaled())


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any point is measured."""
    import squeezelab.engine.explore.evaluation as evaluation
    import squeezelab.engine.explore.sweep as sweeping

    def never(*args, **kwargs):
        raise AssertionError("a point was measured before the bad argument was refused")

    monkeypatch.setattr(evaluation, "run_point", never)
    monkeypatch.setattr(sweeping, "run_point", never)


@pytest.fixture(scope="module")
def small(digits_mlp):
    model, split = digits_mlp
    x, y = split.test
    return model, (x[:200], y[:200])


def test_a_cache_folder_that_cannot_be_created_fails_before_any_work(small, tmp_path, no_work):
    model, data = small
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    folder = blocker / "cache"
    with pytest.raises(sl.errors.CacheError, match=r"cannot write to the result cache at .*a-file/cache.*cache=False") as info:
        sweep(model, data, **GRID, cache=folder, progress=False)
    assert isinstance(info.value, sl.SqueezeError) and isinstance(info.value, OSError)
    assert info.value.path == folder


def test_a_read_only_cache_folder_fails_before_any_work(small, tmp_path, no_work):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the folder-under-a-file test covers the probe")
    model, data = small
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(sl.errors.CacheError, match=r"read-only.*cache=False"):
            sweep(model, data, **GRID, cache=folder, progress=False)
    finally:
        folder.chmod(0o700)


def test_a_full_disk_mid_sweep_raises_cache_error_and_keeps_the_finished_points(small, tmp_path, monkeypatch):
    model, data = small
    real, writes = ResultCache._write, []

    def fills_up(path, entry):
        writes.append(path)
        if len(writes) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, entry)

    monkeypatch.setattr(ResultCache, "_write", staticmethod(fills_up))
    with pytest.raises(sl.errors.CacheError, match=r"No space left on device.*another folder.*cache=False") as info:
        sweep(model, data, **GRID, cache=tmp_path, progress=False, latency_repeats=0)
    partial = info.value.sweep
    assert not partial.complete and len(partial.table) == 3  # two stored, and the one that could not be
    assert partial.table["cached"].tolist() == [False, False, False]
    assert len(ResultCache(tmp_path)) == 2
    monkeypatch.setattr(ResultCache, "_write", staticmethod(real))
    resumed = sweep(model, data, **GRID, cache=tmp_path, progress=False, latency_repeats=0)
    assert (resumed.hits, resumed.misses) == (2, 5)
    assert resumed.table["accuracy"][:3].tolist() == partial.table["accuracy"].tolist()


def test_a_changed_same_module_class_or_constant_changes_the_key():
    source = _NET.replace("def helper(x):\n    return x", (
        "SCALE = 1.0\n\nclass Helper:\n    @staticmethod\n    def apply(x):\n        return x * SCALE\n"
    )).replace("return helper(self.fc(x))", "return Helper.apply(self.fc(x))")
    base = model_fingerprint(_exec_model(source))
    assert model_fingerprint(_exec_model(source)) == base
    assert model_fingerprint(_exec_model(source.replace("return x * SCALE", "return -x * SCALE"))) != base
    assert model_fingerprint(_exec_model(source.replace("SCALE = 1.0", "SCALE = 2.0"))) != base


def _exec_bare(source: str) -> nn.Module:
    """``exec(source, {"nn": nn})``: no ``__name__`` in the namespace, so the class's ``__module__`` is "builtins"."""
    namespace = {"nn": nn}
    exec(source, namespace)
    torch.manual_seed(0)
    return namespace["Net"]()


def test_a_class_made_by_exec_without_a_module_name_is_keyed_by_its_code(tmp_path):
    # Its __module__ is "builtins", which the key once skipped as Python's own: an edited class was served
    # the old class's cached figures (0.495 against a true 0.005).
    plain = _exec_bare(_NET)
    negated = _exec_bare(_NET.replace("return helper(self.fc(x))", "return -helper(self.fc(x))"))
    assert type(plain).__module__ == "builtins" and torch.equal(plain.fc.weight, negated.fc.weight)
    data = _labelled_by(plain)
    key, row = _figures(plain, data, tmp_path)
    other_key, other_row = _figures(negated, data, tmp_path)
    assert other_key != key and not other_row.cached
    assert row.value == 1.0 and other_row.value == 0.0
    again_key, again_row = _figures(_exec_bare(_NET), data, tmp_path)  # the same code again: a hit
    assert again_key == key and again_row.cached
    doubled = _exec_bare(_NET.replace("def helper(x):\n    return x", "def helper(x):\n    return 2 * x"))
    assert model_fingerprint(doubled) != model_fingerprint(plain)  # its namespace's helpers count too


def _aged(path, seconds: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{")
    then = path.stat().st_mtime - seconds
    os.utime(path, (then, then))
    return path


def test_temporary_files_of_killed_writers_are_removed_when_the_cache_is_opened(tmp_path):
    from squeezelab.engine.explore.cache import ORPHAN_AGE_S

    cache = ResultCache(tmp_path)
    cache.put("ab" + "0" * 62, {"value": 1})
    orphans = [_aged(tmp_path / "ab" / ".tmp-killed.json", ORPHAN_AGE_S + 60),
               _aged(tmp_path / ".tmp-probe-killed", ORPHAN_AGE_S + 60)]
    # written just now: maybe by another process that is writing it at this moment
    live = [_aged(tmp_path / "ab" / ".tmp-writing.json", 1), _aged(tmp_path / ".tmp-probe-writing", 1)]
    ResultCache(tmp_path).check_writable()  # what every sweep / evaluator does before its first point
    assert [p.exists() for p in orphans] == [False, False]
    assert [p.exists() for p in live] == [True, True]
    assert list(ResultCache(tmp_path).keys()) == ["ab" + "0" * 62]  # entries are never touched
