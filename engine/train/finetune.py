"""Fine-tuning, and gradual magnitude pruning during it (Zhu & Gupta 2017).

``finetune(model, train_data, ...)`` trains a copy of ``model`` and returns it:
deterministic for a given ``seed`` (the global RNG state is forked and
restored), with an optional progress bar. Pruning masks registered by
``prune``/``prune_`` are parametrizations, so pruned weights stay zero while
the rest learns (post-training prune + fine-tune).

``GradualPruning`` raises sparsity during training on the polynomial-decay
schedule TensorFlow Model Optimization uses:
``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** 3``, applied every
``frequency`` steps between ``begin_step`` and ``end_step``.

Examples:
    >>> schedule = GradualPruning(final_sparsity=0.9, begin_step=0, end_step=100, frequency=10)
    >>> [round(schedule.sparsity_at(t), 3) for t in (0, 50, 100, 200)]
    [0.0, 0.787, 0.9, 0.9]
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezelab.engine.core.arguments import as_integer
from squeezelab.engine.core.copying import copy_model
from squeezelab.engine.core.errors import ConfigError, DataError, ModelError
from squeezelab.engine.core.inputs import Inputs, is_array
from squeezelab.engine.core.outputs import OutputSelector, check_selector, select_output
from squeezelab.engine.core.labels import as_class_indices
from squeezelab.engine.measurement.latency import torch_threads
from squeezelab.engine.pruning.prune import prune_
from squeezelab.engine.core.layers import FilterFn
from squeezelab.engine.core.pruners import MagnitudePruning
from squeezelab.engine.core.samples import Samples, is_pair as _pair_form, one_batch, read_samples

__all__ = ["Distillation", "GradualPruning", "Training", "finetune"]

OptimizerFactory = Callable[[Any], torch.optim.Optimizer]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class Training:
    """How ``finetune`` trains: one value to keep, share between runs and change with ``replace``.

    Args:
        epochs: passes over the training data.
        batch_size: samples per optimizer step.
        optimizer: ``optimizer(parameters) -> torch.optim.Optimizer``; ``None``: Adam, lr 1e-3.
        loss: ``loss(outputs, targets) -> scalar``; ``None``: cross-entropy on class indices.
        seed: seeds the shuffling and any randomness in the model (the global RNG state is restored).
        threads: PyTorch threads while training (restored afterwards); ``None`` leaves them.

    Examples:
        >>> Training(epochs=3).batch_size
        64
        >>> Training(epochs=0)
        Traceback (most recent call last):
        ...
        squeezelab.engine.core.errors.ConfigError: Training: epochs=0 must be a positive integer.
    """

    epochs: int = 1
    batch_size: int = 64
    optimizer: OptimizerFactory | None = None
    loss: Loss | None = None
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        # as_integer: Python or numpy integers, stored as int; bools and floats such as 4.0 refused.
        for name in ("epochs", "batch_size", "threads"):
            value = getattr(self, name)
            number = as_integer(value)
            if value is None and name == "threads":
                continue
            if number is None or number < 1:
                leave = ", or None to leave PyTorch's" if name == "threads" else ""
                raise ConfigError(f"Training: {name}={value!r} must be a positive integer{leave}.")
            object.__setattr__(self, name, number)
        seed = as_integer(self.seed)
        if seed is None:
            raise ConfigError(f"Training: seed={self.seed!r} must be an integer.")
        object.__setattr__(self, "seed", seed)
        for name in ("optimizer", "loss"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise ConfigError(f"Training: {name}={getattr(self, name)!r} must be a callable or None.")


_TRAINING_FIELDS = tuple(f.name for f in dataclasses.fields(Training))


def training_of(training: Training | None, overrides: Mapping[str, Any]) -> Training:
    """``training`` (default ``Training()``) with keyword overrides; an unknown keyword is a ``ConfigError``."""
    if training is not None and not isinstance(training, Training):
        raise ConfigError(f"training={training!r}; pass a Training(...) (or its fields as keywords).")
    unknown = sorted(set(overrides) - set(_TRAINING_FIELDS))
    if unknown:
        raise ConfigError(f"finetune got unknown keyword(s) {unknown}; Training's are {list(_TRAINING_FIELDS)}.")
    return dataclasses.replace(training or Training(), **overrides)


@dataclass(frozen=True, kw_only=True)
class GradualPruning:
    """Polynomial-decay sparsity schedule (cubic), as in TF Model Optimization's ``PolynomialDecay``."""

    final_sparsity: float
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int
    frequency: int = 100
    scope: str = "layer"

    def __post_init__(self) -> None:
        for name in ("final_sparsity", "initial_sparsity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"GradualPruning: {name}={value!r} must be in [0, 1).")
        if self.initial_sparsity > self.final_sparsity:
            raise ConfigError("GradualPruning: initial_sparsity must not exceed final_sparsity.")
        for name in ("begin_step", "end_step", "frequency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"GradualPruning: {name}={value!r} must be an integer number of steps.")
        if not 0 <= self.begin_step < self.end_step:
            raise ConfigError(
                f"GradualPruning: need 0 <= begin_step < end_step, got {self.begin_step} and {self.end_step}."
            )
        if self.frequency < 1:
            raise ConfigError(f"GradualPruning: frequency={self.frequency!r} must be at least 1.")
        MagnitudePruning(sparsity=self.final_sparsity, scope=self.scope)  # validates scope

    def sparsity_at(self, step: int) -> float:
        """Target sparsity after ``step`` optimizer steps."""
        if step < self.begin_step:
            return 0.0
        progress = min(1.0, (step - self.begin_step) / (self.end_step - self.begin_step))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** 3

    def prunes_at(self, step: int) -> bool:
        """Whether masks are updated at ``step`` (every ``frequency`` steps, and at ``end_step``)."""
        if not self.begin_step <= step <= self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step


_CRITERIA = ("kl", "mse", "cosine")


@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation: learn from a teacher's outputs.

    ``criterion="kl"`` (Hinton et al. 2015), for class scores:
    ``loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * task_loss``,
    the ``T^2`` keeping gradient magnitudes comparable across temperatures.
    ``"mse"`` and ``"cosine"`` (1 - cosine along the last axis, averaged) match outputs such as
    sentence embeddings; ``temperature`` does not apply to them. Without targets (an embedding
    model's unlabelled sentences) only the teacher term exists: use ``alpha=1.0``.

    >>> import torch
    >>> d = Distillation(teacher=torch.nn.Identity(), temperature=2.0, alpha=1.0)
    >>> logits = torch.tensor([[1.0, 2.0, 3.0]])
    >>> float(d.loss(logits, logits, torch.tensor([2]), torch.nn.functional.cross_entropy))
    0.0
    """

    teacher: nn.Module
    temperature: float = 4.0
    alpha: float = 0.9
    criterion: str = "kl"

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, nn.Module):
            raise ModelError(f"Distillation: teacher must be a torch.nn.Module, got {type(self.teacher).__name__}.")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ConfigError(f"Distillation: temperature={self.temperature!r} must be > 0.")
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise ConfigError(f"Distillation: alpha={self.alpha!r} must be in [0, 1].")
        if self.criterion not in _CRITERIA:
            raise ConfigError(
                f"Distillation: criterion={self.criterion!r}; use 'kl' (class scores), 'mse' or 'cosine' (embeddings)."
            )

    def match(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The teacher term alone."""
        if self.criterion == "mse":
            return nn.functional.mse_loss(student, teacher)
        if self.criterion == "cosine":
            return (1.0 - nn.functional.cosine_similarity(student, teacher, dim=-1)).mean()
        t = self.temperature
        return nn.functional.kl_div(
            nn.functional.log_softmax(student / t, dim=-1),
            nn.functional.log_softmax(teacher / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor | None, task_loss: Loss) -> torch.Tensor:
        soft = self.match(student, teacher)
        if self.alpha == 1.0:
            return soft
        return self.alpha * soft + (1.0 - self.alpha) * task_loss(student, targets)


def _is_train_pair(train_data: Any) -> bool:
    """``(inputs, targets)`` (a list of two counts too, as it always has here); inputs in any form."""
    return isinstance(train_data, (tuple, list)) and len(train_data) == 2 and _pair_form(tuple(train_data))


def _in_memory(train_data: Any, what: str = "train_data") -> Samples | None:
    """Data held in memory (a pair, a mapping, an array), read once to be shuffled; None for loaders."""
    if isinstance(train_data, Samples):
        return train_data
    if _is_train_pair(train_data):
        x, y = train_data
        n_x = len(Inputs.of(x, what)) if y is not None else None
        if y is not None and n_x != len(y):
            raise DataError(f"train_data has {n_x} inputs and {len(y)} targets; pass (x, y) of equal, non-zero length.")
        return read_samples(tuple(train_data), what)
    if isinstance(train_data, Mapping) or is_array(train_data):
        return read_samples(train_data, what)
    return None


def _shuffled_batches(train_data: Any, batch_size: int, gen: torch.Generator) -> Iterator[tuple[Inputs, torch.Tensor | None]]:
    """(inputs, targets) batches: in-memory data shuffled with ``gen``; loaders are used as given."""
    samples = _in_memory(train_data)
    if samples is not None:
        order = torch.randperm(len(samples), generator=gen).numpy()
        for i in range(0, len(samples), batch_size):
            idx = order[i : i + batch_size]
            targets = None if samples.targets is None else torch.from_numpy(np.ascontiguousarray(samples.targets[idx]))
            yield samples.inputs.take(idx), targets
        return
    if isinstance(train_data, torch.utils.data.Dataset) and hasattr(train_data, "__len__"):
        train_data = torch.utils.data.DataLoader(train_data, batch_size=batch_size, shuffle=True, generator=gen)
    if not isinstance(train_data, Iterable):
        raise DataError(f"cannot read train_data of type {type(train_data).__name__}; pass (inputs, targets), a Dataset or a DataLoader.")
    for item in train_data:
        inputs, targets = one_batch(item, "train_data")
        yield inputs, None if targets is None else torch.from_numpy(np.ascontiguousarray(targets))


def _forward(model: nn.Module, inputs: Inputs, output: OutputSelector) -> torch.Tensor:
    args, kwargs = inputs.torch()
    return select_output(model(*args, **kwargs), output)


def finetune(
    model: nn.Module,
    train_data: Any,
    training: Training | None = None,
    *,
    schedule: GradualPruning | None = None,
    distill: Distillation | None = None,
    filter_fn: FilterFn | None = None,
    progress: bool = False,
    on_step: Callable[[int, nn.Module], None] | None = None,
    output: OutputSelector = None,
    **overrides: Any,
) -> nn.Module:
    """A fine-tuned copy of ``model``; ``model`` itself is unchanged.

    Args:
        train_data: ``(inputs, targets)`` held in memory (shuffled each epoch with the training's
            ``seed``; inputs a tensor or array, a tuple of them or a dict of keyword inputs; targets
            ``None`` when distilling without labels), a mapping of inputs with ``"labels"``, a Dataset or
            a DataLoader yielding any of those forms.
        training: how to train (``Training``: epochs, batch size, optimizer, loss, seed, threads);
            ``None``: ``Training()``.
        **overrides: any ``Training`` field as a keyword (``finetune(m, d, epochs=3)`` is
            ``finetune(m, d, Training(epochs=3))``), applied on top of ``training``.
        schedule: ``GradualPruning`` to raise sparsity during training.
        distill: ``Distillation(teacher, temperature, alpha)`` to learn from a teacher model.
        filter_fn: layers the schedule prunes (default: Linear and Conv layers).
        progress: show a tqdm progress bar.
        on_step: ``on_step(step, model)`` after every optimizer step (for logging or tests).
        output: the output trained (and matched to the teacher's): None (the first tensor), a key,
            an index or a callable, as for ``compress``.

    Raises:
        DataError: with the default cross-entropy, labels that are not class indices in
            ``[0, outputs)`` (checked on the first forward pass, before any optimizer step, for
            all ``(x, y)`` labels; batch by batch for a DataLoader). Whole-number float labels
            are taken as class indices.
    """
    run = training_of(training, overrides)
    _check_arguments(model, distill, schedule, output)
    epochs, batch_size, optimizer, loss, seed, threads = run.epochs, run.batch_size, run.optimizer, run.loss, run.seed, run.threads
    work = copy_model(model)
    # The default cross-entropy takes class indices; the task loss is unused when distilling with alpha=1.
    class_targets = loss is None and not (distill is not None and distill.alpha == 1.0)
    in_memory = _in_memory(train_data)
    if in_memory is not None:
        _check_targets_present(in_memory.targets is not None, distill)
    with torch.random.fork_rng(devices=[]), torch_threads(threads):
        torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed would reseed CUDA too
        gen = torch.Generator().manual_seed(seed)
        trainer = _Trainer(
            model=work, optimizer=(optimizer or _default_optimizer)(work.parameters()),
            loss=loss or nn.functional.cross_entropy, output=output, distill=distill, schedule=schedule,
            filter_fn=filter_fn, on_step=on_step, class_targets=class_targets,
            all_labels=in_memory.targets if class_targets and in_memory is not None else None,
        )
        data = train_data if in_memory is None else in_memory
        trainer.train(lambda: _shuffled_batches(data, batch_size, gen), epochs, progress)
    if schedule is not None and trainer.step < schedule.end_step:
        _warn_schedule_unfinished(schedule, trainer.step)
    return work.eval()


def _warn_schedule_unfinished(schedule: GradualPruning, step: int) -> None:
    warnings.warn(
        f"training stopped at step {step}, before the schedule's end_step={schedule.end_step}: "
        f"sparsity is {schedule.sparsity_at(step):.3f}, not {schedule.final_sparsity}. "
        "Train longer or lower end_step.",
        stacklevel=3,  # the line that called finetune
    )


def _default_optimizer(parameters: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=1e-3)


def _check_arguments(model: Any, distill: Any, schedule: Any, output: OutputSelector) -> None:
    """``finetune``'s arguments, refused before the model is copied or any data read (``Training`` checks its own)."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}.")
    if distill is not None and not isinstance(distill, Distillation):
        raise ConfigError(f"distill={distill!r}; use Distillation(teacher=..., temperature=..., alpha=...).")
    if schedule is not None and not isinstance(schedule, GradualPruning):
        raise ConfigError(f"schedule={schedule!r}; use GradualPruning(final_sparsity=..., end_step=...).")
    check_selector(output)


@dataclass
class _Trainer:
    """One fine-tuning run: the working copy and its optimizer, what each step computes, and the step count."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: Loss
    output: OutputSelector
    distill: Distillation | None
    schedule: GradualPruning | None
    filter_fn: FilterFn | None
    on_step: Callable[[int, nn.Module], None] | None
    class_targets: bool  # the task loss takes class indices (checked against the outputs)
    all_labels: Any  # every label of in-memory data, checked before the first step; None otherwise
    step: int = 0

    def train(self, epoch_batches: Callable[[], Iterable[tuple[Inputs, torch.Tensor | None]]], epochs: int, progress: bool) -> None:
        """``epochs`` passes over ``epoch_batches()`` (called once per epoch: each pass reshuffles)."""
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs, desc="fine-tuning", unit="epoch")
        self._prune_if_due()
        self.model.train()
        for _ in range(epochs):
            for inputs, targets in epoch_batches():
                self._train_step(inputs, targets)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()

    def _train_step(self, inputs: Inputs, targets: torch.Tensor | None) -> None:
        if self.step == 0:
            _check_targets_present(targets is not None, self.distill)
        self.optimizer.zero_grad()
        if targets is not None and not targets.is_floating_point():
            targets = targets.long()
        out = _forward(self.model, inputs, self.output)
        if self.class_targets:
            if self.all_labels is not None and self.step == 0:  # every label, before the first step
                _check_class_targets(out, self.all_labels)
            targets = _check_class_targets(out, targets)
        self._objective(out, inputs, targets).backward()
        self.optimizer.step()
        self.step += 1
        self._prune_if_due()
        if self.on_step is not None:
            self.on_step(self.step, self.model)

    def _objective(self, out: torch.Tensor, inputs: Inputs, targets: torch.Tensor | None) -> torch.Tensor:
        """The task loss, or the distillation loss against the teacher's outputs on the same inputs."""
        if self.distill is None:
            return self.loss(out, targets)
        with torch.no_grad():
            teacher_out = _forward(self.distill.teacher, inputs, self.output)
        return self.distill.loss(out, teacher_out, targets, self.loss)

    def _prune_if_due(self) -> None:
        """Raise the masks to the schedule's sparsity at the steps it prunes (step 0 included)."""
        if self.schedule is not None and self.schedule.prunes_at(self.step):
            _prune_to(self.model, self.schedule, self.step, self.filter_fn)


def _check_targets_present(has_targets: bool, distill: Distillation | None) -> None:
    """Without targets only a teacher can say what to learn, and only its own term exists."""
    if has_targets:
        return
    if distill is None:
        raise DataError(
            "train_data has no targets; pass (inputs, targets), or learn a teacher's outputs without labels with "
            "distill=Distillation(teacher=..., criterion='cosine' (or 'mse', 'kl'), alpha=1.0)."
        )
    if distill.alpha != 1.0:
        raise ConfigError(
            f"Distillation(alpha={distill.alpha}) mixes in a task loss on targets, and train_data has none; "
            "pass alpha=1.0 to learn the teacher's outputs alone."
        )


def _check_class_targets(out: torch.Tensor, targets: Any) -> Any:
    """Class indices for cross-entropy, checked against the model's outputs ``out`` (N, classes, ...).

    PyTorch fails mid-run on a label >= classes and silently skips -100, so they are refused here,
    before the optimizer steps on them. Targets shaped like ``out`` are class probabilities and
    pass as they are; whole-number float labels become class indices.
    """
    if out.ndim < 2 or tuple(targets.shape) == tuple(out.shape):
        return targets
    labels = targets.numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    indices = as_class_indices(labels.reshape(-1), int(out.shape[1]), what="cross-entropy (finetune's default loss)")
    if isinstance(targets, torch.Tensor) and targets.is_floating_point():
        return torch.from_numpy(indices.reshape(labels.shape))
    return targets


def _prune_to(model: nn.Module, schedule: GradualPruning, step: int, filter_fn: FilterFn | None) -> None:
    target = schedule.sparsity_at(step)
    if target > 0:
        prune_(model, MagnitudePruning(sparsity=target, scope=schedule.scope), filter_fn=filter_fn)
