"""Keep one copy of each engine module across the plugin's in-process (pytester) runs.

pytester unloads, after each run, the modules the run imported. ``squeezelab`` and
``squeezelab.engine`` themselves survive (tests/conftest.py imports them) and cache each public
name on first use, so a class first imported inside one run (``sl.Int8Dynamic``) would be stale in
the next, while the engine re-imports a fresh one: two ``Int8Dynamic`` classes, and the int8
registry keyed by type misses. Resolving every public name here, outside any run, loads those
modules once for the session. The same holds for ONNX Runtime's quantization tools (their
``QuantizationMode`` enum, imported afresh inside one run, no longer equals the one the engine holds:
"unsupported quantization mode IntegerOps") and for what the fixture imports on first use.

Every test here also gets a fresh squeezelab cache folder and no ``$GITHUB_STEP_SUMMARY``: the gates'
in-process runs must not read or write the user's cache, or a CI job's real step summary.
"""

from __future__ import annotations

import onnxruntime.quantization  # noqa: F401  (its enums are compared by identity: a copy re-imported in a run breaks them)
import pytest

import squeezelab
import squeezelab.checks.fixture  # noqa: F401  (the engine modules the fixture loads on first use, loaded once here)

for _name in squeezelab.__all__:
    getattr(squeezelab, _name)


@pytest.fixture(autouse=True)
def _gate_files_stay_in_the_test(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The gate's baseline cache in a fresh folder, and no CI step summary: in-process runs must not touch the real ones."""
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path_factory.mktemp("squeezelab-cache")))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
