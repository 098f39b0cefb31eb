"""squeezelab.checks: the ``pytest --compress-budget`` plugin (planned: issue 3).

Nothing is exported yet; the package exists so the layout of the design map
installs as one namespace.
"""

__all__: list[str] = []
