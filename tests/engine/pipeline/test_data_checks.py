"""Data that does not fit the model is refused by name before any work: token ids outside the vocabulary,
sequences longer than the positions, NaN/Inf values, keys the model does not take or use.

Oracles: the model's own tables (``nn.Embedding.num_embeddings``), the counts of bad values planted in
the data, and a monkeypatched exporter that fails the test if work starts before the refusal.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import squeezelab as sl
import squeezelab.engine.pipeline.compress as compress_module

VOCAB, POSITIONS = 50, 16


class Tagger(nn.Module):
    """Token ids + mask -> 3 scores, with a word table and a position table (a BERT's embeddings in small)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.tok, self.pos, self.head = nn.Embedding(VOCAB, 8), nn.Embedding(POSITIONS, 8), nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        h = self.tok(input_ids) + self.pos(torch.arange(input_ids.shape[1]))  # (N, L, 8)
        return self.head((h * attention_mask[..., None]).mean(1))


def _ids(n: int = 6, seq: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, VOCAB, (n, seq)), "attention_mask": np.ones((n, seq), dtype=np.int64)}


def _no_export(monkeypatch, why: str) -> None:
    monkeypatch.setattr(compress_module, "export_onnx", lambda *a, **k: pytest.fail(f"exported before {why}"))


# ------------------------------------------------------------------ token ids and positions


def test_the_example_run_learns_the_vocabulary_and_the_positions():
    c = sl.compress(Tagger(), example_inputs=_ids(1))
    assert c.spec.vocab == ((VOCAB, "tok"), None) and c.spec.positions == (POSITIONS, "pos")
    assert sl.compress(Tagger(), sl.Recipe(quantization=sl.LinearQuantization(bits=4), runtime=sl.Simulated()),
                       example_inputs=_ids(1)).spec.vocab == ((VOCAB, "tok"), None)


@pytest.mark.parametrize("runtime", [sl.Int8Dynamic(op_types=("MatMul", "Gemm", "Gather")), sl.Simulated()], ids=["onnx", "pytorch"])
def test_predict_refuses_ids_outside_the_vocabulary_by_name(runtime):
    recipe = sl.Recipe(runtime=runtime) if runtime.onnx else sl.Recipe(quantization=sl.LinearQuantization(bits=4), runtime=runtime)
    c = sl.compress(Tagger(), recipe, example_inputs=_ids(1))
    bad = _ids(4)
    bad["input_ids"][2, 3] = 5288
    with pytest.raises(sl.errors.DataError) as info:
        c.predict(bad)
    message = str(info.value)
    assert "'input_ids' hold token ids from 0 to 5288 (1 outside, in 1 of 4 samples)" in message
    assert "embedding 'tok' has 50 rows (ids 0 to 49)" in message and "tokenizer" in message
    negative = _ids(4)
    negative["input_ids"][0, 0] = -1
    with pytest.raises(sl.errors.DataError, match="token ids from -1 to"):
        c.predict(negative)


def test_ids_outside_the_vocabulary_are_refused_before_export_in_the_example_the_data_and_calibration(monkeypatch):
    _no_export(monkeypatch, "the ids were checked")
    bad = _ids(6)
    bad["input_ids"][1, 0] = VOCAB
    with pytest.raises(sl.errors.ExampleInputError, match="example_inputs 'input_ids' hold token ids from .* to 50 .* 'tok' has 50 rows"):
        sl.compress(Tagger(), example_inputs={k: v[1:2] for k, v in bad.items()})
    with pytest.raises(sl.errors.DataError, match="the evaluation data 'input_ids' hold token ids .* in 1 of 6 samples"):
        sl.measure(Tagger(), (bad, None), example_inputs=_ids(1), rounds=0)
    with pytest.raises(sl.errors.DataError, match="calibration inputs 'input_ids' hold token ids"):
        sl.compress(Tagger(), sl.Recipe(runtime=sl.Int8Static()), example_inputs=_ids(1), calibration_data=bad)


def test_sequences_longer_than_the_positions_are_refused_before_export(monkeypatch):
    _no_export(monkeypatch, "the lengths were checked")
    long = _ids(8, seq=POSITIONS + 24)
    with pytest.raises(sl.errors.DataError) as info:
        sl.compress(Tagger(), sl.Recipe(runtime=sl.Int8Static()), example_inputs=_ids(1), calibration_data=long)
    message = str(info.value)
    assert "sequences of 40 tokens" in message and "position embedding 'pos' holds 16 positions" in message
    assert "truncation=True, max_length=16" in message
    with pytest.raises(sl.errors.DataError, match="the evaluation data 'input_ids' hold sequences of 40 tokens"):
        sl.measure(Tagger(), (long, None), example_inputs=_ids(1), rounds=0)


