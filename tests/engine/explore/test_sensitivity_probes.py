"""layer_sensitivity's probes re-run only what they change: the same figures as full evaluations.

The oracle is the full evaluation (``sweep``'s path: compress the probe's recipe, run the whole model),
reached by passing an executor that runs in this process. The estimate is checked for its labels.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

import squeezelab as sl
from squeezelab.errors import ConfigError
from squeezelab.engine.core.layers import prunable_layers
from squeezelab.engine.core.quantizers import LinearQuantization
from squeezelab.engine.explore import layer_probes, replay, sensitivity_auto
from squeezelab.engine.explore.evaluation import Evaluator
from squeezelab.engine.explore.layer_probes import LayerProbes, Probe
from squeezelab.engine.explore.sensitivity import bits_probe, sparsity_probe
from squeezelab.engine.explore.packed_size import packed_size
from squeezelab.engine.pipeline.artifact import pack_encoded
from squeezelab.engine.quantization.simulated import encode_model
from squeezelab.engine.zoo.bert import tiny_bert, tiny_bert_inputs
from tests.conftest import state_hash


class _Here(cf.Executor):
    """An executor that runs each task at once in this process: layer_sensitivity's full-evaluation path."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: cf.Future = cf.Future()
        future.set_result(fn(*args, **kwargs))
        return future


