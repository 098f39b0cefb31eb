"""A recipe that would quantize or prune nothing is refused; what a result quantized is recorded.

Before: a model with no eligible layer, or settings that excluded every layer, came back from
compress() unchanged but labelled compressed; Int8Dynamic() on a CNN quantized only the last Linear.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import squeezelab as sl
from squeezelab.engine.core.recipe import Recipe


class Tokens(nn.Module):
    """Only an Embedding and a LayerNorm: nothing the default quantizers and pruners touch."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, ids):
        return self.norm(self.embed(ids)).mean(dim=1)  # (B, 8)


class ConvHeavy(nn.Module):
    """A CNN whose only Linear is a small head: 2% of the weight elements."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.features(x))


def _ids():
    return torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(0))


SIM4 = dict(quantization=sl.LinearQuantization(bits=4), runtime=sl.Simulated())


@pytest.mark.parametrize(
    ("recipe", "step"),
    [
        (Recipe(**SIM4), "quantization"),
        (Recipe(pruning=sl.MagnitudePruning(sparsity=0.5)), "pruning"),
        (Recipe(pruning=sl.NMPruning(n=2, m=4), runtime=sl.Simulated()), "pruning"),
        (Recipe(pruning=sl.ChannelPruning(ratio=0.5)), "pruning"),
    ],
    ids=["linear4", "magnitude", "2:4", "channels"],
)
def test_a_model_without_eligible_layers_is_refused_before_export(recipe, step, monkeypatch):
    import squeezelab.engine.pipeline.compress as compressed_module

    def never(*args, **kwargs):
        raise AssertionError("export started before the recipe's reach was checked")

    monkeypatch.setattr(compressed_module, "export_onnx", never)
    torch.manual_seed(0)
    with pytest.raises(sl.errors.ConfigError) as info:
        sl.compress(Tokens(), recipe, example_inputs=_ids())
    message = str(info.value)
    assert f"the {step} step" in message and "would change nothing" in message
    assert "Tokens has none (its layers with parameters: Embedding, LayerNorm)" in message and "filter_fn=" in message
    assert ("Conv and Linear" if "channels" in recipe.label else "Linear and Conv1d/2d/3d") in message


def test_a_filter_that_accepts_the_embedding_quantizes_it():
    torch.manual_seed(0)
    model = Tokens()
    c = sl.compress(model, Recipe(**SIM4), example_inputs=_ids(), filter_fn=lambda m, name: isinstance(m, nn.Embedding))
    assert c.quantized_weight_fraction == 1.0  # the table is the only weight of rank >= 2
    assert len(torch.unique(c.model.embed.weight[0])) <= 15  # 4-bit symmetric codes per row


def test_a_filter_that_excludes_every_layer_is_refused(digits_mlp):
    model, split = digits_mlp
    with pytest.raises(sl.errors.ConfigError, match=r"quantization step linear4.*would change nothing.*filter_fn accepts none of DigitsMLP's layers \(Linear\)"):
        sl.compress(model, Recipe(**SIM4), example_inputs=split.x_test[:1], filter_fn=lambda m, name: False)


def test_per_layer_settings_that_exclude_every_layer_are_refused(digits_mlp):
    model, split = digits_mlp
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    all_float = tuple(sl.LayerSetting(name=n, bits=32) for n in names)
    with pytest.raises(sl.errors.ConfigError, match=r"keeps every quantizable layer .* float32 with bits=32.*Recipe\(\)"):
        sl.compress(model, Recipe(layers=all_float, **SIM4), example_inputs=split.x_test[:1])
    all_dense = tuple(sl.LayerSetting(name=n, sparsity=0.0) for n in names)
    with pytest.raises(sl.errors.ConfigError, match=r"sets sparsity 0 on every prunable layer"):
        sl.compress(model, Recipe(pruning=sl.MagnitudePruning(sparsity=0.5), layers=all_dense), example_inputs=split.x_test[:1])
    # Pruning amount 0 asks for no change (a search starts there): allowed, and it prunes nothing.
    start = sl.compress(model, Recipe(pruning=sl.MagnitudePruning(sparsity=0.0), layers=all_dense[:1], **SIM4), example_inputs=split.x_test[:1])
    assert start.quantized_weight_fraction == 1.0


def test_int8_dynamic_on_a_cnn_says_what_would_quantize_it_before_quantizing(monkeypatch):
    import squeezelab.engine.runtime.ort_quantize as ort_quant

    torch.manual_seed(0)
    model, x = ConvHeavy().eval(), torch.randn(1, 3, 12, 12)
    real_convert = ort_quant.convert_onnx

    def never(*args, **kwargs):
        raise AssertionError("quantization started before the recipe's reach was checked")

    monkeypatch.setattr(ort_quant, "convert_onnx", never)
    with pytest.raises(sl.errors.ConfigError) as info:
        sl.compress(model, Recipe(runtime=sl.Int8Dynamic()), example_inputs=x)
    message = str(info.value)
    for words in (
        "would quantize only 3% of the weight elements",
        "Conv 97%, Gemm 3%",
        "runtime=Int8Static()",
        "Int8Dynamic(op_types=('MatMul', 'Gemm', 'Gather', 'Conv')) (dynamic ConvInteger",
        "pass op_types=('MatMul', 'Gemm', 'Gather') explicitly",
    ):
        assert words in message
    # Saying so explicitly ships the Linear-only int8 model, and the result records how little that is.
    monkeypatch.setattr(ort_quant, "convert_onnx", real_convert)
    explicit = Recipe(runtime=sl.Int8Dynamic(op_types=("MatMul", "Gemm")))
    c = sl.compress(model, explicit, example_inputs=x)
    weights = [m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert c.quantized_weight_fraction == pytest.approx(weights[-1] / sum(weights))
    assert c.metadata()["quantized_weight_fraction"] == c.quantized_weight_fraction


def test_explicit_default_op_types_round_trip_and_read_the_same():
    default, explicit = sl.Int8Dynamic(), sl.Int8Dynamic(op_types=["MatMul", "Gemm", "Gather"])
    assert default.op_types is None and explicit.op_types == ("MatMul", "Gemm", "Gather")
    assert default.quantized_op_types == explicit.quantized_op_types == ("MatMul", "Gemm", "Gather")
    for runtime in (default, explicit):
        r = Recipe(runtime=runtime)
        assert Recipe.from_dict(r.to_dict()) == r and Recipe.from_toml(r.to_toml()) == r
        assert r.label == "int8-dynamic"  # the same model either way
    assert Recipe(runtime=default).to_dict() != Recipe(runtime=explicit).to_dict()
    with pytest.raises(sl.errors.ConfigError, match=r"op_types=\(\) must be None"):
        sl.Int8Dynamic(op_types=())


@pytest.fixture(scope="module")
def cnn_fractions(digits_cnn):
    model, split = digits_cnn
    weights = {n: m.weight.numel() for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    total = sum(weights.values())
    cases = {
        "fp32": (Recipe(), 0.0),
        "fp16": (Recipe(quantization=sl.Float16()), 1.0),
        "int8-dynamic": (Recipe(runtime=sl.Int8Dynamic()), (weights["classifier.1"] + weights["classifier.3"]) / total),
        "int8-static": (Recipe(runtime=sl.Int8Static()), 1.0),
        "linear4-first-layer-float": (
            Recipe(layers=(sl.LayerSetting(name="features.0", bits=32),), **SIM4),
            1 - weights["features.0"] / total,
        ),
        "float16-simulated": (Recipe(quantization=sl.Float16(), runtime=sl.Simulated()), 1.0),
    }
    out = {}
    for name, (recipe, expected) in cases.items():
        c = sl.compress(model, recipe, example_inputs=split.x_test[:1], calibration_data=split.x_train[:64])
        out[name] = (c, expected)
    return out


@pytest.mark.parametrize("name", ["fp32", "fp16", "int8-dynamic", "int8-static", "linear4-first-layer-float", "float16-simulated"])
def test_every_result_records_its_quantized_weight_fraction(cnn_fractions, digits_cnn, name):
    _, split = digits_cnn
    c, expected = cnn_fractions[name]
    assert c.quantized_weight_fraction == pytest.approx(expected)
    assert c.metadata()["quantized_weight_fraction"] == pytest.approx(expected)
    m = sl.measure(c, split.test, repeats=1)
    assert m.quantized_weight_fraction == pytest.approx(expected)
    assert m.to_dict()["quantized_weight_fraction"] == pytest.approx(expected)


def test_sweep_rows_carry_the_quantized_weight_fraction(digits_cnn):
    model, split = digits_cnn
    s = sl.sweep(model, split.test, bits=[32, 4], sparsity=[0.0], cache=False, progress=False, latency_repeats=0)
    by_bits = dict(zip(s.table["bits"], s.table["quantized_weight_fraction"]))
    assert by_bits == {32: 0.0, 4: 1.0}
