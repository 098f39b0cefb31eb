"""Keep one copy of each engine module across the plugin's in-process (pytester) runs.

pytester unloads, after each run, the modules the run imported. ``squeezelab`` and
``squeezelab.engine`` themselves survive (tests/conftest.py imports them) and cache each public
name on first use, so a class first imported inside one run (``sl.Int8Dynamic``) would be stale in
the next, while the engine re-imports a fresh one: two ``Int8Dynamic`` classes, and the int8
registry keyed by type misses. Resolving every public name here, outside any run, loads those
modules once for the session.

Every test here also gets a fresh squeezelab cache folder and no ``$GITHUB_STEP_SUMMARY``: the gates'
in-process runs must not read or write the user's cache, or a CI job's real step summary.
"""

from __future__ import annotations

import pytest

import squeezelab

for _name in squeezelab.__all__:
    getattr(squeezelab, _name)


@pytest.fixture(autouse=True)
def _gate_files_stay_in_the_test(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The gate's baseline cache in a fresh folder, and no CI step summary: in-process runs must not touch the real ones."""
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path_factory.mktemp("squeezelab-cache")))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
