"""Smoothing (SmoothQuant): exact in fp32, merged and folded in the graph, less int8 error than without."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import squeezelab as sl
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.quantization.smoothing import (
    Int8Arithmetic,
    SmoothedLinear,
    SmoothingGroup,
    choose_alpha,
    find_groups,
    smooth_,
    smoothing_scales,
)
from squeezelab.engine.runtime.providers import make_session
from squeezelab.engine.runtime.scale_folding import tidy_scales
from squeezelab.engine.zoo import tiny_bert, tiny_bert_inputs
from tests.conftest import state_hash


def _bert_and_inputs(batch: int = 16, seq: int = 12):
    return tiny_bert(seed=0), tiny_bert_inputs(batch=batch, seq=seq, seed=1)


def _hidden(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).last_hidden_state


def test_smoothing_a_post_ln_bert_leaves_its_fp32_output_unchanged():
    model, inputs = _bert_and_inputs()
    smoothed = copy.deepcopy(model)
    groups = smooth_(smoothed, Inputs.of(inputs), alpha=0.5)
    assert torch.allclose(_hidden(smoothed, inputs), _hidden(model, inputs), atol=1e-5, rtol=0)
    layer = smoothed.encoder.layer[0]
    # query, key and value read one tensor: one group, each a SmoothedLinear with the same input scale
    qkv = next(g for g in groups if "encoder.layer.0.attention.self.query" in g.layers)
    assert len(qkv.layers) == 3 and qkv.fold_into is None
    assert all(isinstance(m, SmoothedLinear) for m in (layer.attention.self.query, layer.attention.self.key))
    assert torch.equal(layer.attention.self.query.inv_scale, layer.attention.self.key.inv_scale)
    # the attention output projection's scale went into the value projection: no new op there
    out = next(g for g in groups if g.layers == ("encoder.layer.0.attention.output.dense",))
    assert out.fold_into == "encoder.layer.0.attention.self.value"
    assert type(layer.attention.output.dense) is nn.Linear
    assert not torch.equal(layer.attention.output.dense.weight, model.encoder.layer[0].attention.output.dense.weight)
    # the post-LN LayerNorms also feed residuals: never rescaled
    for a, b in zip(smoothed.modules(), model.modules()):
        if isinstance(a, nn.LayerNorm):
            assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_the_export_merges_an_attentions_three_scales_into_one_and_computes_the_same():
    model, inputs = _bert_and_inputs()
    smoothed = copy.deepcopy(model)
    smooth_(smoothed, Inputs.of(inputs), alpha=0.5)
    example = {k: v[:1] for k, v in inputs.items()}
    exported = sl.compress(smoothed, example_inputs=example, output="last_hidden_state").onnx_bytes
    tidied, counts = tidy_scales(exported)
    assert counts["scale_muls_merged"] == 2 * 2  # key and value's copies, in each of the 2 layers
    assert counts["scale_muls_folded_into_layernorm"] == 0  # post-LN: the LayerNorm output is also the residual
    session = make_session(tidied)
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    np.testing.assert_allclose(got, _hidden(model, inputs).numpy(), atol=1e-4, rtol=0)


class _PreLN(nn.Module):
    """LayerNorm -> (two Linear layers), the LayerNorm's output read by nothing else: pre-LN."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.up = nn.Linear(16, 32)
        self.gate = nn.Linear(16, 32)
        self.down = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return self.down(torch.relu(self.up(h)) * self.gate(h))


def test_a_pre_ln_scale_is_folded_into_the_layernorm_in_the_graph():
    torch.manual_seed(0)
    model = _PreLN().eval()
    with torch.no_grad():
        model.norm.weight[:3] = 20.0  # three outlier channels
    x = torch.randn(64, 16)
    smoothed = copy.deepcopy(model)
    smooth_(smoothed, Inputs.of(x), alpha=0.5)
    exported = sl.compress(smoothed, example_inputs=x[:1]).onnx_bytes
    tidied, counts = tidy_scales(exported)
    assert counts == {"scale_muls_merged": 1, "scale_muls_folded_into_layernorm": 1}
    ops = [n.op_type for n in onnx.load_from_string(tidied).graph.node]
    assert ops.count("Mul") == 2  # relu(up) * gate and the down projection's own scale remain
    session = make_session(tidied)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-5, rtol=1e-5)


def _outlier_group(seed: int = 0) -> tuple[SmoothingGroup, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 32, generator=gen)
    x[:, :2] *= 40.0  # two outlier channels stretch the per-tensor range
    weights = [torch.randn(24, 32, generator=gen) * 0.1]
    group = SmoothingGroup(layers=("fc",), fold_into=None, abs_max=x.abs().amax(0), low=x.amin(0), high=x.amax(0), rows=x)
    return group, weights


