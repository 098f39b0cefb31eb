"""One clean-up every graph rewrite ends with: drop the initializers no node reads any more.

The Gemm-to-MatMul rewrite (``weight_only``), GPTQ's MatMulNBits nodes (``gptq_graph``) and the merged
smoothing scales (``scale_folding``) each leave weights behind that would otherwise stay in the file.
"""

from __future__ import annotations

from typing import Any

__all__ = ["drop_unused_initializers"]


def drop_unused_initializers(graph: Any) -> None:
    """Remove, in place, the initializers of ``graph`` that no node and no graph output reads."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    if len(kept) != len(graph.initializer):
        graph.ClearField("initializer")
        graph.initializer.extend(kept)
