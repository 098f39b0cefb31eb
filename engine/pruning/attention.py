"""Hugging Face self-attention modules, as structured pruning sees them.

A BERT-family self-attention module (``BertSelfAttention`` and its RoBERTa, ELECTRA, ...
copies) holds three ``nn.Linear`` projections ``query``, ``key`` and ``value`` whose outputs
are split into ``num_attention_heads`` heads of ``attention_head_size`` each. Torch-Pruning
removes whole heads when told each projection's head count (its ``num_heads`` argument);
afterwards the module's own counters must say how many heads are left, or a later reshape
(``view(..., num_heads, head_size)`` in older transformers) would split the rows wrongly.

Recognised by structure, not by class name, so every copy of the BERT attention code qualifies.

PyTorch's own ``nn.MultiheadAttention`` (inside ``nn.TransformerEncoderLayer`` and friends) is not
one of them: its fused ``in_proj_weight`` (3 x embed_dim rows) and its forward require
``num_heads x head_dim == embed_dim``, so no head can go without narrowing the model's width, and
Torch-Pruning's pruner for it narrows every head instead (embed_dim 32 -> 16, 4 heads -> 4).
``refuse_torch_head_pruning`` says so when heads are asked of such a module.
"""

from __future__ import annotations

from collections.abc import Collection

from torch import nn

from squeezelab.engine.core.errors import StructuredPruningError

__all__ = ["attention_modules", "head_counts", "sync_head_counts_", "torch_attention_modules", "refuse_torch_head_pruning"]


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


def torch_attention_modules(model: nn.Module) -> dict[str, nn.MultiheadAttention]:
    """``{name: module}`` of the ``torch.nn.MultiheadAttention`` modules of ``model``, in model order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}


def refuse_torch_head_pruning(model: nn.Module, kept: Collection[nn.Module]) -> None:
    """Raise ``StructuredPruningError`` when heads are asked and ``model`` holds an ``nn.MultiheadAttention``
    that is not ``kept`` whole (``ChannelPruning(ignored=...)``): its heads cannot be removed whole.
    """
    names = [name for name, m in torch_attention_modules(model).items() if m not in kept]
    if not names:
        return
    first = model.get_submodule(names[0])
    others = f" (and {len(names) - 1} more: {names[1:4]})" if len(names) > 1 else ""
    raise StructuredPruningError(
        f"ChannelPruning(heads=True) cannot remove whole heads of {names[0]!r}{others}: it is a "
        f"torch.nn.MultiheadAttention ({first.num_heads} heads of {first.head_dim}), whose fused in_proj_weight "
        f"and forward need num_heads x head_dim == embed_dim ({first.embed_dim}), so removing heads would narrow "
        "the model's width instead of its head count. Keep it whole with ignored="
        f"{names!r} (heads=True then prunes the heads of Hugging Face attention modules only), or pass "
        "heads=False to remove channels and neurons only."
    )
