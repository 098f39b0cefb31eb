"""Recipe and config validation, labels and plain-data / TOML round trips."""

from __future__ import annotations

import dataclasses

import pytest

import squeezelab as sl
from squeezelab.engine.core.errors import ConfigError

ALL_RECIPES = [
    sl.Recipe(),
    sl.Recipe(quantization=sl.Float16()),
    sl.Recipe(runtime=sl.Int8Dynamic(per_channel=True)),
    sl.Recipe(runtime=sl.Int8Static(calibration="entropy", per_channel=False, activations="uint8")),
    sl.Recipe(runtime=sl.Int8Static(calibration=sl.quantization.Percentile(percentile=99.9))),
    sl.Recipe(runtime=sl.Int8Static(op_types=("MatMul", "Gemm"), reduce_range=False)),
    sl.Recipe(quantization=sl.LinearQuantization(bits=3, symmetric=False, granularity=sl.PerTensor()), runtime=sl.Simulated()),
    sl.Recipe(quantization=sl.KMeansQuantization(bits=5, seed=3), runtime=sl.Simulated()),
    sl.Recipe(quantization=sl.FixedPoint(total_bits=8, frac_bits=5), runtime=sl.Simulated()),
    sl.Recipe(quantization=sl.FixedPoint(total_bits=6), runtime=sl.Simulated()),
]


@pytest.mark.parametrize("recipe", ALL_RECIPES, ids=lambda r: r.label)
def test_round_trips_through_dict_and_toml(recipe):
    assert sl.Recipe.from_dict(recipe.to_dict()) == recipe
    assert sl.Recipe.from_toml(recipe.to_toml()) == recipe
    assert hash(sl.Recipe.from_dict(recipe.to_dict())) == hash(recipe)


def test_labels_say_simulated_and_executable():
    labels = {r.label: r.executable for r in ALL_RECIPES}
    for label, executable in labels.items():
        assert ("(simulated)" in label) is (not executable)
    assert sl.Recipe().label == "fp32" and sl.Recipe().bits == 32
    assert sl.Recipe(runtime=sl.Int8Static()).bits == 8


def test_configs_are_frozen_and_replaceable():
    r = sl.Recipe(runtime=sl.Int8Static())
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.runtime = sl.Onnx()  # type: ignore[misc]
    assert dataclasses.replace(r, runtime=sl.Onnx()) == sl.Recipe()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: sl.LinearQuantization(bits=0), ["bits=0", "2..16"]),
        (lambda: sl.LinearQuantization(bits=17), ["bits=17", "2..16"]),
        (lambda: sl.LinearQuantization(bits=4.0), ["bits=4.0"]),
        (lambda: sl.KMeansQuantization(bits=9), ["bits=9", "1..8"]),
        (lambda: sl.FixedPoint(total_bits=1), ["total_bits=1"]),
        (lambda: sl.Int8Static(calibration="histogram"), ["'histogram'", "'entropy'"]),
        (lambda: sl.Int8Static(activations="int4"), ["'int4'", "'uint8'"]),
        (lambda: sl.quantization.Percentile(percentile=20), ["percentile=20"]),
        (lambda: sl.Recipe(quantization=sl.LinearQuantization(bits=4)), ["no ONNX Runtime kernel", "Simulated()"]),
        (lambda: sl.Recipe(quantization=sl.LinearQuantization(bits=8), runtime=sl.Int8Static()), ["Int8Static", "Simulated()"]),
        (lambda: sl.Recipe(runtime="int8"), ["runtime='int8'"]),
        (lambda: sl.Recipe(quantization=4), ["quantization=4"]),
    ],
)
def test_bad_values_raise_config_error_naming_value_and_fix(make, words):
    with pytest.raises(ConfigError) as info:
        make()
    assert isinstance(info.value, sl.SqueezeError) and isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)


def test_hand_written_toml_may_name_calibration_by_string():
    text = '[runtime]\ntype = "Int8Static"\ncalibration = "entropy"\nper_channel = false\n'
    assert sl.Recipe.from_toml(text) == sl.Recipe(runtime=sl.Int8Static(calibration=sl.quantization.Entropy(), per_channel=False))


