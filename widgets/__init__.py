"""squeezelab.widgets: JupyterLab explorer and HTML reports (planned: issue 6).

Nothing is exported yet; the package exists so the layout of the design map
installs as one namespace.
"""

__all__: list[str] = []
