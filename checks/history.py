"""Saved gate results: one JSON file a CI job keeps, so a later run can be judged against it.

``pytest --compress-budget --compress-budget-save=gates.json`` (or ``squeezelab gate --save``) writes
every gate's result: the recipe, the metric, the per-sample scores of baseline and candidate (as
``Point.to_row()`` packs them), the file bytes, the speedup with its interval, the data's
fingerprint, the CPU and the library versions::

    {"format": "squeezelab gate results", "format_version": 1, "created": "2026-12-07T22:40:00Z",
     "squeezelab": "0.1.0", "versions": {"torch": "2.5.1", ...},
     "cpu": {"name": "AMD EPYC 7B13", "int8_flags": ["avx2", "avx512_vnni", ...], "arch": "x86_64"},
     "budget_source": "pyproject.toml",
     "gates": {"tests/test_model.py::test_int8": {"baseline": {...}, "candidate": {...},
                                                  "data_fingerprint": "…", "timing": null, ...}}}

A gate is found again by its key: the test's node id (``#2``, ``#3`` ... for a test's later checks),
or ``squeezelab gate NAME`` for the command. ``SavedResults.load`` refuses a missing, unreadable or
malformed file with a ``SavedResultsError`` that says what is wrong and how to write a good one.
Light to import (no torch): the plugin loads saved results when pytest starts.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from squeezelab._version import __version__
from squeezelab.engine.core.cpu import cpu_flags, cpu_name
from squeezelab.engine.core.errors import SqueezeError

__all__ = ["SavedResults", "SavedResultsError", "FORMAT", "FORMAT_VERSION", "machine", "same_cpu", "cpu_text",
           "results_document"]

FORMAT = "squeezelab gate results"
FORMAT_VERSION = 1
# The flags that decide which int8 kernels ONNX Runtime runs (and so how fast int8 is against fp32).
_INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512vnni", "avx_vnni", "amx_int8", "asimddp")
_PACKAGES = ("torch", "onnx", "onnxruntime", "numpy")


class SavedResultsError(SqueezeError, ValueError):
    """A saved gate results file is missing, unreadable or malformed."""


def machine() -> dict[str, Any]:
    """The CPU that measured this run: its name, the flags that decide its int8 kernels, its architecture."""
    return {"name": cpu_name(), "int8_flags": sorted(set(_INT8_FLAGS) & cpu_flags()), "arch": platform.machine()}


def same_cpu(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two recorded CPUs are the same kind (name, int8 flags, architecture): speed compares only then."""
    keys = ("name", "int8_flags", "arch")
    return all(a.get(k) == b.get(k) for k in keys)


def cpu_text(cpu: dict[str, Any]) -> str:
    """``'AMD EPYC 7B13' (x86_64, avx2 avx512_vnni)``."""
    flags = " ".join(cpu.get("int8_flags") or []) or "no int8 dot-product flags"
    return f"{cpu.get('name')!r} ({cpu.get('arch')}, {flags})"


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def results_document(records: list[dict[str, Any]], budget_source: str | None) -> dict[str, Any]:
    """The saved file's content: every gate's record under its key, and what measured them."""
    gates = {record["key"]: record for record in sorted(records, key=lambda r: r["key"])}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "squeezelab": __version__,
        "versions": _versions(),
        "cpu": machine(),
        "budget_source": budget_source,
        "gates": gates,
    }


def write_results(path: Path, document: dict[str, Any]) -> None:
    """Write the saved results as indented JSON (a file a team may commit, so diffs stay readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class SavedResults:
    """A saved run, read and checked: its CPU, versions and every gate's record by key."""

    source: str
    cpu: dict[str, Any]
    created: str
    squeezelab: str
    gates: dict[str, dict[str, Any]]

    def entry(self, key: str) -> dict[str, Any] | None:
        return self.gates.get(key)

    @classmethod
    def load(cls, path: str | Path) -> SavedResults:
        """Read ``path``; ``SavedResultsError`` naming the problem when it is missing or not a saved run."""
        path = Path(path)
        hint = "write one with pytest --compress-budget --compress-budget-save=PATH (or squeezelab gate --save PATH)"
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise SavedResultsError(f"saved gate results {str(path)!r} {what}; {hint}.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise SavedResultsError(f"cannot read saved gate results {str(path)!r}: {exc}; {hint}.") from None
        except json.JSONDecodeError as exc:
            raise SavedResultsError(f"saved gate results {str(path)!r} is not JSON ({exc}); {hint}.") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SavedResultsError(
                f"{str(path)!r} is not a saved gate results file (it has no \"format\": \"{FORMAT}\"); {hint}."
            )
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise SavedResultsError(
                f"{str(path)!r} has format_version {version!r}; this squeezelab ({__version__}) reads version "
                f"{FORMAT_VERSION}: save the run again with this version."
            )
        gates, cpu = data.get("gates"), data.get("cpu")
        if not isinstance(gates, dict) or not isinstance(cpu, dict):
            raise SavedResultsError(f"{str(path)!r} lacks its \"gates\" or \"cpu\" table; {hint}.")
        for key, record in gates.items():
            _check_record(str(path), key, record, hint)
        return cls(str(path), cpu, str(data.get("created")), str(data.get("squeezelab")), gates)


def _check_record(source: str, key: str, record: Any, hint: str) -> None:
    """Each gate's record must hold what a comparison reads: its candidate's row (metric, value, bytes)."""
    candidate = record.get("candidate") if isinstance(record, dict) else None
    problem = None
    if not isinstance(candidate, dict):
        problem = "has no \"candidate\" row"
    elif not isinstance(candidate.get("size_bytes"), int) or not isinstance(candidate.get("metric"), str):
        problem = "has a candidate row without an integer \"size_bytes\" and a \"metric\" name"
    elif not isinstance(candidate.get("value"), (int, float, type(None))):
        problem = f"has a candidate \"value\" of {candidate.get('value')!r}, not a number"
    elif not isinstance(record.get("data_fingerprint"), (str, type(None))):
        problem = "has a \"data_fingerprint\" that is not a string"
    if problem:
        raise SavedResultsError(f"saved gate results {source!r}: gate {key!r} {problem}; {hint}.")
