"""Structured pruning of transformers and whole-layer removal: heads and FFN neurons of a Hugging Face BERT
removed (against the severed-model oracle), layers dropped by influence, and recovery by distillation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import squeezelab as sl
from squeezelab.engine.core.errors import StructuredPruningError
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.pruning.layer_removal import removable_blocks
from squeezelab.engine.zoo import resnet18, tiny_bert, tiny_bert_inputs
from tests.conftest import state_hash

pytest.importorskip("transformers")


def rows_kept(original: torch.Tensor, pruned: torch.Tensor) -> list[int]:
    """Which output rows of a Linear survived, found by their (distinct) weight rows."""
    return [int(torch.nonzero((original == row).all(1))[0]) for row in pruned.detach()]


@pytest.fixture(scope="module")
def bert_and_pruned():
    # No dropout: the recovery test trains it in training mode and compares with the teacher in eval mode.
    bert, x = tiny_bert(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), tiny_bert_inputs(batch=3, seq=8)
    before = state_hash(bert)
    pruned = sl.prune(bert, sl.ChannelPruning(ratio=0.5, heads=True), example_inputs=x)  # ONNX checked inside
    assert state_hash(bert) == before
    return bert, pruned, x


def test_bert_loses_half_its_heads_and_ffn_neurons_and_matches_the_severed_model(bert_and_pruned):
    bert, pruned, x = bert_and_pruned
    cuts = {}
    for i, (layer, small) in enumerate(zip(bert.encoder.layer, pruned.encoder.layer)):
        attn, small_attn = layer.attention.self, small.attention.self
        assert small_attn.num_attention_heads == 2 and small_attn.attention_head_size == 16
        assert small_attn.query.weight.shape == small_attn.value.weight.shape == (32, 64)
        assert small.intermediate.dense.weight.shape == (64, 64) and small.output.dense.weight.shape == (64, 64)
        ffn = rows_kept(layer.intermediate.dense.weight, small.intermediate.dense.weight)
        dims = rows_kept(attn.value.weight, small_attn.value.weight)
        heads = sorted({d // 16 for d in dims})
        assert len(heads) == 2 and sorted(dims) == [h * 16 + k for h in heads for k in range(16)]  # whole heads
        assert rows_kept(attn.query.weight, small_attn.query.weight) == dims  # q, k, v lose the same heads
        cuts[f"encoder.layer.{i}.output.dense"] = sorted(set(range(128)) - set(ffn))
        cuts[f"encoder.layer.{i}.attention.output.dense"] = sorted(set(range(64)) - set(dims))
    ref = copy.deepcopy(bert)
    with torch.no_grad():  # removing a neuron or head == the next layer ignoring it (GELU(0) = 0 aside, exact)
        for name, drop in cuts.items():
            ref.get_submodule(name).weight[:, drop] = 0
    torch.testing.assert_close(pruned(**x).last_hidden_state, ref(**x).last_hidden_state, atol=1e-5, rtol=1e-4)
    assert pruned.embeddings.word_embeddings.weight.shape == (1000, 64)  # the hidden width is the interface


def test_without_heads_only_ffn_neurons_go_and_groups_are_listed():
    from squeezelab.engine.pruning.structured import prunable_groups

    bert, x = tiny_bert(), tiny_bert_inputs(batch=2, seq=8)
    groups = {g.name: g for g in prunable_groups(bert, x)}
    assert groups["encoder.layer.0.attention.self"].kind == "heads" and groups["encoder.layer.0.attention.self"].size == 4
    assert groups["encoder.layer.1.intermediate.dense"].status == "prunable"
    assert groups["pooler.dense"].status == "model output"
    pruned = sl.prune(bert, sl.ChannelPruning(ratio=0.25), example_inputs=x)
    assert pruned.encoder.layer[0].attention.self.num_attention_heads == 4
    assert pruned.encoder.layer[1].intermediate.dense.out_features == 96


def test_layer_pruning_drops_the_least_influential_bert_layers():
    bert, x = tiny_bert(num_hidden_layers=4), tiny_bert_inputs(batch=3, seq=8)
    blocks = removable_blocks(bert, Inputs.of(x))
    assert [b.name for b in blocks] == [f"encoder.layer.{i}" for i in range(4)]
    keep = sorted(sorted(range(4), key=lambda i: -blocks[i].score)[:2])
    short = sl.prune(bert, sl.LayerPruning(keep=2), example_inputs=x)
    assert len(short.encoder.layer) == short.config.num_hidden_layers == 2 and bert.config.num_hidden_layers == 4
    ref = copy.deepcopy(bert)
    ref.encoder.layer = nn.ModuleList([ref.encoder.layer[i] for i in keep])
    torch.testing.assert_close(short(**x).last_hidden_state, ref(**x).last_hidden_state)
    with pytest.raises(sl.errors.ConfigError, match=r"has 4 removable blocks .*keep=4 removes none. Pass keep < 4"):
        sl.prune(bert, sl.LayerPruning(keep=4), example_inputs=x)


def test_layer_pruning_replaces_residual_blocks_of_a_resnet_by_identity():
    model, x = resnet18(num_classes=10, small_input=True).eval(), torch.randn(2, 3, 16, 16)
    short = sl.prune(model, sl.LayerPruning(ratio=0.5), example_inputs=x[:1])
    identities = [n for n, m in short.named_modules() if isinstance(m, nn.Identity) and n.startswith("layer")]
    assert len(identities) == 2  # of the 4 blocks without a projection (layerN.1 for N = 1..4), half go
    assert all(n.endswith(".1") for n in identities) and short(x).shape == (2, 10)
    with pytest.raises(StructuredPruningError, match="has no removable block.*residual blocks or transformer layers"):
        sl.prune(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), sl.LayerPruning(keep=1), example_inputs=torch.randn(1, 4))


def test_prune_in_place_on_a_transformer_keeps_the_object():
    bert, x = tiny_bert(), tiny_bert_inputs(batch=2, seq=8)
    same = bert
    sl.prune_(bert, sl.ChannelPruning(ratio=0.5), example_inputs=x)
    assert bert is same and bert.encoder.layer[0].intermediate.dense.out_features == 64
    assert bert(**x).last_hidden_state.shape == (2, 8, 64)


def test_distillation_with_dict_inputs_and_no_labels_recovers_the_teacher(bert_and_pruned):
    bert, pruned, _ = bert_and_pruned
    x = tiny_bert_inputs(batch=32, seq=8, seed=1)
    teacher = bert(**x).last_hidden_state.detach()

    def distance(m):  # mean squared distance to the teacher's hidden states
        with torch.no_grad():
            return float(((m(**x).last_hidden_state - teacher) ** 2).mean())

    before, start = distance(pruned), state_hash(pruned)
    tuned = sl.finetune(pruned, (x, None), epochs=3, batch_size=16, output="last_hidden_state",
                        distill=sl.Distillation(teacher=bert, alpha=1.0, criterion="mse"), seed=0,
                        optimizer=lambda p: torch.optim.Adam(p, lr=1e-4))
    assert state_hash(pruned) == start
    assert distance(tuned) < 0.5 * before  # measured: 4.7e-4 -> 1.0e-4
    with pytest.raises(sl.errors.DataError, match="has no targets.*Distillation\\(teacher=.*alpha=1.0"):
        sl.finetune(pruned, (x, None), epochs=1, output="last_hidden_state")
    with pytest.raises(sl.errors.ConfigError, match=r"alpha=0.5\) mixes in a task loss.*pass alpha=1.0"):
        sl.finetune(pruned, (x, None), output="last_hidden_state", distill=sl.Distillation(teacher=bert, alpha=0.5))


def test_sweeps_prune_a_transformer_by_heads_and_by_layers(tmp_path):
    from squeezelab.engine.explore.sweep import grid_recipe

    assert grid_recipe(32, 0.5, pruning="structured-heads").pruning == sl.ChannelPruning(ratio=0.5, heads=True)
    assert grid_recipe(32, 0.5, pruning="layers").pruning == sl.LayerPruning(ratio=0.5)
    bert = tiny_bert(num_hidden_layers=4)
    data = ({k: v.numpy() for k, v in tiny_bert_inputs(batch=8, seq=8, seed=2).items()}, None)
    s = sl.sweep(bert, data, bits=(32,), sparsity=(0.5,), pruning="structured-heads", cache=tmp_path, progress=False,
                 rounds=2, recipes=[sl.Recipe(pruning=sl.LayerPruning(ratio=0.5))])
    labels = list(s.table["label"])
    assert any("heads" in label for label in labels) and any("layers50%" in label for label in labels)
    for _, pruned in s.table.iloc[1:].iterrows():
        assert pruned["size_bytes"] < 0.9 * s.table["size_bytes"].iloc[0] and 0.5 < pruned["cosine"] < 1.0
