"""Unstructured and N:M pruning: exact zero counts, masks that survive training, baking, recipes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn.utils import parametrize

import squeezelab as sl
from squeezelab.engine.pruning.prune import weight_sparsity
from tests.conftest import state_hash


def _weights(model):
    return [m.weight.detach() for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.97])
def test_layer_scope_zeros_exactly_round_sparsity_times_n_in_every_layer(digits_cnn, sparsity):
    model, _ = digits_cnn
    pruned = sl.prune(model, sl.MagnitudePruning(sparsity=sparsity))
    for w in _weights(pruned):
        assert int((w == 0).sum()) == round(sparsity * w.numel())


def test_layer_scope_removes_the_smallest_magnitudes(digits_mlp):
    model, _ = digits_mlp
    pruned = sl.prune(model, sl.MagnitudePruning(sparsity=0.6))
    for original, w in zip(_weights(model), _weights(pruned)):
        kept, dropped = original.detach()[w != 0].abs(), original.detach()[w == 0].abs()
        assert float(dropped.max()) <= float(kept.min())


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_global_scope_is_exact_overall_and_uneven_per_layer(digits_cnn, sparsity):
    model, _ = digits_cnn
    pruned = sl.prune(model, sl.MagnitudePruning(sparsity=sparsity, scope="global"))
    total = sum(w.numel() for w in _weights(pruned))
    zeros = sum(int((w == 0).sum()) for w in _weights(pruned))
    assert zeros == round(sparsity * total)
    per_layer = [float((w == 0).float().mean()) for w in _weights(pruned)]
    assert max(per_layer) - min(per_layer) > 0.05
    threshold = max(float(o[w == 0].abs().max()) for o, w in zip(_weights(model), _weights(pruned)) if (w == 0).any())
    assert all(float(o[w != 0].abs().min()) >= threshold for o, w in zip(_weights(model), _weights(pruned)))


def test_prune_copies_prune_underscore_mutates_and_masks_survive_training(digits_mlp):
    model, split = digits_mlp
    before = state_hash(model)
    net = sl.models.DigitsMLP()
    net.load_state_dict(model.state_dict())
    assert sl.prune_(net, sl.MagnitudePruning(sparsity=0.8)) is None
    assert state_hash(model) == before
    assert parametrize.is_parametrized(net.net[1], "weight")
    zeros_before = [w == 0 for w in _weights(net)]
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x, y = torch.from_numpy(split.x_train[:128]), torch.from_numpy(split.y_train[:128])
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for mask, w in zip(zeros_before, _weights(net)):
        assert (w[mask] == 0).all()
    sl.pruning.bake_masks_(net)
    assert not parametrize.is_parametrized(net.net[1])
    assert set(net.state_dict()) == set(model.state_dict())
    assert weight_sparsity(net) == pytest.approx(0.8, abs=1e-3)


def _groups(w, m):
    """Groups of m consecutive input channels at each (output, kernel position)."""
    w = w.movedim(1, -1) if w.ndim > 2 else w
    return w.reshape(*w.shape[:-1], -1, m)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8), (1, 2)])
def test_n_m_keeps_the_n_largest_of_every_m(digits_mlp, n, m):
    model, _ = digits_mlp
    before = state_hash(model)
    pruned = sl.prune(model, sl.NMPruning(n=n, m=m))
    assert state_hash(model) == before  # prune (no underscore) leaves its argument alone
    for original, w in zip(_weights(model), _weights(pruned)):
        groups = _groups(w, m)
        assert int((groups != 0).sum(-1).max()) <= n
        assert int((groups == 0).sum()) == groups.numel() // m * (m - n)
        og = _groups(original.abs(), m)
        kept_min = torch.where(groups != 0, og, torch.inf).min(-1).values
        dropped_max = torch.where(groups == 0, og, -torch.inf).max(-1).values
        assert (dropped_max <= kept_min).all()


def test_n_m_on_convolutions_groups_input_channels_and_skips_indivisible_layers(digits_cnn):
    model, _ = digits_cnn
    pruned = sl.prune(model, sl.NMPruning(n=2, m=4))
    first = pruned.features[0].weight  # 1 input channel: not a multiple of 4
    assert int((first == 0).sum()) == 0 and not parametrize.is_parametrized(pruned.features[0])
    second = pruned.features[2].weight.detach()  # (32, 16, 3, 3): 2 of every 4 input channels per position
    nonzero = (second != 0).reshape(32, 4, 4, 3, 3).sum(2)
    assert int(nonzero.max()) == 2 and int(nonzero.min()) == 2


def test_repruning_keeps_other_parametrizations(digits_mlp):
    model, split = digits_mlp
    net = sl.models.DigitsMLP()
    net.load_state_dict(model.state_dict())
    torch.nn.utils.parametrizations.weight_norm(net.net[3])
    x = torch.from_numpy(split.x_test)
    sl.prune_(net, sl.MagnitudePruning(sparsity=0.5))
    sl.prune_(net, sl.MagnitudePruning(sparsity=0.7))
    assert weight_sparsity(net) == pytest.approx(0.7, abs=1e-3)
    assert len(net.net[3].parametrizations.weight) == 2  # weight_norm and one mask
    out = net(x)
    sl.pruning.bake_masks_(net)
    torch.testing.assert_close(net(x), out)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: sl.MagnitudePruning(sparsity=1.0), "sparsity=1.0 must be a number in [0, 1)"),
        (lambda: sl.MagnitudePruning(sparsity=-0.1), "sparsity=-0.1"),
        (lambda: sl.MagnitudePruning(sparsity=0.5, scope="model"), "scope='model'"),
        (lambda: sl.NMPruning(n=5, m=4), "n=5 > m=4"),
        (lambda: sl.NMPruning(n=0, m=4), "n=0"),
    ],
)
def test_bad_pruning_configs(make, words):
    with pytest.raises(sl.errors.ConfigError) as info:
        make()
    assert words in str(info.value)


def test_nothing_to_prune_is_explained():
    with pytest.raises(sl.errors.ConfigError, match="no layer to prune"):
        sl.prune(torch.nn.Sequential(torch.nn.ReLU()), sl.MagnitudePruning(sparsity=0.5))
    with pytest.raises(sl.errors.ConfigError, match="multiple of m=4; input counts: \\[1\\]"):
        sl.prune(torch.nn.Conv2d(1, 4, 3), sl.NMPruning())


@pytest.mark.parametrize(
    "runtime", [sl.Onnx(), sl.Int8Static(), sl.Simulated()], ids=["onnx", "int8-static", "simulated"]
)
def test_pruned_recipes_export_what_the_pruned_model_computes(digits_mlp, runtime):
    model, split = digits_mlp
    recipe = sl.Recipe(pruning=sl.MagnitudePruning(sparsity=0.7), runtime=runtime)
    c = sl.compress(model, recipe, example_inputs=split.x_test[:1], calibration_data=split.x_train[:256])
    reference = sl.prune(model, sl.MagnitudePruning(sparsity=0.7))(torch.from_numpy(split.x_test)).detach().numpy()
    tolerance = 0.15 if isinstance(runtime, sl.Int8Static) else 1e-4
    np.testing.assert_allclose(c.predict(split.x_test), reference, atol=tolerance * max(1.0, np.abs(reference).max()))
    m = sl.measure(c, split.test, repeats=2)
    assert m.sparsity == pytest.approx(0.7, abs=1e-3) and c.sparsity == m.sparsity
    assert sl.Recipe.from_dict(recipe.to_dict()) == recipe and recipe.label.startswith("magnitude70%-layer")


def test_copies_of_a_pruned_model_are_independent(digits_mlp):
    """deepcopy shares parametrized classes; baking a copy must not break the caller's model."""
    model, split = digits_mlp
    pruned = sl.prune(model, sl.MagnitudePruning(sparsity=0.5))
    x = torch.from_numpy(split.x_test)
    expected = pruned(x).detach()
    copy_ = sl.prune(pruned, sl.MagnitudePruning(sparsity=0.7))  # re-prunes a copy: removes/adds parametrizations
    sl.pruning.bake_masks_(copy_)
    c = sl.compress(pruned, sl.Recipe(pruning=sl.MagnitudePruning(sparsity=0.8)), example_inputs=split.x_test[:1])
    tuned = sl.finetune(pruned, split.train, epochs=1)
    sl.pruning.bake_masks_(tuned)
    small = sl.prune(pruned, sl.ChannelPruning(ratio=0.5), example_inputs=split.x_test[:1])
    user_copy = copy.deepcopy(pruned)  # a plain deepcopy, made by the user, shares the class
    sl.pruning.bake_masks_(user_copy)
    torch.testing.assert_close(pruned(x).detach(), expected)  # the caller's model still works, unchanged
    assert parametrize.is_parametrized(pruned.net[1], "weight")
    np.testing.assert_allclose(sl.compress(pruned, example_inputs=split.x_test[:1]).predict(split.x_test), expected.numpy(), atol=1e-4)
    assert weight_sparsity(c.model) == pytest.approx(0.8, abs=1e-3) and small.net[1].out_features == 64
