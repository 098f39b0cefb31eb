"""What the browser tests share: Debian's chromium, the flags that work headless here, and the skip rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Flags measured to work headless on these machines (shared/FIELD-NOTES.md), plus /dev/shm relief.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def require_browser() -> None:
    """Skip without chromium, unless SQUEEZELAB_REQUIRE_BROWSER=1 (CI): then fail, naming the fix."""
    if CHROMIUM.exists():
        return
    if os.environ.get("SQUEEZELAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SQUEEZELAB_REQUIRE_BROWSER=1 but {CHROMIUM} is missing (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} is not installed (set SQUEEZELAB_REQUIRE_BROWSER=1 to make this a failure)")
