"""Lottery tickets: iterative magnitude pruning with weight rewinding (Frankle et al. 2019, 2020).

Train; prune the smallest-magnitude ``fraction`` of the remaining weights
(globally); rewind the surviving weights to their values at ``rewind_step``
of the first training run (rewinding to an early iteration rather than to
initialisation is what makes it work on deeper networks); train again;
repeat. After ``rounds`` rounds the sparsity is ``1 - (1 - fraction) ** rounds``.

Examples:
    >>> [round(ticket_sparsity(0.2, r), 3) for r in (1, 2, 5)]
    [0.2, 0.36, 0.672]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from squeezelab.engine.core.copying import copy_model
from squeezelab.engine.core.errors import ConfigError
from squeezelab.engine.pruning.prune import weight_mask, prune_, weight_sparsity
from squeezelab.engine.core.pruners import MagnitudePruning
from squeezelab.engine.train.finetune import finetune

__all__ = ["LotteryTicket", "find_lottery_ticket", "rewind_", "ticket_sparsity"]


def ticket_sparsity(fraction: float, rounds: int) -> float:
    """Sparsity after ``rounds`` rounds that each remove ``fraction`` of the remaining weights."""
    return 1.0 - (1.0 - fraction) ** rounds


@dataclass
class LotteryTicket:
    """The trained sparse network, the rewind point it was trained from, and the sparsity per round."""

    model: nn.Module
    rewind_state: dict[str, torch.Tensor]
    sparsities: list[float] = field(default_factory=list)


def _unmasked_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights as stored (for masked layers: the original tensor under the parametrization)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith(".mask")}


def find_lottery_ticket(
    model: nn.Module,
    train_data: Any,
    *,
    rounds: int = 3,
    fraction: float = 0.2,
    epochs: int = 1,
    rewind_step: int = 0,
    seed: int = 0,
    **finetune_kwargs: Any,
) -> LotteryTicket:
    """Iterative magnitude pruning with rewinding; ``model`` (untrained or not) is not changed.

    Args:
        rounds: prune-rewind-train rounds after the first training run.
        fraction: share of the *remaining* weights pruned each round, in (0, 1).
        epochs: training epochs per run.
        rewind_step: optimizer step of the first run whose weights survivors rewind to
            (0 = the initial weights, the original lottery ticket).
        finetune_kwargs: passed to ``finetune`` (optimizer, loss, batch_size, ...).
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds={rounds!r} must be a positive integer.")
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"fraction={fraction!r} must be in (0, 1): the share of remaining weights pruned per round.")
    if isinstance(rewind_step, bool) or not isinstance(rewind_step, int) or rewind_step < 0:
        raise ConfigError(f"rewind_step={rewind_step!r} must be a non-negative integer.")
    if any(weight_mask(m) is not None for m in model.modules()):
        raise ConfigError("the model already carries pruning masks; a lottery ticket search starts from a dense model.")
    work = copy_model(model)
    snapshot: dict[str, torch.Tensor] = {}
    if rewind_step == 0:
        snapshot = _unmasked_state(work)

    def capture(step: int, m: nn.Module) -> None:
        if step == rewind_step:
            snapshot.update(_unmasked_state(m))

    trained = finetune(work, train_data, epochs=epochs, seed=seed, on_step=capture, **finetune_kwargs)
    if not snapshot:
        raise ConfigError(f"rewind_step={rewind_step} was never reached: the first run had fewer steps.")
    sparsities = []
    for r in range(1, rounds + 1):
        target = ticket_sparsity(fraction, r)
        prune_(trained, MagnitudePruning(sparsity=target, scope="global"))  # masks accumulate
        rewind_(trained, snapshot)
        sparsities.append(weight_sparsity(trained))
        trained = finetune(trained, train_data, epochs=epochs, seed=seed + r, **finetune_kwargs)
    return LotteryTicket(model=trained, rewind_state=snapshot, sparsities=sparsities)


def rewind_(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Set every weight back to ``state`` (keys of an unmasked model), keeping the masks."""
    with torch.no_grad():
        for name, module in model.named_modules():
            for pname, param in list(module.named_parameters(recurse=False)):
                key = f"{name}.{pname}" if name else pname
                if key in state:
                    param.copy_(state[key])
            if weight_mask(module) is not None:
                original = module.parametrizations.weight.original
                original.copy_(state[f"{name}.weight" if name else "weight"])