def test_labels_tell_apart_recipes_that_differ():
    recipes = [
        sl.Recipe(runtime=sl.Int8Dynamic()),
        sl.Recipe(runtime=sl.Int8Dynamic(reduce_range=False)),
        sl.Recipe(runtime=sl.Int8Dynamic(reduce_range=True)),
        sl.Recipe(runtime=sl.Int8Dynamic(op_types=("MatMul",))),
        sl.Recipe(quantization=sl.KMeansQuantization(bits=4), runtime=sl.Simulated()),
        sl.Recipe(quantization=sl.KMeansQuantization(bits=4, seed=1), runtime=sl.Simulated()),
    ]
    assert len({r.label for r in recipes}) == len(recipes)


def test_from_dict_loads_only_known_types_and_fields():
    with pytest.raises(ConfigError, match="unknown QuantizationConfig type 'os.system'"):
        sl.Recipe.from_dict({"quantization": {"type": "os.system"}})
    with pytest.raises(ConfigError, match="unknown Runtime type 'LinearQuantization'"):
        sl.Recipe.from_dict({"runtime": {"type": "LinearQuantization"}})
    with pytest.raises(ConfigError, match="no field 'bitz'.*valid fields: bits, granularity, symmetric"):
        sl.Recipe.from_dict({"quantization": {"type": "LinearQuantization", "bitz": 4}, "runtime": {"type": "Simulated"}})
    with pytest.raises(ConfigError, match="does not parse"):
        sl.Recipe.from_toml("quantization = {")


@pytest.mark.parametrize(
    ("config", "amount", "field", "expected"),
    [
        (sl.MagnitudePruning(sparsity=0.5, scope="global"), 0.9, "sparsity", sl.MagnitudePruning(sparsity=0.9, scope="global")),
        (sl.ChannelPruning(ratio=0.5, importance="l2", round_to=8, heads=True, ignored=("fc",)), 0.25, "ratio",
         sl.ChannelPruning(ratio=0.25, importance="l2", round_to=8, heads=True, ignored=("fc",))),
        (sl.LayerPruning(keep=3), 2, "keep", sl.LayerPruning(keep=2)),
        (sl.LayerPruning(ratio=0.5), 0.25, "ratio", sl.LayerPruning(ratio=0.25)),
    ],
    ids=lambda v: v.label if hasattr(v, "label") else None,
)
def test_with_amount_changes_only_the_amount_and_round_trips(config, amount, field, expected):
    changed = config.with_amount(amount)
    assert changed == expected and getattr(changed, field) == amount
    assert getattr(config, field) != amount  # the caller's config is left alone
    assert changed.with_amount(getattr(config, field)) == config
    recipe = sl.Recipe(pruning=changed)
    assert sl.Recipe.from_dict(recipe.to_dict()) == recipe and sl.Recipe.from_toml(recipe.to_toml()) == recipe


@pytest.mark.parametrize(
    ("config", "amount", "words"),
    [
        (sl.MagnitudePruning(sparsity=0.5), 1.0, ["sparsity=1.0", "[0, 1)"]),
        (sl.MagnitudePruning(sparsity=0.5), -0.1, ["sparsity=-0.1", "[0, 1)"]),
        (sl.MagnitudePruning(sparsity=0.5), True, ["sparsity=True", "[0, 1)"]),
        (sl.ChannelPruning(ratio=0.5), 1.5, ["ratio=1.5", "[0, 1)"]),
        (sl.ChannelPruning(ratio=0.5), "0.5", ["ratio='0.5'", "[0, 1)"]),
        (sl.LayerPruning(keep=3), 0.5, ["keep=0.5", "an integer in 1..10000"]),
        (sl.LayerPruning(keep=3), -1, ["keep=-1", "1..10000"]),
        (sl.LayerPruning(keep=3), 0, ["keep=0", "1..10000", "remove every block", "ratio="]),
        (sl.LayerPruning(keep=3), 2.0, ["keep=2.0", "an integer"]),
        (sl.LayerPruning(ratio=0.5), 1, ["ratio=1", "[0, 1)"]),
    ],
)
def test_with_amount_refuses_amounts_outside_the_field_range(config, amount, words):
    with pytest.raises(ConfigError) as info:
        config.with_amount(amount)
    for word in words:
        assert word in str(info.value)


def test_nm_pruning_has_no_continuous_amount():
    with pytest.raises(ConfigError) as info:
        sl.NMPruning(n=2, m=4).with_amount(0.75)
    message = str(info.value)
    for word in ["NMPruning", "0.75", "no continuous amount", "2:4 = 0.5", "NMPruning(n=..., m=...)", "MagnitudePruning(sparsity=...)"]:
        assert word in message


