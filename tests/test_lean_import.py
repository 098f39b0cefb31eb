"""`import squeezelab` stays light: no onnxruntime, onnx, plotly, ipywidgets or scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys


HEAVY = ("torch", "onnxruntime", "onnx", "plotly", "ipywidgets", "sklearn", "pandas")


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_squeezelab_and_the_pytest_plugin_load_nothing_heavy():
    # The pytest plugin loads in every pytest run of a project that installs squeezelab.
    assert _loaded_after("import squeezelab, squeezelab.widgets, squeezelab.checks.plugin") == []
    # The public sub-modules too, and the errors most often caught.
    assert _loaded_after("import squeezelab.errors, squeezelab.metrics, squeezelab.quantization, squeezelab.pruning, "
                         "squeezelab.explore, squeezelab.models; from squeezelab.errors import ConfigError, DataError") == []
    assert _loaded_after("import squeezelab as sl; sl.Recipe(runtime=sl.Int8Static())") == []


def test_using_the_engine_loads_torch_but_not_onnxruntime():
    assert _loaded_after("import squeezelab as sl; sl.compress") == ["torch"]


def test_public_names_resolve():
    import squeezelab as sl

    import types

    missing = [name for name in sl.__all__ if not hasattr(sl, name)]
    assert missing == []
    # A submodule named like the function it holds would shadow it in a lazy package.
    modules = [name for name in sl.__all__ if isinstance(getattr(sl, name), types.ModuleType)]
    assert modules == []
    assert issubclass(sl.errors.CalibrationError, sl.SqueezeError)


def test_widget_names_resolve_to_functions_even_after_their_modules_load():
    # Importing every submodule first is what makes a same-named module shadow a lazy name.
    code = (
        "import importlib, pkgutil, types, squeezelab, squeezelab.widgets as w, squeezelab.engine as e\n"
        "from squeezelab._public import PUBLIC\n"
        "for pkg in (w, e):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "shown = [w] + [importlib.import_module(m) for m in PUBLIC]\n"
        "bad = [f'{p.__name__}.{n}' for p in shown for n in p.__all__ if isinstance(getattr(p, n), types.ModuleType)]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
