"""A tiny Hugging Face ``BertModel`` (random init, no download) and inputs for it, for tests.

Same code path as a real encoder (transformers' ``BertModel``: keyword inputs, a ``ModelOutput``
with ``last_hidden_state`` and ``pooler_output``, an attention mask), small enough to export and
quantize in a fraction of a second. Attention is "eager": ONNX Runtime's transformer optimizer
only fuses the eager attention graph (FIELD-NOTES).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.zoo._deps import require

if TYPE_CHECKING:  # an optional package: imported at run time only inside the functions
    from transformers import BertConfig, BertModel

__all__ = ["tiny_bert", "tiny_bert_inputs", "TINY_BERT_CONFIG"]

TINY_BERT_CONFIG: dict[str, Any] = {
    "vocab_size": 1000,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 64,
    "pad_token_id": 0,
}


def _config(overrides: dict[str, Any]) -> BertConfig:
    transformers = require("transformers", "transformers", "tiny_bert()")
    known = set(transformers.BertConfig().to_dict()) | {"attn_implementation"}
    unknown = sorted(set(overrides) - known)
    if unknown:  # BertConfig would store a misspelt key silently and ignore it
        raise ConfigError(
            f"unknown BertConfig field(s) {unknown}; allowed: {sorted(k for k in known if not k.startswith('_'))}."
        )
    settings = {**TINY_BERT_CONFIG, "attn_implementation": "eager", **overrides}
    return transformers.BertConfig(**settings)


def tiny_bert(seed: int = 0, **config_overrides: Any) -> BertModel:
    """A seeded, randomly initialised ``transformers.BertModel`` in eval mode (139,456 parameters).

    Args:
        seed: initialisation seed; the caller's global RNG state is left as it was.
        **config_overrides: ``BertConfig`` fields replacing ``TINY_BERT_CONFIG``'s
            (vocab 1000, hidden 64, 2 layers, 4 heads, intermediate 128, 64 positions, eager attention).

    Raises:
        ConfigError: an override that is not a ``BertConfig`` field.
        MissingModelPackageError: transformers is not installed.

    Example:
        >>> from squeezelab.engine.zoo import tiny_bert, tiny_bert_inputs
        >>> out = tiny_bert()(**tiny_bert_inputs(batch=2, seq=8))
        >>> tuple(out.last_hidden_state.shape), tuple(out.pooler_output.shape)
        ((2, 8, 64), (2, 64))
    """
    config = _config(config_overrides)
    transformers = require("transformers", "transformers", "tiny_bert()")
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = transformers.BertModel(config)
    return model.eval()


def tiny_bert_inputs(batch: int = 8, seq: int = 16, seed: int = 0, vocab_size: int = 1000) -> dict[str, torch.Tensor]:
    """Keyword inputs for ``tiny_bert``: int64 ``input_ids``, ``attention_mask``, ``token_type_ids``.

    Row 0 is full length; the other rows hold between ``seq // 2`` and ``seq`` real tokens followed
    by padding (id 0, mask 0), so masking matters. Real tokens are drawn from ``1 .. vocab_size - 1``;
    the second half of each row's real tokens is segment 1.

    Example:
        >>> x = tiny_bert_inputs(batch=3, seq=6)
        >>> x["input_ids"].dtype, x["attention_mask"].sum(1).tolist()
        (torch.int64, [6, 6, 4])
    """
    for name, value in (("batch", batch), ("seq", seq), ("vocab_size", vocab_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "vocab_size" else 1):
            raise ConfigError(f"{name}={value!r} is not allowed; pass a positive int (vocab_size at least 2).")
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(seq // 2, 1), seq + 1, (batch,), generator=gen)
    lengths[0] = seq
    positions = torch.arange(seq).unsqueeze(0)  # (1, seq)
    attention_mask = (positions < lengths.unsqueeze(1)).long()  # (batch, seq)
    input_ids = torch.randint(1, vocab_size, (batch, seq), generator=gen) * attention_mask
    token_type_ids = ((positions >= (lengths.unsqueeze(1) + 1) // 2).long()) * attention_mask
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
