"""Shared fixtures: the trained default models (once per session) and seeded RNGs."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

pytest_plugins = ["pytester"]

# pytester runs pytest in-process and restores sys.modules after each run. Extension modules
# (onnx, onnxruntime, torch, scipy, scikit-learn) cannot be imported twice in one process, so they are
# imported here, outside any pytester run, and stay loaded.
import onnx  # noqa: E402, F401
import onnxruntime  # noqa: E402, F401
import scipy.stats  # noqa: E402, F401
import sklearn  # noqa: E402, F401


def state_hash(model: torch.nn.Module) -> str:
    """SHA-256 over every tensor of a state_dict: equal hashes mean an unchanged model."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def digits_cnn():
    from squeezelab.engine.default_models import default_model

    return default_model("cnn")


@pytest.fixture(scope="session")
def digits_mlp():
    from squeezelab.engine.default_models import default_model

    return default_model("mlp")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
