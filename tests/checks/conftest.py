"""Keep one copy of each engine module across the plugin's in-process (pytester) runs.

pytester unloads, after each run, the modules the run imported. ``squeezelab`` and
``squeezelab.engine`` themselves survive (tests/conftest.py imports them) and cache each public
name on first use, so a class first imported inside one run (``sl.Int8Dynamic``) would be stale in
the next, while the engine re-imports a fresh one: two ``Int8Dynamic`` classes, and the int8
registry keyed by type misses. Resolving every public name here, outside any run, loads those
modules once for the session.
"""

from __future__ import annotations

import squeezelab

for _name in squeezelab.__all__:
    getattr(squeezelab, _name)
