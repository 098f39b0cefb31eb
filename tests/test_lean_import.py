"""`import squeezelab` stays light: no onnxruntime, onnx, plotly, ipywidgets or scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys


def test_import_squeezelab_does_not_load_heavy_or_optional_packages():
    code = (
        "import sys, json, squeezelab, squeezelab.widgets, squeezelab.checks; "
        "print(json.dumps(sorted(m for m in ('onnxruntime', 'onnx', 'plotly', 'ipywidgets', 'sklearn', 'pandas') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_public_names_resolve():
    import squeezelab as sl

    missing = [name for name in sl.__all__ if not hasattr(sl, name)]
    assert missing == []
    assert issubclass(sl.CalibrationError, sl.SqueezeError)