def test_chosen_alpha_lowers_the_simulated_int8_error_with_a_margin():
    group, weights = _outlier_group()
    alpha = choose_alpha(group, weights)
    assert alpha > 0
    assert group.errors[alpha] <= 0.3 * group.errors[0.0]  # fake-quantized output error, vs no smoothing
    scale = smoothing_scales(group, weights, alpha)
    assert scale[:2].min() > scale[2:].max()  # the outlier channels are divided the most


class _Outliers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(32)
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return self.fc2(torch.relu(self.fc1(h))) + h[:, :8]  # the LayerNorm output is a residual too


def _outlier_model() -> nn.Module:
    torch.manual_seed(0)
    model = _Outliers().eval()
    with torch.no_grad():
        model.norm.weight[:2] = 30.0
    return model


def _error(model: nn.Module, recipe: sl.Recipe, x: torch.Tensor) -> float:
    c = sl.compress(model, recipe, example_inputs=x[:1], calibration_data=x[:128])
    reference = model(x[128:]).detach().numpy()
    return float(np.mean((c.predict(x[128:].numpy()) - reference) ** 2) / np.mean(reference**2))


def test_smoothing_lowers_dynamic_int8_output_error_in_onnx_runtime():
    model, x = _outlier_model(), torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
    before = state_hash(model)
    runtime = sl.Int8Dynamic(fusion=False)
    plain = _error(model, sl.Recipe(runtime=runtime, transforms=()), x)
    smoothed = _error(model, sl.Recipe(runtime=runtime, transforms=(sl.Smoothing(alpha=0.5),)), x)
    assert smoothed <= 0.5 * plain  # on either CPU kind: the outliers cost plain int8 most of its resolution
    assert state_hash(model) == before  # compress smooths its own copy


def _outlier_bert() -> nn.Module:
    model = tiny_bert(seed=0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight[:3] = 25.0  # BERT's few outlier channels, made plain
    return model


def test_smoothing_lowers_static_int8_output_error_on_a_transformer():
    model, inputs = _outlier_bert(), tiny_bert_inputs(batch=48, seq=12, seed=2)
    calibration = {k: v[:32] for k, v in inputs.items()}
    test = {k: v[32:] for k, v in inputs.items()}
    reference = _hidden(model, test).numpy()
    errors = {}
    for name, steps in (("plain", ()), ("smoothed", (sl.Smoothing(alpha=0.5),))):
        c = sl.compress(model, sl.Recipe(runtime=sl.Int8Static(), transforms=steps), example_inputs=calibration,
                        calibration_data=calibration, output="last_hidden_state")
        got = c.predict({k: v.numpy() for k, v in test.items()})
        errors[name] = float(np.mean((got - reference) ** 2) / np.mean(reference**2))
    assert errors["smoothed"] <= 0.5 * errors["plain"]


def test_a_module_that_reads_its_linear_weights_directly_is_left_unsmoothed():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0).eval()  # its fast path skips Linear.forward
    x = torch.randn(8, 6, 32)
    smoothed = copy.deepcopy(layer)
    groups = smooth_(smoothed, Inputs.of(x), alpha=0.5)
    assert groups and all(not g.exact and g.alpha == 0.0 for g in groups)
    with torch.no_grad():
        assert torch.equal(smoothed(x), layer(x))


def test_groups_are_layers_that_read_one_tensor():
    model, inputs = _bert_and_inputs(batch=4, seq=8)
    groups = find_groups(model, Inputs.of(inputs))
    layers = sorted(len(g.layers) for g in groups)
    # per layer: Q/K/V, attention output, intermediate, output; plus the pooler
    assert layers.count(3) == 2 and len(groups) == 2 * 4 + 1
    assert all(g.rows.shape[1] == g.abs_max.shape[0] for g in groups)


def test_compress_records_the_smoothing_it_chose_for_a_transformer_and_why():
    model, inputs = _bert_and_inputs()
    example = {k: v[:1] for k, v in inputs.items()}
    c = sl.compress(model, sl.Recipe(runtime=sl.Int8Static()), example_inputs=example, calibration_data=inputs,
                    output="last_hidden_state")
    record = c.details["transforms"]
    assert record["applied"][0]["step"] == "smooth-auto" and "transformer" in record["why"]
    assert record["applied"][0]["groups"] == 9
    off = sl.compress(model, sl.Recipe(runtime=sl.Int8Static(), transforms=()), example_inputs=example,
                      calibration_data=inputs, output="last_hidden_state")
    assert off.details["transforms"] == {"applied": [], "why": "set in the recipe"}


def test_smoothing_without_calibration_data_is_refused_before_the_export(monkeypatch):
    model, inputs = _bert_and_inputs(batch=2, seq=8)
    import squeezelab.engine.pipeline.compress as compress_module

    monkeypatch.setattr(compress_module, "export_onnx", lambda *a, **k: pytest.fail("exported"))
    with pytest.raises(sl.errors.CalibrationError, match="calibration_data="):
        sl.compress(model, sl.Recipe(runtime=sl.Int8Dynamic(), transforms=(sl.Smoothing(),)), example_inputs=inputs,
                    output="last_hidden_state")