def test_a_hugging_face_bert_gets_its_vocabulary_and_positions():
    from squeezelab.engine.zoo import tiny_bert, tiny_bert_inputs

    model = tiny_bert(seed=0)
    c = sl.compress(model, example_inputs={k: v[:1] for k, v in tiny_bert_inputs(batch=2, seq=8).items()})
    assert c.spec.vocab[0] == (1000, "embeddings.word_embeddings")
    assert c.spec.vocab[2] == (2, "embeddings.token_type_embeddings")
    assert c.spec.positions == (64, "embeddings.position_embeddings")
    with pytest.raises(sl.errors.DataError, match="sequences of 80 tokens; .* holds 64 positions"):
        c.predict({k: v.numpy() for k, v in tiny_bert_inputs(batch=2, seq=80).items()})


# ------------------------------------------------------------------ non-finite values


def test_nan_and_inf_inputs_are_counted_and_refused(monkeypatch, digits_mlp):
    model, split = digits_mlp
    _no_export(monkeypatch, "the values were checked")
    x = split.x_test[:40].copy()
    x[3, 0, 2, 2] = np.nan
    x[3, 0, 4, 4] = np.nan
    x[17, 0, 0, 0] = np.inf
    with pytest.raises(sl.errors.DataError) as info:
        sl.measure(model, (x, split.y_test[:40]), rounds=0)
    message = str(info.value)
    assert "the evaluation data holds 2 NaN and 1 Inf value(s) in 2 of 40 samples (the first: sample 3)" in message
    assert "drop those samples" in message
    with pytest.raises(sl.errors.CalibrationError, match="calibration_data holds 2 NaN and 1 Inf"):
        sl.compress(model, sl.Recipe(runtime=sl.Int8Static()), example_inputs=split.x_test[:1], calibration_data=x)
    with pytest.raises(sl.errors.ExampleInputError, match="example_inputs holds 2 NaN"):
        sl.compress(model, example_inputs=x[3:4])
    y = split.y_test[:40].astype(np.float32)
    y[5] = np.nan
    with pytest.raises(sl.errors.DataError, match="the targets of the evaluation data hold NaN or Inf values in 1 of 40"):
        sl.measure(model, (split.x_test[:40], y), rounds=0)


# ------------------------------------------------------------------ keys


def test_a_key_the_model_does_not_take_is_named_with_the_models_inputs(monkeypatch):
    _no_export(monkeypatch, "the keys were checked")
    data = {**_ids(4), "labels_mask": np.ones((4, 10), dtype=np.int64)}
    with pytest.raises(sl.errors.DataError) as info:
        sl.measure(Tagger(), (data, None), rounds=0)
    message = str(info.value)
    assert "the evaluation data hold the key(s) ['labels_mask'], which Tagger.forward does not take" in message
    assert "['input_ids', 'attention_mask', 'token_type_ids']" in message


def test_a_key_forward_accepts_but_never_uses_is_named_with_the_graphs_inputs():
    example = {**_ids(1), "token_type_ids": np.zeros((1, 10), dtype=np.int64)}
    with pytest.raises(sl.errors.DataError) as info:
        sl.compress(Tagger(), example_inputs=example)
    message = str(info.value)
    assert "['token_type_ids'], which the model does not use" in message
    assert "the exported graph takes only ['input_ids', 'attention_mask']" in message and "Invalid input name" not in message


def test_predict_names_an_extra_key_and_the_inputs_the_model_takes():
    c = sl.compress(Tagger(), example_inputs=_ids(1))
    with pytest.raises(sl.errors.DataError, match=r"inputs hold the key\(s\) \['extra'\], which are not inputs of the model: "
                                           r"the model takes the inputs \['input_ids', 'attention_mask'\]"):
        c.predict({**_ids(2), "extra": np.zeros((2, 10), dtype=np.int64)})


def test_ids_the_model_remaps_itself_are_not_refused():
    class Clamped(Tagger):
        def forward(self, input_ids, attention_mask, token_type_ids=None):
            return super().forward(input_ids.clamp(0, VOCAB - 1), attention_mask)

    c = sl.compress(Clamped(), example_inputs=_ids(1))
    assert c.spec.vocab in ((), (None, None))  # the table is fed a computed tensor, not the input
    big = _ids(2)
    big["input_ids"][0, 0] = 5288  # the model clamps it: a valid input for this model
    assert c.predict(big).shape == (2, 3)
