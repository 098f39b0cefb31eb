"""The bundled data sets load as documented."""

from __future__ import annotations

import numpy as np
import pytest

from squeezelab.engine.core.data import load_digits_split, load_fashion_mnist
from squeezelab.engine.core.errors import DataError


def test_digits_split_is_stratified_and_deterministic():
    a, b = load_digits_split(seed=0), load_digits_split(seed=0)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert a.x_train.shape == (1347, 1, 8, 8) and a.x_test.shape == (450, 1, 8, 8)
    assert a.x_train.dtype == np.float32 and 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert np.bincount(a.y_test).min() >= 43 and np.bincount(a.y_test).max() <= 46  # stratified: ~45 per class


def test_fashion_mnist_from_the_debian_package():
    split = load_fashion_mnist()  # scripts/setup.sh installs dataset-fashion-mnist
    assert split.x_train.shape == (60000, 1, 28, 28) and split.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(split.y_test).tolist() == [1000] * 10
    assert split.x_test.dtype == np.float32 and split.x_test.max() <= 1.0


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)
