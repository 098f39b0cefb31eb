"""The notebooks in notebooks/ run top to bottom in a fresh kernel, and are stored without outputs.

Each notebook runs headless with nbclient in a kernel of *this* interpreter (the venv's), in a
temporary working folder, with ``SQUEEZELAB_CACHE`` pointing at a temporary cache. The kernel
spec is written to a temporary folder from ``sys.executable``, so neither a user-level kernelspec
install nor a ``python3`` spec of some other Python on the machine can change which kernel runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
# Appended in memory after a notebook's own cells: checks that need the kernel's state.
EXTRA_CHECKS = {
    # The explorer measures its first point on a background thread: wait for it, then its panel
    # must show that point's figures (an error in the thread would leave it empty).
    "explore.ipynb": "ex.wait()\nassert ex.panel.value, 'the explorer drew no figures for its first point'",
    # The MiniLM explorer opens on swept (cached) points, every figure named after the cosine.
    "transformer.ipynb": (
        "assert ex.error is None and ex.current_point.cached, (ex.error, ex.current_point)\n"
        "assert ex.current_point.metric == 'cosine to fp32' and 'cosine to fp32' in ex.panel.value\n"
        "assert ex.figure.layout.yaxis.title.text == 'cosine to fp32' and len(ex.sweep()) == 4"
    ),
}


def test_the_notebooks_exist():
    assert {p.name for p in ALL} >= {"quickstart.ipynb", "explore.ipynb", "ci_budgets.ipynb", "transformer.ipynb"}


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    # JupyterLab's "save widget state" would store every widget model of a run in the file.
    assert "widgets" not in nb.metadata, f"{path.name}: clear the saved widget state"
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs or an execution count; clear them"
    assert any(cell.cell_type == "markdown" for cell in nb.cells)


def _kernel_manager(spec_root: Path):
    """A KernelManager whose only ``python3`` spec starts ``sys.executable -m ipykernel_launcher``."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    write_kernel_spec(str(spec_root / "python3"))
    specs = KernelSpecManager(kernel_dirs=[str(spec_root)])
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_runs_without_errors(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ORT_DISABLE_TELEMETRY", "1")
    nb = nbformat.read(path, as_version=4)
    if path.name in EXTRA_CHECKS:
        nb.cells.append(nbformat.v4.new_code_cell(EXTRA_CHECKS[path.name]))
    # Appended in memory only: proves the kernel is this interpreter, not some other python3.
    nb.cells.append(
        nbformat.v4.new_code_cell(
            f"import sys\nassert sys.prefix == {sys.prefix!r}, (sys.prefix, sys.executable)"
        )
    )
    spec_root = tmp_path / "kernels"
    spec_root.mkdir()
    km = _kernel_manager(spec_root)
    client = NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(work)}},
    )
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:  # the message holds the cell source and the traceback
        pytest.fail(f"{path.name} failed:\n{exc}", pytrace=False)
    finally:
        if km.has_kernel:  # nbclient leaves a kernel it was handed running
            km.shutdown_kernel(now=True)
    print(f"{path.name}: ran in {time.perf_counter() - start:.1f} s")
    errors = [
        (i, out.get("ename"), out.get("evalue"))
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors, f"{path.name}: cells raised {errors}"