def test_dynamic_int8_smooths_by_default_only_with_calibration_data():
    model, inputs = _bert_and_inputs(batch=4, seq=8)
    recipe = sl.Recipe(runtime=sl.Int8Dynamic(fusion=False))
    plain = sl.compress(model, recipe, example_inputs=inputs, output="last_hidden_state")
    assert plain.details["transforms"]["applied"] == [] and "calibration_data=" in plain.details["transforms"]["why"]
    smoothed = sl.compress(model, recipe, example_inputs=inputs, calibration_data=inputs, output="last_hidden_state")
    assert smoothed.details["transforms"]["applied"][0]["step"] == "smooth-auto"


def test_an_onnx_file_takes_no_transforms(tmp_path):
    model, inputs = _bert_and_inputs(batch=2, seq=8)
    path = sl.compress(model, example_inputs=inputs, output="last_hidden_state").save(tmp_path / "bert.onnx")
    with pytest.raises(sl.errors.ConfigError, match=r"transforms=\(\)"):
        sl.compress(path, sl.Recipe(runtime=sl.Int8Dynamic(), transforms=(sl.Smoothing(),)))


def test_recipe_transforms_are_checked_ordered_and_round_trip():
    r = sl.Recipe(runtime=sl.Int8Static(), transforms=(sl.BiasCorrection(), sl.Smoothing(alpha=0.5)))
    assert r.transforms == (sl.Smoothing(alpha=0.5), sl.BiasCorrection())  # the order they run in
    assert r.label.startswith("smooth0.5 + biascorr + int8-static")
    assert sl.Recipe.from_dict(r.to_dict()) == r and sl.Recipe.from_toml(r.to_toml()) == r
    assert sl.Recipe.from_toml(sl.Recipe(runtime=sl.Int8Static(), transforms=()).to_toml()).transforms == ()
    with pytest.raises(sl.errors.ConfigError, match="runtime=Int8Dynamic"):
        sl.Recipe(transforms=(sl.Smoothing(),))
    with pytest.raises(sl.errors.ConfigError, match="twice"):
        sl.Recipe(runtime=sl.Int8Static(), transforms=(sl.Smoothing(), sl.Smoothing(alpha=0.5)))
    with pytest.raises(sl.errors.ConfigError, match="alpha=1.5"):
        sl.Smoothing(alpha=1.5)
    assert sl.Smoothing(alpha=np.float32(0.5)).alpha == 0.5

    from squeezelab.engine.core.transforms import Transform

    class Mine(Transform):
        pass

    with pytest.raises(sl.errors.ConfigError, match=r"\['Mine'\] are not squeezelab's fidelity steps"):
        sl.Recipe(runtime=sl.Int8Static(), transforms=(Mine(),))


def test_the_arithmetic_alpha_is_judged_under_follows_the_runtime():
    group, weights = _outlier_group()
    per_channel = choose_alpha(group, weights, arithmetic=Int8Arithmetic())
    errors_channel = dict(group.errors)
    choose_alpha(group, weights, arithmetic=Int8Arithmetic(per_channel=False, weight_max=64))
    assert group.errors != errors_channel and per_channel in group.errors
    assert group.errors[0.0] > errors_channel[0.0] * 0.5  # coarser weights: no better without smoothing


def test_smoothing_leaves_the_global_random_state_alone():
    model, inputs = _bert_and_inputs(batch=4, seq=8)
    before = torch.random.get_rng_state()
    smooth_(model, Inputs.of(inputs), alpha=0.5)
    assert torch.equal(torch.random.get_rng_state(), before)


class _TwoPreLN(nn.Module):
    """Two pre-LN blocks with fresh (equal) LayerNorms: the exporter stores their scales once, shared by Identity."""

    def __init__(self) -> None:
        super().__init__()
        self.norms = nn.ModuleList([nn.LayerNorm(16), nn.LayerNorm(16)])
        self.fcs = nn.ModuleList([nn.Linear(16, 16), nn.Linear(16, 16)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, fc in zip(self.norms, self.fcs):
            x = x + fc(norm(x))
        return x


def test_a_scale_is_not_folded_into_a_layernorm_whose_parameters_another_shares():
    torch.manual_seed(0)
    model, x = _TwoPreLN().eval(), torch.randn(32, 16)
    smoothed = copy.deepcopy(model)
    smooth_(smoothed, Inputs.of(x), alpha=0.5)
    tidied, counts = tidy_scales(sl.compress(smoothed, example_inputs=x[:1]).onnx_bytes)
    session = make_session(tidied)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-5, rtol=1e-5)
