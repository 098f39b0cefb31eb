"""The int8 search tries how layers are quantized (fidelity steps, calibration) before keeping any float."""

from __future__ import annotations

import torch
from torch import nn

import squeezelab as sl
from squeezelab.engine.explore.algorithm_stage import calibration_options, choose_algorithms, transform_options
from squeezelab.engine.zoo import tiny_bert, tiny_bert_inputs


def test_a_transformer_is_offered_smoothing_strengths_the_default_first():
    model = tiny_bert(seed=0)
    static = transform_options(model, sl.Int8Static(), has_calibration=True)
    assert static[0] == (sl.Smoothing(),)  # what compress applies by default
    assert set(static) == {(sl.Smoothing(),), (), (sl.Smoothing(alpha=0.5),), (sl.Smoothing(alpha=0.8),)}
    assert transform_options(model, sl.Int8Dynamic(), has_calibration=False) == [()]  # nothing to measure with
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    assert () in transform_options(cnn, sl.Int8Static(), has_calibration=True)
    assert all(not any(isinstance(s, sl.Smoothing) for s in steps) for steps in transform_options(cnn, sl.Int8Static(), True))


def test_static_int8_is_offered_every_calibration_its_own_first():
    options = calibration_options(sl.Int8Static(calibration="entropy", per_channel=False))
    assert [rt.calibration.label for rt in options] == ["entropy", "minmax", "percentile99.999"]
    assert all(rt.per_channel is False for rt in options)  # only the calibration varies
    assert calibration_options(sl.Int8Dynamic()) == [sl.Int8Dynamic()]


def _stage(values: dict[str, float], verified: dict[str, tuple[bool, float]]):
    """The stage on modelled measurements: a probe's value by recipe label; all-data rows likewise."""
    probes, checks = [], []

    def probe(recipe, move):
        probes.append(recipe.label)
        return {"value": values[recipe.label]}

    def verify(recipe, move):
        checks.append(recipe.label)
        if verified[recipe.label] is None:  # the time budget ran out before this one
            return None
        accepted, value = verified[recipe.label]
        return {"accepted": accepted, "value": value}

    def better(a, b):
        return (a["accepted"], a["value"]) > (b["accepted"], b["value"])

    choice = choose_algorithms(tiny_bert(seed=0), sl.Int8Static(), True, probe, verify, better)
    return choice, probes, checks


def _labels():
    base = sl.Int8Static()
    smooth = (sl.Smoothing(),)
    return {
        "auto": sl.Recipe(runtime=base, transforms=smooth).label,
        "off": sl.Recipe(runtime=base, transforms=()).label,
        "s05": sl.Recipe(runtime=base, transforms=(sl.Smoothing(alpha=0.5),)).label,
        "s08": sl.Recipe(runtime=base, transforms=(sl.Smoothing(alpha=0.8),)).label,
        "s05-pct": sl.Recipe(runtime=sl.Int8Static(calibration="percentile"), transforms=(sl.Smoothing(alpha=0.5),)).label,
        "s05-ent": sl.Recipe(runtime=sl.Int8Static(calibration="entropy"), transforms=(sl.Smoothing(alpha=0.5),)).label,
    }


def test_the_stage_varies_steps_then_calibration_and_keeps_the_best_verified():
    names = _labels()
    values = {names["auto"]: 0.90, names["off"]: 0.80, names["s05"]: 0.95, names["s08"]: 0.91,
              names["s05-pct"]: 0.97, names["s05-ent"]: 0.93}
    verified = {names["s05-pct"]: (True, 0.99), names["auto"]: (False, 0.90)}
    choice, probes, checks = _stage(values, verified)
    assert probes[:4] == [names["auto"], names["off"], names["s05"], names["s08"]]  # the steps first, default first
    assert probes[4:] == [names["s05-pct"], names["s05-ent"]]  # then the calibrations, with the best steps
    assert checks == [names["s05-pct"], names["auto"]]  # the best probe and the default, on all the data
    assert choice.recipe.label == names["s05-pct"] and len(choice.tried) == 6


def test_the_default_is_kept_when_the_best_probe_does_not_hold_on_all_the_data():
    names = _labels()
    values = {names["auto"]: 0.90, names["off"]: 0.80, names["s05"]: 0.95, names["s08"]: 0.91,
              names["s05-pct"]: 0.94, names["s05-ent"]: 0.93}
    verified = {names["s05"]: (True, 0.97), names["auto"]: (True, 0.98)}
    choice, _, _ = _stage(values, verified)
    assert choice.recipe.label == names["auto"] and "not on all the data" in choice.why


def test_a_verified_best_probe_is_kept_when_the_default_ran_out_of_time():
    """The search must return an accepted int8 row it measured, not fall back to fp32 (seen under load)."""
    names = _labels()
    values = {names["auto"]: 0.90, names["off"]: 0.80, names["s05"]: 0.95, names["s08"]: 0.91,
              names["s05-pct"]: 0.94, names["s05-ent"]: 0.93}
    verified = {names["s05"]: (True, 0.97), names["auto"]: None}
    choice, _, _ = _stage(values, verified)
    assert choice.recipe.label == names["s05"] and "time budget" in choice.why
    verified[names["s05"]] = (False, 0.97)  # measured but over the drop budget: the default stays
    choice, _, _ = _stage(values, verified)
    assert choice.recipe.label == names["auto"] and "time budget" in choice.why


def test_an_int8_search_records_the_algorithms_it_tried(tmp_path):
    model = tiny_bert(seed=0)
    inputs = tiny_bert_inputs(batch=48, seq=10, seed=5)
    calibration = {k: v[:16] for k, v in inputs.items()}
    data = ({k: v[16:] for k, v in inputs.items()}, None)
    result = sl.search(model, data, runtime=sl.Int8Static(), max_accuracy_drop=0.05, time_budget_s=600,
                       calibration_data=calibration, output="last_hidden_state", cache=tmp_path, progress=False)
    record = result.details["algorithms"]
    assert len(record["tried"]) >= 6 and record["chosen"] in record["tried"]
    assert result.trail["move"].str.startswith("algorithms:").sum() >= 6
    chosen = result.recipe
    assert isinstance(chosen.runtime, sl.Int8Static) and chosen.transforms is not None  # explicit steps: reproducible
    if chosen.layers == ():  # all int8 held: the answer is the algorithm the stage chose, not an equal-size default
        assert chosen.label == record["chosen"]
    with torch.no_grad():
        assert result.row["value"] > 0.9  # cosine to fp32 of a tiny random BERT in int8
