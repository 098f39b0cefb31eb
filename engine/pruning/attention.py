"""Hugging Face self-attention modules, as structured pruning sees them.

A BERT-family self-attention module (``BertSelfAttention`` and its RoBERTa, ELECTRA, ...
copies) holds three ``nn.Linear`` projections ``query``, ``key`` and ``value`` whose outputs
are split into ``num_attention_heads`` heads of ``attention_head_size`` each. Torch-Pruning
removes whole heads when told each projection's head count (its ``num_heads`` argument);
afterwards the module's own counters must say how many heads are left, or a later reshape
(``view(..., num_heads, head_size)`` in older transformers) would split the rows wrongly.

Recognised by structure, not by class name, so every copy of the BERT attention code qualifies.
"""

from __future__ import annotations

from torch import nn

__all__ = ["attention_modules", "head_counts", "sync_head_counts_"]


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` of the BERT-style self-attention modules of ``model``, in model order."""
    found = {}
    for name, module in model.named_modules():
        projections = [getattr(module, p, None) for p in ("query", "key", "value")]
        heads = getattr(module, "num_attention_heads", None)
        if all(isinstance(p, nn.Linear) for p in projections) and isinstance(heads, int) and heads > 0:
            found[name] = module
    return found


def head_counts(attention: dict[str, nn.Module]) -> dict[nn.Module, int]:
    """Torch-Pruning's ``num_heads``: each projection of each attention module -> its head count."""
    return {getattr(m, p): m.num_attention_heads for m in attention.values() for p in ("query", "key", "value")}


def sync_head_counts_(attention: dict[str, nn.Module], remaining: dict[nn.Module, int]) -> None:
    """Set each module's head counters to the heads Torch-Pruning left (``remaining``, by projection)."""
    for module in attention.values():
        heads = remaining.get(module.query, module.num_attention_heads)
        module.num_attention_heads = heads
        module.all_head_size = module.query.out_features  # heads x attention_head_size (head size is kept)