# ---------------------------------------------------------------- numbers: numpy scalars count, integers stay integers

# (config class, the fields given as numbers): each built once from numpy values and once from Python ones.
NUMBER_FIELDS = [
    (sl.PerChannel, dict(axis=1)),
    (sl.LinearQuantization, dict(bits=4)),
    (sl.KMeansQuantization, dict(bits=3, seed=7)),
    (sl.FixedPoint, dict(total_bits=8, frac_bits=5)),
    (sl.MagnitudePruning, dict(sparsity=0.5)),
    (sl.ChannelPruning, dict(ratio=0.25, round_to=8)),
    (sl.LayerPruning, dict(keep=2)),
    (sl.LayerPruning, dict(ratio=0.5)),
    (sl.NMPruning, dict(n=2, m=4)),
    (sl.quantization.Percentile, dict(percentile=99.5)),
    (sl.WeightOnly, dict(bits=8, block_size=64, embeddings=4)),
    (sl.LayerSetting, dict(bits=4, sparsity=0.5)),
]


def _numpy_forms(value):
    """A numpy scalar and a 0-d array holding ``value`` (float32 only where it is exact, as 0.25 and 0.5 are)."""
    import numpy as np

    if isinstance(value, int):
        return [np.int64(value), np.int32(value), np.array(value)]
    return [np.float64(value), np.array(value)] + ([np.float32(value)] if float(np.float32(value)) == value else [])


@pytest.mark.parametrize(("cls", "fields"), NUMBER_FIELDS, ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_numpy_numbers_make_the_same_config_as_python_ones(cls, fields):
    extra = {"name": "fc"} if cls is sl.LayerSetting else {}
    plain = cls(**extra, **fields)
    for key, value in fields.items():
        for form in _numpy_forms(value):
            made = cls(**extra, **{**fields, key: form})
            assert made == plain and hash(made) == hash(plain), (key, form)
            assert type(getattr(made, key)) is type(value)  # stored as the plain Python number
            assert made.to_dict() == plain.to_dict()


def test_a_recipe_of_numpy_numbers_round_trips_through_toml_like_a_plain_one():
    import numpy as np

    made = sl.Recipe(pruning=sl.MagnitudePruning(sparsity=np.float32(0.5)),
                     quantization=sl.LinearQuantization(bits=np.int64(4)), runtime=sl.Simulated(),
                     layers=(sl.LayerSetting(name="fc", bits=np.array(32)),))
    plain = sl.Recipe(pruning=sl.MagnitudePruning(sparsity=0.5), quantization=sl.LinearQuantization(bits=4),
                      runtime=sl.Simulated(), layers=(sl.LayerSetting(name="fc", bits=32),))
    assert made.to_toml() == plain.to_toml() and sl.Recipe.from_toml(made.to_toml()) == plain


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: sl.WeightOnly(bits=4.0), ["bits=4.0", "an integer", "4 or 8"]),
        (lambda: sl.WeightOnly(block_size=32.0), ["block_size=32.0", "an integer"]),
        (lambda: sl.WeightOnly(embeddings=4.0), ["embeddings=4.0", "the integer 4"]),
        (lambda: sl.LinearQuantization(bits=4.0), ["bits=4.0", "an integer in 2..16"]),
        (lambda: sl.KMeansQuantization(bits=True), ["bits=True", "an integer in 1..8"]),
        (lambda: sl.FixedPoint(total_bits=8.0), ["total_bits=8.0", "an integer"]),
        (lambda: sl.NMPruning(n=2.0, m=4), ["n=2.0", "an integer"]),
        (lambda: sl.ChannelPruning(ratio=0.5, round_to=8.0), ["round_to=8.0", "an integer"]),
        (lambda: sl.LayerPruning(keep=2.0), ["keep=2.0", "an integer"]),
        (lambda: sl.LayerSetting(name="fc", bits=8.0), ["bits=8.0", "an integer in 2..16, or 32"]),
        (lambda: sl.PerChannel(axis=0.0), ["axis=0.0", "an integer"]),
        (lambda: sl.MagnitudePruning(sparsity=True), ["sparsity=True", "[0, 1)"]),
        (lambda: sl.quantization.Percentile(percentile="99"), ["percentile='99'", "(50, 100]"]),
    ],
)
def test_floats_and_bools_where_integers_are_meant_are_refused_on_construction(make, words):
    with pytest.raises(ConfigError) as info:
        make()
    for word in words:
        assert word in str(info.value)