class _ClampInPlace(nn.Module):
    """Edits its input in place; its caller ignores what it returns (replaying it would be wrong)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_(min=-0.5)


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x  # in place on the block's output: a replayed input must be a copy
        return self.relu(out)


class _ResidualCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.side = _ClampInPlace()
        self.blocks = nn.Sequential(_Block(8), _Block(8), _Block(8))
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        self.side(x)  # relies on the in-place edit
        x = self.blocks(x)
        return self.head(x.mean(dim=(2, 3)))


def _residual_cnn() -> tuple[nn.Module, tuple[np.ndarray, np.ndarray]]:
    torch.manual_seed(0)
    model = _ResidualCNN().eval()
    for m in model.modules():  # BatchNorm statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = np.random.default_rng(0).standard_normal((40, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    labels[::4] = (labels[::4] + 1) % 5  # some samples wrong in fp32 already: accuracy can move both ways
    return model, (x, labels)


def _both(model: nn.Module, data, tmp_path, **kwargs):
    fast = sl.layer_sensitivity(model, data, cache=tmp_path / "fast", progress=False, **kwargs)
    full = sl.layer_sensitivity(model, data, cache=tmp_path / "full", progress=False, executor=_Here(), **kwargs)
    return fast, full


def test_tiny_bert_probes_equal_the_full_evaluation(tmp_path):
    model, x = tiny_bert(), tiny_bert_inputs(batch=12, seq=16)
    before = state_hash(model)
    fast, full = _both(model, (x, None), tmp_path, bits=[2, 4], sparsity=[0.75], output="last_hidden_state", eval_batch_size=5)
    assert fast[["layer", "axis", "value"]].equals(full[["layer", "axis", "value"]])
    np.testing.assert_allclose(fast["cosine"], full["cosine"], rtol=0, atol=1e-6)
    assert fast["drop"].max() > 1e-5  # the probes changed something (2 bits on some layer)
    assert (fast["size_bytes"] == full["size_bytes"]).all()  # the packed file's size, without writing it
    assert fast.attrs == full.attrs
    assert state_hash(model) == before
    # the stored points agree field by field (a later search reads them from the cache)
    names = [name for name, _ in prunable_layers(model)]
    for recipe in (bits_probe(LinearQuantization(), names[3], 2, names), sparsity_probe(names[5], 0.75)):
        a, b = (Evaluator(model, (x, None), cache=tmp_path / kind, rounds=0, output="last_hidden_state", eval_batch_size=5)
                .cached(recipe) for kind in ("fast", "full"))
        for field in ("label", "bits", "weight_sparsity", "quantized_weight_fraction", "size_bytes", "n_samples", "runtime"):
            assert getattr(a, field) == getattr(b, field), field
        assert a.weight_sparsity > 0


def test_tiny_bert_probes_replay_the_layers_before_them():
    model, x = tiny_bert(), tiny_bert_inputs(batch=6, seq=16)
    ev = Evaluator(model, (x, None), cache=False, rounds=0, output="last_hidden_state")
    names = [name for name, _ in prunable_layers(model)]
    probes = LayerProbes(ev, names, LinearQuantization())
    stages = [s.name for s in probes.replay.stages]
    assert "embeddings" in stages and "encoder.layer.1.intermediate" in stages
    assert [s.name for s in probes.replay.replayed_before("encoder.layer.0.attention.self.query")] == ["embeddings"]
    replayed = [s.name for s in probes.replay.replayed_before("encoder.layer.1.output.dense")]
    assert "encoder.layer.0.output" in replayed and "encoder.layer.1.intermediate" in replayed
    # With no layer changed, a replayed run is the fp32 run.
    np.testing.assert_array_equal(probes.replay.outputs("encoder.layer.1.output.dense"), probes.replay.fp32)


def test_residual_cnn_probes_equal_the_full_evaluation(tmp_path):
    model, (x, labels) = _residual_cnn()
    fast, full = _both(model, (x, None), tmp_path, bits=[2, 3], sparsity=[0.9], eval_batch_size=16)
    np.testing.assert_allclose(fast["cosine"], full["cosine"], rtol=0, atol=1e-6)
    assert fast["drop"].max() > 1e-4
    assert (fast["size_bytes"] == full["size_bytes"]).all()
    top1, top1_full = _both(model, (x, labels), tmp_path / "top1", bits=[2], sparsity=[], eval_batch_size=16)
    np.testing.assert_array_equal(top1["accuracy"], top1_full["accuracy"])


def test_a_module_whose_side_effect_matters_is_recomputed_not_replayed():
    model, data = _residual_cnn()
    ev = Evaluator(model, data, cache=False, rounds=0)
    probes = LayerProbes(ev, [name for name, _ in prunable_layers(model)], LinearQuantization())
    stages = [s.name for s in probes.replay.stages]
    assert "side" not in stages  # its replay did not reproduce fp32 on the check samples
    assert any(s.startswith("blocks.") for s in stages)
    # The stem's replayed output is edited in place by `side`: seen, the cache refilled, copied from then on.
    names = [name for name, _ in prunable_layers(model)]
    probes.measure(Probe(bits_probe(LinearQuantization(), "blocks.1.conv1", 3, names), "blocks.1.conv1", "bits", 3))
    assert "stem" in probes.replay.copied
    np.testing.assert_array_equal(probes.replay.outputs("blocks.2.conv1"), probes.replay.fp32)


def test_a_cache_past_its_memory_budget_is_spilled_to_disk_with_the_same_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(replay, "MEMORY_BUDGET", 0)  # every stage output spilled, batch by batch
    model, (x, _) = _residual_cnn()
    fast, full = _both(model, (x, None), tmp_path, bits=[2, 3], sparsity=[0.9], eval_batch_size=16)
    np.testing.assert_allclose(fast["cosine"], full["cosine"], rtol=0, atol=1e-6)
    assert fast["drop"].max() > 1e-4
    probes = LayerProbes(Evaluator(model, (x, None), cache=False, rounds=0, eval_batch_size=16),
                         [name for name, _ in prunable_layers(model)], LinearQuantization())
    folder = probes.replay._folder
    assert probes.replay.spilled and folder is not None and any(p.suffix == ".npy" for p in Path(folder).iterdir())
    np.testing.assert_array_equal(probes.replay.outputs("blocks.2.conv1"), probes.replay.fp32)
    del probes
    gc.collect()
    assert not Path(folder).exists()  # the files go with the replay


def test_the_progress_bar_counts_the_work_each_probe_reruns(tmp_path, capsys):
    model, data = _residual_cnn()
    shown = sl.layer_sensitivity(model, data, bits=[2], sparsity=[], cache=tmp_path / "a", progress=True)
    quiet = sl.layer_sensitivity(model, data, bits=[2], sparsity=[], cache=tmp_path / "b", progress=False)
    assert shown["accuracy"].equals(quiet["accuracy"])
    bar = capsys.readouterr().err
    assert "layer sensitivity" in bar and "MAC" in bar  # multiply-adds, so the time left follows the work left


def test_a_second_call_reads_the_cache_only(tmp_path, monkeypatch):
    model, data = _residual_cnn()
    first = sl.layer_sensitivity(model, data, bits=[2], sparsity=[], cache=tmp_path, progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("a cached table built its probes again")

    monkeypatch.setattr(layer_probes.LayerProbes, "__init__", refuse)
    again = sl.layer_sensitivity(model, data, bits=[2], sparsity=[], cache=tmp_path, progress=False)
    assert again.equals(first)


def test_a_deadline_in_the_past_leaves_probes_unmeasured(tmp_path):
    model, data = _residual_cnn()
    table = sl.layer_sensitivity(model, data, bits=[2], sparsity=[], cache=tmp_path, progress=False, deadline=0.0)
    assert table["accuracy"].isna().all() and not np.isnan(table.attrs["baseline_value"])


def test_the_estimate_is_labelled_and_its_top_rows_measured(tmp_path):
    model, x = tiny_bert(), tiny_bert_inputs(batch=12, seq=16)
    kwargs = dict(bits=[2, 4], sparsity=[0.75], output="last_hidden_state", progress=False)
    exact = sl.layer_sensitivity(model, (x, None), cache=tmp_path, **kwargs)
    est = sl.layer_sensitivity(model, (x, None), cache=tmp_path, method="estimate", verify=2, **kwargs)
    assert "estimate, not measured" in est.attrs["estimate"] and est.attrs["verified"] == 4
    measured = est[~est["estimated"]]
    assert len(measured) == 4 and sorted(measured["axis"]) == ["bits", "bits", "sparsity", "sparsity"]
    np.testing.assert_allclose(measured["cosine"], exact.loc[measured.index, "cosine"], atol=1e-9)
    guessed = est[est["estimated"]]
    assert guessed["cosine"].isna().all()  # no figure that was not measured
    np.testing.assert_allclose(guessed["drop"], guessed["estimate"])  # a cosine metric: the estimate stands in
    # the estimate ranks like the measurement (Spearman 0.99 when written; a wrong sign or scale would fail)
    two = exact["value"].eq(2) & exact["axis"].eq("bits")
    assert spearmanr(exact.loc[two, "drop"], est.loc[two, "estimate"]).correlation > 0.8


def test_an_estimate_of_a_top1_model_gives_no_drop_to_unmeasured_rows(tmp_path):
    model, data = _residual_cnn()
    est = sl.layer_sensitivity(model, data, bits=[2], sparsity=[], cache=tmp_path, progress=False, method="estimate", verify=1)
    assert est["drop"][est["estimated"]].isna().all() and est["estimate"].notna().all()
    assert "not a cosine" in est.attrs["estimate"]


def test_the_default_measures_a_table_that_is_little_work_and_says_so(tmp_path):
    model, data = _residual_cnn()
    auto = sl.layer_sensitivity(model, data, bits=[2], sparsity=[0.5], cache=tmp_path / "auto", progress=False)
    exact = sl.layer_sensitivity(model, data, bits=[2], sparsity=[0.5], cache=tmp_path / "exact", progress=False, method="exact")
    assert auto.attrs["method"] == "exact" and "method='auto': exact" in auto.attrs["method_note"]
    assert "estimated" not in auto.columns and "estimate" not in auto.attrs
    np.testing.assert_array_equal(auto["accuracy"], exact["accuracy"])


def test_the_default_estimates_a_table_that_is_much_work_labelled(tmp_path, monkeypatch):
    # The choice counts multiply-adds, not seconds: a limit of 1 multiply-add sends any table to the estimate.
    monkeypatch.setattr(sensitivity_auto, "EXACT_WORK", 1.0)
    model, x = tiny_bert(), tiny_bert_inputs(batch=12, seq=16)
    before = state_hash(model)
    kwargs = dict(bits=[2], sparsity=[0.75], output="last_hidden_state", progress=False, verify=2)
    auto = sl.layer_sensitivity(model, (x, None), cache=tmp_path / "auto", **kwargs)
    assert auto.attrs["method"] == "estimate" and "method='exact'" in auto.attrs["method_note"]
    assert "estimate, not measured" in auto.attrs["estimate"] and auto.attrs["verified"] == 4
    assert auto["estimated"].sum() == len(auto) - 4 and auto.loc[auto["estimated"], "cosine"].isna().all()
    assert state_hash(model) == before and not model.training  # counting the work ran it once, changed nothing
    # measured once exactly, the same call finds no work left and returns the measured table
    exact = sl.layer_sensitivity(model, (x, None), cache=tmp_path / "exact", method="exact", **kwargs)
    again = sl.layer_sensitivity(model, (x, None), cache=tmp_path / "exact", **kwargs)
    assert again.attrs["method"] == "exact" and again["cosine"].equals(exact["cosine"])


def test_the_work_a_probe_reruns_falls_along_the_model():
    model, x = tiny_bert(), tiny_bert_inputs(batch=4, seq=16)
    model.train()
    ev = Evaluator(model, (x, None), cache=False, rounds=0, output="last_hidden_state")
    names = [name for name, _ in prunable_layers(model)]
    work = sensitivity_auto.layer_work(model, ev, names)
    assert model.training  # its mode is put back
    assert names[-1] == "pooler.dense"  # called last, on one token: it re-runs itself only
    assert work["pooler.dense"] == model.get_submodule("pooler.dense").weight.numel()
    dense = model.get_submodule("encoder.layer.1.output.dense")  # 16 tokens x its weights, then the pooler's
    assert work["encoder.layer.1.output.dense"] == 16 * dense.weight.numel() + work["pooler.dense"]
    assert work["encoder.layer.0.attention.self.query"] > work["encoder.layer.1.attention.self.query"] > work["pooler.dense"]
    assert sensitivity_auto.choose_method(0.0, 0, limit=0.0)[0] == "exact"
    assert sensitivity_auto.choose_method(2.0, 1, limit=1.0)[0] == "estimate"


def test_an_unknown_method_is_refused():
    model, data = _residual_cnn()
    with pytest.raises(ConfigError, match="method='fast'.*'auto'"):
        sl.layer_sensitivity(model, data, method="fast", cache=False, progress=False)


@pytest.mark.parametrize("bits", [None, 2, 4])
def test_packed_size_is_the_packed_files_length(bits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    config = None if bits is None else LinearQuantization(bits=bits)
    encoded = encode_model(model, config, layer_bits={"0": 32} if bits == 4 else None)
    recipe = {"quantization": {"type": "x", "note": 'quotes " and \\ and é'}}
    assert packed_size(encoded, recipe=recipe, model_class="m.C") == len(pack_encoded(encoded, recipe=recipe, model_class="m.C"))


def test_the_heatmap_says_which_cells_are_estimates(tmp_path):
    from squeezelab.widgets.heatmap import sensitivity_heatmap

    model, (x, _) = _residual_cnn()
    est = sl.layer_sensitivity(model, (x, None), bits=[2], sparsity=[], cache=tmp_path, progress=False, method="estimate", verify=1)
    fig = sensitivity_heatmap(est, "bits")
    titles = " ".join(a.text for a in fig.layout.annotations) + str(fig.layout.title.text)
    assert "estimate where not measured: 1 rows measured" in titles
    hovers = [cell for row in fig.data[0].text for cell in row]
    assert sum("estimate, not measured" in h for h in hovers) == len(est) - 1


def test_the_int8_map_measures_each_unit_kept_float_in_real_kernels(tmp_path):
    from dataclasses import replace

    from squeezelab.engine.explore.int8_search import float_layers_recipe
    from squeezelab.widgets.heatmap import sensitivity_heatmap

    model, x = tiny_bert(), tiny_bert_inputs(batch=12, seq=16)
    table = sl.layer_sensitivity(model, (x, None), runtime=sl.Int8Dynamic(), cache=tmp_path, progress=False,
                                 output="last_hidden_state")
    assert (table["axis"] == "int8").all() and "encoder.layer.0.attention.self.{query,key,value}" in set(table["layer"])
    assert table.attrs["all_int8"] < table.attrs["baseline_value"]  # int8 loses something to fp32
    np.testing.assert_allclose(table["gain"], table["cosine"] - table.attrs["all_int8"])
    # The oracle: the same recipe compressed from the PyTorch model (exported again) and evaluated in full.
    ev = Evaluator(model, (x, None), cache=False, rounds=0, output="last_hidden_state")
    row = table.iloc[3]
    recipe = replace(float_layers_recipe(sl.Recipe(runtime=sl.Int8Dynamic(), transforms=()), tuple(row["layers"])), transforms=())
    assert ev.evaluate(recipe).value == pytest.approx(row["cosine"], abs=1e-9)
    fig = sensitivity_heatmap(table, "int8")
    assert len(fig.data[0].y) == len(table)


def test_a_second_int8_map_reads_one_file(tmp_path, monkeypatch):
    from squeezelab.engine.explore import int8_sensitivity

    model, x = tiny_bert(), tiny_bert_inputs(batch=6, seq=16)
    kwargs = dict(runtime=sl.Int8Dynamic(), cache=tmp_path, progress=False, output="last_hidden_state")
    first = sl.layer_sensitivity(model, (x, None), **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("a stored int8 map exported the model again")

    monkeypatch.setattr(int8_sensitivity, "fp32_export", refuse)
    again = sl.layer_sensitivity(model, (x, None), **kwargs)
    assert again.equals(first) and again.attrs == first.attrs


def test_a_weight_only_map_is_refused_before_any_work():
    model, data = _residual_cnn()
    with pytest.raises(ConfigError, match="weight-only map is not built yet"):
        sl.layer_sensitivity(model, data, runtime=sl.WeightOnly(), cache=False, progress=False)
