"""search(runtime=WeightOnly(), objective="size"): the rounding method first, then bytes."""

from __future__ import annotations

import torch
from torch import nn

import squeezelab as sl
from squeezelab.engine.explore.weight_only_search import weight_only_candidates


def test_candidates_go_by_file_size_and_try_the_most_faithful_method_first():
    groups = weight_only_candidates(sl.WeightOnly(block_size=32), has_calibration=True)
    sizes = [(g[0].bits, g[0].block_size) for g in groups]
    assert sizes == [(4, 32), (4, 16), (8, 32)]  # the asked block, smaller blocks, then 8 bits
    assert [rt.method for rt in groups[0]] == ["gptq", "hqq", "rtn"]
    assert [rt.method for rt in groups[-1]] == ["gptq", "rtn"]  # HQQ has no 8-bit kernel
    without = weight_only_candidates(sl.WeightOnly(block_size=32, symmetric=True), has_calibration=False)
    assert [rt.method for rt in without[0]] == ["rtn"]  # no data: no GPTQ; symmetric: no HQQ
    assert all(rt.compute != "int8" for g in weight_only_candidates(sl.WeightOnly(compute="int8"), True) for rt in g
               if rt.method == "hqq")


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64), nn.GELU(), nn.Linear(64, 10)).eval()


def test_a_weight_only_size_search_returns_the_first_size_a_method_holds(tmp_path):
    model = _mlp()
    x = torch.randn(96, 64, generator=torch.Generator().manual_seed(1))
    data, calibration = (x[32:], None), x[:32]
    loose = sl.search(model, data, runtime=sl.WeightOnly(), objective="size", max_accuracy_drop=0.5,
                      calibration_data=calibration, metric="cosine_to_baseline", cache=tmp_path, progress=False)
    assert loose.recipe.runtime.method == "gptq" and loose.recipe.runtime.block_size == 32  # the first candidate held
    assert len(loose.trail) == 1 and loose.details["algorithms"]["chosen"] == loose.recipe.label
    strict = sl.search(model, data, runtime=sl.WeightOnly(), objective="size", max_accuracy_drop=0.0, confidence=0,
                       calibration_data=calibration, metric="cosine_to_baseline", cache=tmp_path, progress=False)
    assert strict.recipe == sl.Recipe() and len(strict.trail) == 3 + 3 + 2  # nothing is lossless: every candidate tried
    assert strict.stopped.startswith("converged")
