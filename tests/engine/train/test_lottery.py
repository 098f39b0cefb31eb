"""Lottery tickets: sparsity per round, rewinding to the snapshot, the input model untouched."""

from __future__ import annotations

import pytest
import torch

import squeezelab as sl
from squeezelab.engine.train.lottery import rewind_, ticket_sparsity
from squeezelab.engine.pruning.prune import weight_sparsity
from tests.conftest import state_hash


def _fresh():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return sl.models.DigitsMLP()


def test_rounds_reach_the_compound_sparsity_and_leave_the_model_alone(digits_mlp):
    _, split = digits_mlp
    net = _fresh()
    before = state_hash(net)
    ticket = sl.pruning.find_lottery_ticket(net, split.train, rounds=3, fraction=0.5, epochs=6, rewind_step=5,
                                    optimizer=lambda p: torch.optim.Adam(p, lr=2e-3))
    assert state_hash(net) == before
    assert ticket.sparsities == pytest.approx([0.5, 0.75, 0.875], abs=1e-3)
    assert weight_sparsity(ticket.model) == pytest.approx(0.875, abs=1e-3)
    acc = float((ticket.model(torch.from_numpy(split.x_test)).argmax(1).numpy() == split.y_test).mean())
    assert acc > 0.85


def test_rewind_restores_surviving_weights_to_the_snapshot(digits_mlp):
    model, _ = digits_mlp  # trained weights
    snapshot = {k: v.clone() for k, v in _fresh().state_dict().items()}
    pruned = sl.prune(model, sl.MagnitudePruning(sparsity=0.6, scope="global"))
    rewind_(pruned, snapshot)
    for i in (1, 3, 5):
        layer = pruned.net[i]
        mask = layer.parametrizations.weight[0].mask
        torch.testing.assert_close(layer.weight, snapshot[f"net.{i}.weight"] * mask)
        torch.testing.assert_close(layer.bias, snapshot[f"net.{i}.bias"])
    assert weight_sparsity(pruned) == pytest.approx(0.6, abs=1e-3)


def test_ticket_sparsity_formula_and_bad_arguments(digits_mlp):
    _, split = digits_mlp
    assert ticket_sparsity(0.2, 3) == pytest.approx(1 - 0.8**3)
    with pytest.raises(sl.errors.ConfigError, match="fraction=1.0"):
        sl.pruning.find_lottery_ticket(_fresh(), split.train, fraction=1.0)
    with pytest.raises(sl.errors.ConfigError, match="rewind_step=10000 was never reached"):
        sl.pruning.find_lottery_ticket(_fresh(), split.train, rounds=1, rewind_step=10000)
    with pytest.raises(sl.errors.ConfigError, match="already carries pruning masks"):
        sl.pruning.find_lottery_ticket(sl.prune(_fresh(), sl.MagnitudePruning(sparsity=0.5)), split.train)
