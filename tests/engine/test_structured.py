"""Structured pruning: channels really removed, and the result computes what the cut model computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import squeezelab as sl
from squeezelab.engine.structured import StructuredPruningError, l1_importance, taylor_importance
from tests.conftest import state_hash


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 10, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(40, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


@pytest.fixture
def conv_bn():
    torch.manual_seed(0)
    model = ConvBN().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
        model.bn1.weight.uniform_(0.5, 1.5)
    return model


def _severed(model, kept, consumer, factor=1):
    """The oracle: removing channels == the consumer ignoring them (its input weights zeroed)."""
    ref = ConvBN() if isinstance(model, ConvBN) else sl.DigitsCNN()
    ref.load_state_dict(model.state_dict())
    ref.eval()
    layer = ref.get_submodule(consumer)
    drop = sorted(set(range(layer.weight.shape[1] // factor)) - set(kept))
    with torch.no_grad():
        for c in drop:
            layer.weight[:, c * factor : (c + 1) * factor] = 0
    return ref


def test_digits_cnn_loses_half_its_channels_and_matches_the_severed_model(digits_cnn):
    model, split = digits_cnn
    before = state_hash(model)
    small = sl.prune_channels(model, sl.ChannelPruning(ratio=0.5), example_inputs=split.x_test[:1])
    assert state_hash(model) == before
    assert small.features[0].weight.shape == (8, 1, 3, 3) and small.features[2].weight.shape == (16, 8, 3, 3)
    assert small.classifier[1].weight.shape == (32, 256) and small.classifier[3].weight.shape == (10, 32)
    assert sum(p.numel() for p in small.parameters()) < 0.3 * sum(p.numel() for p in model.parameters())
    # One layer at a time against the oracle: prune only the last hidden Linear.
    only_fc = sl.prune_channels(model, sl.ChannelPruning(ratio=0.5), example_inputs=split.x_test[:1],
                                filter_fn=lambda m, name: name == "classifier.1")
    kept = torch.topk(l1_importance(model.classifier[1]), 32).indices.tolist()
    ref = _severed(model, kept, "classifier.3")
    x = torch.from_numpy(split.x_test)
    torch.testing.assert_close(only_fc(x), ref(x), atol=1e-5, rtol=1e-5)


def test_flatten_after_conv_removes_whole_spatial_blocks(digits_cnn):
    model, split = digits_cnn
    pruned = sl.prune_channels(model, sl.ChannelPruning(ratio=0.25), example_inputs=split.x_test[:1],
                               filter_fn=lambda m, name: name == "features.2")
    kept = torch.sort(torch.topk(l1_importance(model.features[2]), 24).indices).values.tolist()
    ref = _severed(model, kept, "classifier.1", factor=16)
    x = torch.from_numpy(split.x_test)
    assert pruned.classifier[1].in_features == 24 * 16
    torch.testing.assert_close(pruned(x), ref(x), atol=1e-5, rtol=1e-5)


def test_batchnorm_between_is_sliced_with_its_statistics(conv_bn):
    x = torch.randn(5, 3, 8, 8)
    pruned = sl.prune_channels(conv_bn, sl.ChannelPruning(ratio=0.5, importance="l2"), example_inputs=x[:1],
                               filter_fn=lambda m, name: name == "conv1")
    kept = torch.sort(torch.topk(conv_bn.conv1.weight.detach().reshape(12, -1).norm(dim=1), 6).indices).values
    assert pruned.bn1.num_features == 6
    torch.testing.assert_close(pruned.bn1.running_var, conv_bn.bn1.running_var[kept])
    torch.testing.assert_close(pruned(x), _severed(conv_bn, kept.tolist(), "conv2")(x), atol=1e-5, rtol=1e-5)


def test_exported_pruned_model_is_smaller_and_matches_torch(digits_cnn):
    model, split = digits_cnn
    recipe = sl.Recipe(pruning=sl.ChannelPruning(ratio=0.5))
    c = sl.compress(model, recipe, example_inputs=split.x_test[:1])
    base = sl.compress(model, example_inputs=split.x_test[:1])
    assert c.size_bytes < 0.35 * base.size_bytes
    np.testing.assert_allclose(c.predict(split.x_test), c.model(torch.from_numpy(split.x_test)).detach().numpy(), atol=1e-4)
    assert sl.Recipe.from_dict(recipe.to_dict()) == recipe and recipe.label == "channels50%-l1"


def test_importance_is_a_replaceable_callable(digits_cnn):
    model, split = digits_cnn
    weakest = sl.prune_channels(model, sl.ChannelPruning(ratio=0.5), example_inputs=split.x_test[:1],
                                importance=lambda m: -l1_importance(m))
    strongest = sl.prune_channels(model, sl.ChannelPruning(ratio=0.5), example_inputs=split.x_test[:1])
    assert not torch.equal(weakest.features[0].weight, strongest.features[0].weight)
    x = torch.from_numpy(split.x_test)
    acc = lambda m: float((m(x).argmax(1).numpy() == split.y_test).mean())  # noqa: E731
    taylor = sl.prune_channels(model, sl.ChannelPruning(ratio=0.5), example_inputs=split.x_test[:1],
                               importance=taylor_importance(model, (split.x_train[:256], split.y_train[:256])))
    assert acc(strongest) > acc(weakest) and acc(taylor) > acc(weakest)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x)
        x = x + torch.relu(self.body(x))
        return self.head(x.mean((2, 3)))


def test_residual_coupling_is_refused_naming_the_layer():
    with pytest.raises(StructuredPruningError, match="layer 'stem'.*used by 2 ops.*filter_fn"):
        sl.prune_channels(Residual(), sl.ChannelPruning(ratio=0.5), example_inputs=torch.randn(1, 3, 8, 8))
    with pytest.raises(StructuredPruningError, match="layer 'body'.*an addition"):
        sl.prune_channels(Residual(), sl.ChannelPruning(ratio=0.5), example_inputs=torch.randn(1, 3, 8, 8),
                          filter_fn=lambda m, name: name == "body")


def test_grouped_convolution_and_untraceable_models_are_refused():
    grouped = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=4), nn.Flatten(), nn.LazyLinear(2))
    grouped(torch.randn(1, 3, 8, 8))
    with pytest.raises(StructuredPruningError, match="grouped convolution '1' \\(groups=4\\)"):
        sl.prune_channels(grouped, sl.ChannelPruning(ratio=0.5), example_inputs=torch.randn(1, 3, 8, 8))

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                x = -x
            return self.b(self.a(x))

    with pytest.raises(StructuredPruningError, match="torch.fx cannot trace Branchy"):
        sl.prune_channels(Branchy(), sl.ChannelPruning(ratio=0.5), example_inputs=torch.randn(1, 4))


def test_bad_ratio_and_nothing_to_prune():
    with pytest.raises(sl.ConfigError, match="ratio=1.0 must be a number in \\[0, 1\\)"):
        sl.ChannelPruning(ratio=1.0)
    with pytest.raises(sl.ConfigError, match="importance='taylor'"):
        sl.ChannelPruning(ratio=0.5, importance="taylor")
    with pytest.raises(StructuredPruningError, match="no layer can have channels removed"):
        sl.prune_channels(nn.Linear(4, 2), sl.ChannelPruning(ratio=0.5), example_inputs=torch.randn(1, 4))


def test_shape_reads_are_not_branches_and_ratio_rounds():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 10, 3, padding=1)
            self.fc = nn.Linear(10 * 4 * 4, 2)

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4)
            return self.fc(x.view(x.size(0), -1))

    pruned = sl.prune_channels(Net(), sl.ChannelPruning(ratio=0.29), example_inputs=torch.randn(1, 3, 8, 8))
    assert pruned.conv.out_channels == 7 and pruned.fc.in_features == 7 * 16  # round(2.9) = 3 removed


def test_shared_layers_grouped_producers_and_flattened_linears_are_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.h = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.h(self.b(torch.relu(self.b(self.a(x)))))

    with pytest.raises(StructuredPruningError, match="'b' is called 2 times"):
        sl.prune_channels(Twice(), sl.ChannelPruning(ratio=0.5), example_inputs=torch.randn(1, 4))
    grouped = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(), nn.Conv2d(8, 4, 3))
    with pytest.raises(StructuredPruningError, match="'0' is a grouped convolution"):
        sl.prune_channels(grouped, sl.ChannelPruning(ratio=0.5), example_inputs=torch.randn(1, 4, 8, 8))
    tokens = nn.Sequential(nn.Linear(5, 5), nn.Flatten(), nn.Linear(15, 2))
    with pytest.raises(StructuredPruningError, match="a Linear output that is flattened"):
        sl.prune_channels(tokens, sl.ChannelPruning(ratio=0.4), example_inputs=torch.randn(1, 3, 5))


def test_taylor_works_on_a_masked_model_and_bad_inputs_are_explained(digits_cnn):
    model, split = digits_cnn
    masked = sl.prune(model, sl.MagnitudePruning(sparsity=0.5))
    scores = taylor_importance(masked, (split.x_train[:64], split.y_train[:64]))
    assert scores(masked.features[0]).shape == (16,)
    with pytest.raises(sl.ExampleInputError, match="\\(1, 3, 8, 8\\)"):
        sl.prune_channels(model, sl.ChannelPruning(ratio=0.5), example_inputs=torch.randn(1, 3, 8, 8))
