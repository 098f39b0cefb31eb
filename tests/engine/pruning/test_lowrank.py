"""Low-rank factorisation: exact on low-rank weights, energy respected, really smaller layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import squeezelab as sl
from squeezelab.engine.pruning.lowrank import choose_rank
from tests.conftest import state_hash


def test_a_rank_3_weight_is_reproduced_exactly_at_rank_3():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 40), nn.ReLU(), nn.Linear(40, 5))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(40, 3) @ torch.randn(3, 32))
    small = sl.pruning.factorize(model, rank=3, filter_fn=lambda m, name: name == "0")
    x = torch.randn(16, 32)
    torch.testing.assert_close(small(x), model(x), atol=1e-4, rtol=1e-4)
    assert [tuple(m.weight.shape) for m in small[0]] == [(3, 32), (40, 3)]
    assert small[0][1].bias is not None and small[0][0].bias is None


def test_conv_keeps_stride_padding_and_matches_at_its_true_rank():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.copy_((torch.randn(16, 2) @ torch.randn(2, 72)).reshape(16, 8, 3, 3))
    model = nn.Sequential(conv)
    before = state_hash(model)
    small = sl.pruning.factorize(model, rank=2)
    x = torch.randn(2, 8, 9, 9)
    torch.testing.assert_close(small(x), model(x), atol=1e-4, rtol=1e-4)
    first, second = small[0]
    assert (first.stride, first.padding, first.out_channels, second.kernel_size) == ((2, 2), (1, 1), 2, (1, 1))
    assert state_hash(model) == before


def test_energy_picks_the_smallest_rank_that_keeps_it():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # squares 16, 4, 1, 1 of 22
    assert choose_rank(s, rank=None, energy=16 / 22) == 1
    assert choose_rank(s, rank=None, energy=0.9) == 2  # 20/22 = 0.909
    assert choose_rank(s, rank=None, energy=1.0) == 4 and choose_rank(s, rank=10, energy=None) == 4


def test_digits_mlp_gets_smaller_and_stays_accurate(digits_mlp):
    model, split = digits_mlp
    small = sl.pruning.factorize(model, energy=0.9)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(small) < 0.7 * params(model)
    x = torch.from_numpy(split.x_test)
    acc = float((small(x).argmax(1).numpy() == split.y_test).mean())
    assert acc > 0.9
    c = sl.compress(small, example_inputs=split.x_test[:1])
    assert c.size_bytes < sl.compress(model, example_inputs=split.x_test[:1]).size_bytes
    np.testing.assert_allclose(c.predict(split.x_test), small(x).detach().numpy(), atol=1e-4)


def test_layers_that_would_not_shrink_are_kept_and_bad_arguments_refused():
    model = nn.Sequential(nn.Linear(8, 8))
    assert isinstance(sl.pruning.factorize(model, rank=8)[0], nn.Linear)  # 8 * 16 >= 64: kept
    with pytest.raises(sl.errors.ConfigError, match="exactly one of rank= .* or energy="):
        sl.pruning.factorize(model)
    with pytest.raises(sl.errors.ConfigError, match="rank=0"):
        sl.pruning.factorize(model, rank=0)
    with pytest.raises(sl.errors.ConfigError, match="energy=1.5"):
        sl.pruning.factorize(model, energy=1.5)
