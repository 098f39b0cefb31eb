"""Inputs in every form (tensor, tuple, dict), output selection, and data read by structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import squeezelab as sl
from squeezelab.engine.core.inputs import Inputs
from squeezelab.engine.core.outputs import select_output
from squeezelab.engine.core.samples import Samples, read_inputs, read_samples


def _ids(n: int = 4, seq: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(0, 50, (n, seq)), "attention_mask": np.ones((n, seq), dtype=np.int64)}


# ------------------------------------------------------------------ Inputs


def test_the_three_forms_and_their_specs():
    x = np.zeros((3, 1, 8, 8))
    one = Inputs.of(x)
    assert (one.kind, one.names, one.arrays[0].dtype) == ("tensor", ("input",), np.float32)  # float64 -> float32
    assert one.spec().describe() == "(batch, 1, 8, 8)"
    pair = Inputs.of((torch.zeros(3, 4), torch.zeros(3, 2, dtype=torch.int64)))
    assert pair.kind == "tuple" and pair.names == ("input_0", "input_1")
    assert pair.spec().describe() == "input_0 (batch, 4) float32, input_1 (batch, sequence) int64"
    keyword = Inputs.of(_ids())
    assert keyword.kind == "dict" and keyword.arrays[0].dtype == np.int64  # token ids keep their dtype
    assert len(keyword) == 4 and len(keyword.slice(1, 3)) == 2 and len(keyword.tile(9)) == 9


def test_check_casts_and_refuses_what_does_not_fit():
    spec = Inputs.of(_ids(seq=5)).spec()
    longer = Inputs.of(_ids(seq=9)).check(spec)  # the sequence axis is dynamic
    assert longer.arrays[0].shape == (4, 9)
    as_float = Inputs.of({k: v.astype(np.float32) for k, v in _ids().items()}).check(spec)
    assert as_float.arrays[0].dtype == np.int64  # whole-number floats become the model's int64
    in_order = Inputs.of(tuple(_ids().values())).check(spec)  # a tuple in the spec's order is fine
    assert in_order.names == spec.names
    with pytest.raises(sl.errors.ExampleInputError, match=r"takes the inputs \['input_ids', 'attention_mask'\]"):
        Inputs.of({"input_ids": _ids()["input_ids"], "mask": _ids()["attention_mask"]}).check(spec)
    with pytest.raises(sl.errors.ExampleInputError, match=r"takes 2 input\(s\) shaped input_ids \(batch, sequence\) int64"):
        Inputs.of(_ids()["input_ids"]).check(spec)
    with pytest.raises(sl.errors.ExampleInputError, match="dtype float32; the model takes int64"):
        Inputs.of({k: v + 0.5 for k, v in _ids().items()}).check(spec)
    image = Inputs.of(np.zeros((2, 1, 8, 8), np.float32)).spec()
    with pytest.raises(sl.errors.ExampleInputError, match=r"input of shape \(2, 8, 8\) does not fit the model, which takes \(batch, 1, 8, 8\)"):
        Inputs.of(np.zeros((2, 8, 8), np.float32)).check(image)


def test_bad_input_forms_are_named():
    with pytest.raises(sl.errors.DataError, match="different batch sizes"):
        Inputs.of((np.zeros((3, 2)), np.zeros((4, 2))))
    with pytest.raises(sl.errors.DataError, match="no batch dimension"):
        Inputs.of(np.array(1.0, dtype=np.float32))
    with pytest.raises(sl.errors.DataError, match=r"cannot read inputs of the form str"):
        Inputs.of("ids")
    with pytest.raises(sl.errors.DataError, match="dtype <U1"):
        Inputs.of(np.array([["a"]]))


def test_calls_pass_copies_so_a_model_cannot_edit_the_callers_arrays():
    x = np.ones((2, 3), np.float32)

    class EditsInput(torch.nn.Module):
        def forward(self, t):
            t.mul_(0)
            return t

    Inputs.of(x).call(EditsInput())
    assert x.sum() == 6


# ------------------------------------------------------------------ outputs


class _Returns(torch.nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        y = self.fc(x)
        if self.kind == "tuple":
            return y, y.sum(1)
        if self.kind == "dict":
            return {"logits": y, "norm": y.norm(dim=1)}
        return y


@pytest.mark.parametrize("kind", ["tensor", "tuple", "dict"])
def test_output_selection_picks_the_first_tensor_a_key_an_index_or_a_callable(kind):
    model = _Returns(kind).eval()
    out = model(torch.ones(2, 4))
    first = out if kind == "tensor" else (out[0] if kind == "tuple" else out["logits"])
    assert torch.equal(select_output(out), first)
    assert select_output(out, lambda o: first * 2).equal(first * 2)
    if kind == "tuple":
        assert select_output(out, 1).shape == (2,)
    if kind == "dict":
        assert select_output(out, "norm").shape == (2,)


@pytest.mark.parametrize("kind", ["tuple", "dict"])
@pytest.mark.parametrize("output", [None, "second"])
def test_a_selected_output_is_what_every_runtime_computes(kind, output):
    model = _Returns(kind).eval()
    pick = None if output is None else (1 if kind == "tuple" else "norm")
    x = torch.randn(6, 4)
    expected = select_output(model(x), pick).detach().numpy()
    for recipe in (sl.Recipe(), sl.Recipe(quantization=sl.Float16(), runtime=sl.Simulated())):
        c = sl.compress(model, recipe, example_inputs=x[:1], output=pick)
        np.testing.assert_allclose(c.predict(x.numpy()), expected, rtol=2e-3, atol=2e-3)


# ------------------------------------------------------------------ data read by structure


def test_evaluation_data_forms_give_the_same_samples():
    x = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    y = np.arange(10) % 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=4)
    forms = [(x, y), loader, torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), [(x[:5], y[:5]), (x[5:], y[5:])]]
    for form in forms:
        s = read_samples(form)
        np.testing.assert_array_equal(s.inputs.arrays[0], x)
        np.testing.assert_array_equal(s.targets, y)


def test_reference_embeddings_are_targets_not_inputs_whatever_their_rank():
    x = np.zeros((4, 3), np.float32)
    ref = np.ones((4, 3), np.float32)  # same rank as the inputs: a rank rule would misread it
    s = read_samples((x, ref))
    assert s.inputs.kind == "tensor" and s.targets.shape == (4, 3)


def test_dict_batches_with_labels_and_inputs_without_targets():
    batches = [{**_ids(2, 5), "labels": np.array([0, 1])}, {**_ids(3, 7), "labels": np.array([1, 1, 0])}]
    s = read_samples(batches)
    assert s.inputs.kind == "dict" and s.inputs.names == ("input_ids", "attention_mask")
    assert s.inputs.arrays[0].shape == (5, 7)  # ragged sequences padded to the longest
    np.testing.assert_array_equal(s.targets, [0, 1, 1, 1, 0])
    assert read_samples((_ids(), None)).targets is None
    assert read_samples(_ids()).targets is None
    assert read_samples(((np.zeros((2, 3)), np.zeros((2, 4))), None)).inputs.kind == "tuple"


def test_forms_it_cannot_read_are_named():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(sl.errors.DataError, match=r"form tuple of 3 .*a tuple must be \(inputs, targets\)"):
        read_samples((x, x, x))
    with pytest.raises(sl.errors.DataError, match=r"the data has 3 input samples but 2 targets"):
        read_samples((x, np.zeros(2)))
    with pytest.raises(sl.errors.DataError, match="some batches .* have targets and some do not"):
        read_samples([(x, np.zeros(3)), (x, None)])
    with pytest.raises(sl.errors.DataError, match="empty"):
        read_samples([])


def test_calibration_inputs_follow_the_models_spec():
    a, b = np.zeros((3, 4), np.float32), np.ones((3, 4), np.float32)
    two = Inputs.of((a, b)).spec()
    assert read_inputs((a, b), two).kind == "tuple"  # the model takes two inputs: these are they
    assert read_inputs((a, np.arange(3)), Inputs.of(a).spec()).kind == "tensor"  # one input: (x, y)
    assert len(read_inputs([a, b], Inputs.of(a).spec())) == 6  # a list of input batches
    with pytest.raises(sl.errors.CalibrationError, match="cannot read"):
        read_inputs(42)


def test_samples_slice_and_batch():
    s = Samples(Inputs.of(np.zeros((5, 2), np.float32)), np.arange(5))
    assert [len(b) for b in s.batches(2)] == [2, 2, 1] and s.slice(1, 3).targets.tolist() == [1, 2]
