"""Packed files verify themselves, match the checksum saved beside them, and load only into their class.

Before: a flipped byte in the tensor area loaded without a word and changed the outputs (by 2.19 on
the digits MLP), and any model with the same tensor names and shapes took the weights.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

import squeezelab as sl
from squeezelab.engine.pipeline.artifact import unpack_encoded


@pytest.fixture(scope="module")
def packed(digits_mlp):
    model, split = digits_mlp
    recipe = sl.Recipe(quantization=sl.LinearQuantization(bits=4), runtime=sl.Simulated())
    return sl.compress(model, recipe, example_inputs=split.x_test[:1])


def _flip_last_byte(data: bytes) -> bytes:
    """The last byte of a safetensors file is tensor data (the header comes first)."""
    return data[:-1] + bytes([data[-1] ^ 0x01])


def test_an_intact_file_loads_with_identical_outputs(packed, digits_mlp, tmp_path):
    _, split = digits_mlp
    path = packed.save(tmp_path / "mlp.sqz")
    x = torch.from_numpy(split.x_test)
    for source in (path, str(path), packed.artifact_bytes):
        assert torch.equal(sl.load_packed(source, sl.models.DigitsMLP())(x), packed.model(x))


def test_a_flipped_tensor_byte_fails_the_files_own_checksum(packed):
    bad = _flip_last_byte(packed.artifact_bytes)
    with pytest.raises(sl.errors.ArtifactError, match=r"the packed artifact is corrupt: its content has sha256 [0-9a-f]{64}, but the file records [0-9a-f]{64}"):
        sl.load_packed(bad, sl.models.DigitsMLP())
    with pytest.raises(sl.errors.ArtifactError, match="corrupt"):
        unpack_encoded(bad)


def test_a_flipped_byte_on_disk_fails_against_the_checksum_beside_it(packed, tmp_path):
    path = packed.save(tmp_path / "mlp.sqz")
    bad = _flip_last_byte(path.read_bytes())
    path.write_bytes(bad)
    expected = hashlib.sha256(packed.artifact_bytes).hexdigest()
    actual = hashlib.sha256(bad).hexdigest()
    with pytest.raises(sl.errors.ArtifactError) as info:
        sl.load_packed(path, sl.models.DigitsMLP())
    message = str(info.value)
    assert str(path) in message and f"expected sha256 {expected}" in message and f"actual {actual}" in message
    # Without the .json beside it, the file's own checksum still catches it, naming the file.
    (tmp_path / "mlp.sqz.json").unlink()
    with pytest.raises(sl.errors.ArtifactError, match=rf"{path.name}' is corrupt"):
        sl.load_packed(path, sl.models.DigitsMLP())


def test_an_edited_checksum_beside_the_file_is_refused(packed, tmp_path):
    path = packed.save(tmp_path / "mlp.sqz")
    sidecar = tmp_path / "mlp.sqz.json"
    meta = json.loads(sidecar.read_text())
    assert meta["sha256"] == hashlib.sha256(packed.artifact_bytes).hexdigest()
    meta["sha256"] = "0" * 64
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(sl.errors.ArtifactError) as info:
        sl.load_packed(path, sl.models.DigitsMLP())
    actual = hashlib.sha256(packed.artifact_bytes).hexdigest()
    assert f"'{path}' does not match its checksum: expected sha256 {'0' * 64} (from mlp.sqz.json), actual {actual}" in str(info.value)
    sidecar.write_text("{not json")
    with pytest.raises(sl.errors.ArtifactError, match="mlp.sqz.json.*not readable JSON"):
        sl.load_packed(path, sl.models.DigitsMLP())


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(x)


class OtherHead(Head):
    """The same tensors under another class: its forward may mean something else entirely."""

    def forward(self, x):
        return -self.fc(x)


def test_a_model_of_another_class_is_refused_even_with_the_same_shapes():
    torch.manual_seed(0)
    c = sl.compress(Head(), sl.Recipe(quantization=sl.KMeansQuantization(bits=3), runtime=sl.Simulated()), example_inputs=torch.randn(1, 8))
    assert c.metadata()["model_class"] == f"{__name__}.Head"
    with pytest.raises(sl.errors.ArtifactError, match=rf"made from a {__name__}.Head model, but a {__name__}.OtherHead model was passed.*check_class=False"):
        sl.load_packed(c.artifact_bytes, OtherHead())
    x = torch.randn(3, 8)
    loaded = sl.load_packed(c.artifact_bytes, OtherHead(), check_class=False)  # the caller vouches for it
    assert torch.equal(loaded.fc(x), c.model.fc(x))
    assert torch.equal(sl.load_packed(c.artifact_bytes, Head())(x), c.model(x))


def test_a_pruned_models_class_is_its_own_not_pytorchs_parametrized_subclass():
    torch.manual_seed(0)
    sparse = sl.prune(torch.nn.Linear(8, 4), sl.MagnitudePruning(sparsity=0.5))  # class ParametrizedLinear
    c = sl.compress(sparse, sl.Recipe(quantization=sl.LinearQuantization(bits=4), runtime=sl.Simulated()), example_inputs=torch.randn(1, 8))
    assert c.metadata()["model_class"] == "torch.nn.modules.linear.Linear"
    sl.load_packed(c.artifact_bytes, torch.nn.Linear(8, 4))


# ---------------------------------------------------------------- paths that cannot be used (issue #21)


@pytest.fixture
def files(tmp_path):
    """A folder holding a plain file (so ``a-file/x`` is a path under a file)."""
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path


def _path_error(call, *words):
    """``call()`` raises ``ArtifactPathError`` (also a ConfigError and an OSError) whose message holds ``words``."""
    with pytest.raises(sl.errors.ArtifactError) as info:
        call()
    error = info.value
    assert type(error).__name__ == "ArtifactPathError" and isinstance(error, (OSError)) and isinstance(error, sl.errors.ConfigError)
    for word in words:
        assert word in str(error), (word, str(error))
    return error


def test_load_packed_names_a_missing_file_a_folder_and_a_path_under_a_file(files):
    model = sl.models.DigitsMLP()
    _path_error(lambda: sl.load_packed(files / "none.sqz", model), repr(str(files / "none.sqz")), "not found",
                "Compressed.save")
    _path_error(lambda: sl.load_packed(files, model), repr(str(files)), "is a folder", "Compressed.save")
    _path_error(lambda: sl.load_packed(files / "a-file" / "x.sqz", model), "'" + str(files / "a-file") + "' is a file")
    _path_error(lambda: sl.load_packed(None, model), "source=None is not a file path", "or its bytes")


def test_save_refuses_unusable_paths_before_writing_anything(packed, files, monkeypatch):
    before = sorted(p.name for p in files.iterdir())
    _path_error(lambda: packed.save(files), "is a folder", str(files / "model.safetensors"))
    _path_error(lambda: packed.save(files / "a-file" / "m.sqz"), "'" + str(files / "a-file") + "' is a file")
    _path_error(lambda: packed.save(files / "a-file"), "exists", "overwrite=True")
    (files / "m.sqz.json").write_text("{}")  # the metadata file beside it counts too
    _path_error(lambda: packed.save(files / "m.sqz"), "m.sqz.json' exists", "overwrite=True")
    _path_error(lambda: packed.save(3), "path=3 is not a file path")
    read_only = files / "read-only"
    read_only.mkdir()
    real_access = os.access
    # Root writes anywhere, so the folder's permission bits cannot make it read-only here: ask os.access.
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(read_only) else real_access(p, mode))
    error = _path_error(lambda: packed.save(read_only / "sub" / "m.sqz"), "cannot be written", "choose a writable folder")
    assert error.path == read_only / "sub" / "m.sqz"
    assert sorted(p.name for p in files.iterdir()) == sorted(before + ["m.sqz.json", "read-only"])
    assert list(read_only.iterdir()) == []
    monkeypatch.undo()
    assert packed.save(read_only / "sub" / "m.sqz").is_file()  # missing folders are created
